"""The shared frozen-prefix feature cache - why one process trains all of a domain's subtasks.

The frozen prefix of the backbone is a fixed function of the input, so it runs once per image,
crop and flip; every subtask of the domain then reads those features and runs only its own
unfrozen tail and head. ``mode`` picks where the features live: ``memory`` (tensors), ``disk``
(a memory-mapped ``.npy`` per view, for releases larger than RAM) or ``off`` - the naive
baseline that keeps decoded pixels and recomputes the prefix for every batch of every subtask,
for the cache-vs-recompute comparison. All three return the same features.
"""

from __future__ import annotations

import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence, get_args

import numpy as np

from pipeline.choices import CacheMode
from pipeline.train.data import load_views

log = logging.getLogger(__name__)

#: Where the frozen-prefix features live (docs/training.md).
CACHE_MODES: tuple[str, ...] = get_args(CacheMode)


def read_pixels(paths: Sequence[str], boxes: dict[str, tuple[float, float, float, float]],
                size: tuple[int, int], interpolation: str = "bilinear", workers: int = 2,
                desc: str = "decode", keep_aspect: bool = False):
    """Yield ``(start, {crop: uint8 (B, 3, H, W)})`` in order, decoding each image once."""
    from tqdm import tqdm

    chunk = 64
    with ThreadPoolExecutor(max(1, workers)) as pool, \
            tqdm(total=len(paths), desc=desc, unit="img", leave=False) as bar:
        for start in range(0, len(paths), chunk):
            views = list(pool.map(lambda p: load_views(p, boxes, size, interpolation, keep_aspect),
                                  paths[start:start + chunk]))
            bar.update(len(views))
            yield start, {c: np.stack([v[c] for v in views]) for c in boxes}


class FeatureSource:
    """Features of the frozen prefix for (crop, flip, image indices)."""

    def __init__(self, prefix, mean: Sequence[float], std: Sequence[float], device: str = "cpu",
                 amp: bool = False):
        import torch

        self.prefix = prefix.to(device, memory_format=torch.channels_last).eval()
        self.device = device
        self.amp = amp and device.startswith("cuda")
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255
        self.prefix_images = 0  # images pushed through the prefix, for the benchmark

    def run_prefix(self, pixels: np.ndarray, flip: bool):
        """uint8 ``(B, 3, H, W)`` -> prefix features (float32, on ``device``)."""
        import torch

        x = torch.from_numpy(pixels).to(self.device).float()
        x = (x - self.mean) / self.std
        if flip:
            x = x.flip(-1)
        # channels_last: depthwise convolutions run ~20 % faster on CPU in this layout.
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast("cuda", enabled=self.amp):
            out = self.prefix(x).float().contiguous()
        self.prefix_images += len(pixels)
        return out

    def features(self, crop: str, flip: bool, index):
        raise NotImplementedError

    def mixed(self, crop: str, index, flip_mask):
        """Features for ``index`` with per-row flips (``flip_mask`` bool tensor)."""
        import torch

        index = torch.as_tensor(index)
        flip_mask = torch.as_tensor(flip_mask, dtype=torch.bool)
        if flip_mask.all() or not flip_mask.any():
            return self.features(crop, bool(flip_mask.any()), index)
        a = self.features(crop, False, index[~flip_mask])
        b = self.features(crop, True, index[flip_mask])
        out = a.new_empty((len(index),) + a.shape[1:])
        out[~flip_mask.to(out.device)] = a
        out[flip_mask.to(out.device)] = b
        return out


class CachedFeatures(FeatureSource):
    """The prefix run once per image and (crop, flip); kept in memory or memory-mapped on disk."""

    def __init__(self, prefix, paths, boxes, size, mean, std, *, interpolation="bilinear",
                 device="cpu", amp=False, batch_size=64, workers=2, disk_dir: str | Path | None = None,
                 flip_rows: np.ndarray | None = None, keep_aspect: bool = False):
        from pipeline.train import distributed

        super().__init__(prefix, mean, std, device, amp)
        self.store: dict[tuple[str, bool], object] = {}
        self._tmp = None
        flipped = np.ones(len(paths), bool) if flip_rows is None else np.isin(np.arange(len(paths)), flip_rows)
        self.flipped = flipped
        # Under DDP each rank runs the prefix on its shard (rows rank::world), then the shards are
        # all-gathered: every rank ends with the whole cache, rows in their original order.
        sharded = distributed.is_distributed()
        mine = np.arange(distributed.rank(), len(paths), distributed.world_size()) if sharded \
            else np.arange(len(paths))
        for start, pixels in read_pixels([paths[i] for i in mine], boxes, size, interpolation, workers,
                                         "prefix cache", keep_aspect):
            for crop, px in pixels.items():
                rows_of = mine[start:start + len(px)]  # the chunk's rows in the full image list
                for flip in (False, True):
                    # Flipped views only where asked for (TTA rows, training rows with flip augmentation).
                    rows = np.flatnonzero(flipped[rows_of]) if flip else np.arange(len(px))
                    for s in range(0, len(rows), batch_size):
                        r = rows[s:s + batch_size]
                        f = self.run_prefix(px[r], flip).cpu()
                        key = (crop, flip)
                        if key not in self.store:
                            self.store[key] = self._allocate(len(paths), f.shape[1:], crop, flip, disk_dir)
                        self.store[key][rows_of[r]] = f.numpy() if disk_dir else f
        if sharded:
            self._gather(len(paths), disk_dir)
        self.shape = next(iter(self.store.values())).shape
        mb = sum(np.prod(v.shape) * 4 for v in self.store.values()) / 2**20
        log.info("prefix cache: %d images x %d views, features %s, %.0f MB (%s)", len(paths),
                 len(self.store), tuple(self.shape[1:]), mb, "disk" if disk_dir else "memory")

    def _gather(self, n: int, disk_dir) -> None:
        """Every rank's shard to every rank. A rank whose shard had no row of a view (no flipped
        row, say) allocates it from the others' shapes, so all ranks gather the same views."""
        from pipeline.train import distributed

        shapes: dict[tuple[str, bool], tuple[int, ...]] = {}
        for theirs in distributed.all_gather_objects({k: tuple(v.shape[1:]) for k, v in self.store.items()}):
            shapes.update(theirs)
        for key in sorted(shapes):
            if key not in self.store:
                self.store[key] = self._allocate(n, shapes[key], *key, disk_dir)
            distributed.gather_shards(self.store[key], n, self.device)

    def _allocate(self, n, shape, crop, flip, disk_dir):
        import torch

        if disk_dir is None:
            return torch.zeros((n, *shape), dtype=torch.float32)
        if self._tmp is None:
            Path(disk_dir).mkdir(parents=True, exist_ok=True)
            self._tmp = tempfile.TemporaryDirectory(dir=disk_dir, prefix="prefix-cache-")
        path = Path(self._tmp.name) / f"{crop}-{int(flip)}.npy"
        return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, *shape))

    def features(self, crop, flip, index):
        import torch

        index = torch.as_tensor(index)
        if flip and not self.flipped[index.numpy()].all():
            raise ValueError("flipped features requested for rows cached without them "
                             "(train_flip / tta_flip decide which rows get flipped views)")
        data = self.store[(crop, flip)]
        if isinstance(data, np.ndarray):
            # Sorted fancy indexing reads the memory map sequentially; then restore the order.
            order = torch.argsort(index)
            rows = torch.from_numpy(np.ascontiguousarray(data[index[order].numpy()]))
            out = torch.empty_like(rows)
            out[order] = rows
        else:
            out = data[index]
        return out.to(self.device, non_blocking=True)

    def close(self) -> None:
        self.store.clear()
        if self._tmp is not None:
            self._tmp.cleanup()


class RecomputedFeatures(FeatureSource):
    """Naive baseline (``cache: off``): decoded pixels kept, prefix recomputed on every call."""

    def __init__(self, prefix, paths, boxes, size, mean, std, *, interpolation="bilinear",
                 device="cpu", amp=False, batch_size=64, workers=2, disk_dir=None, flip_rows=None,
                 keep_aspect=False):
        super().__init__(prefix, mean, std, device, amp)
        self.pixels = {c: np.empty((len(paths), 3, *size), dtype=np.uint8) for c in boxes}
        for start, px in read_pixels(paths, boxes, size, interpolation, workers, "decode", keep_aspect):
            for c, v in px.items():
                self.pixels[c][start:start + len(v)] = v
        self.batch_size = batch_size

    def features(self, crop, flip, index):
        import torch

        idx = np.asarray(index)
        parts = [self.run_prefix(self.pixels[crop][idx[s:s + self.batch_size]], flip)
                 for s in range(0, len(idx), self.batch_size)]
        return torch.cat(parts) if parts else self.run_prefix(self.pixels[crop][:0], flip)

    def close(self) -> None:
        self.pixels.clear()


def build_features(mode: str, prefix, paths, boxes, size, mean, std, **kw) -> FeatureSource:
    """A :class:`FeatureSource` for ``mode`` (one of :data:`CACHE_MODES`)."""
    if mode not in CACHE_MODES:
        raise ValueError(f"unknown cache mode {mode!r}; expected one of {list(CACHE_MODES)}")
    if mode == "off":
        kw.pop("disk_dir", None)
        return RecomputedFeatures(prefix, paths, boxes, size, mean, std, **kw)
    if mode == "memory":
        kw["disk_dir"] = None
    elif kw.get("disk_dir") is None:
        kw["disk_dir"] = tempfile.gettempdir()
    return CachedFeatures(prefix, paths, boxes, size, mean, std, **kw)
