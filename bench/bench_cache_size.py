"""Size and throughput of the shared frozen-prefix cache -> bench/results/cache_size.json.

1. ``sizes``: for every registered backbone whose weights ship offline and every domain at the
   shipped defaults (params.yaml ``train.input_size``, ``train.trainable``, ``train.crops``), the
   real cache code (pipeline/train/cache.py) runs on two images in memory and in disk mode; the
   feature shape and bytes per image of every (crop, flip) entry are read off the cache it built
   (tensor storage, .npy file size). From them: the cache of the real release's scale (the `full`
   synthetic profile's counts: 136,117 labelled training/val images, 153,728 in all) at the
   shipped flips (training rows unflipped, val/test rows both flips). The paper's backbone
   (EVA-02-L, ViT-L/14 at 224 and 448 px) is a *computed* row: tokens x width from the timm
   architecture (built on the meta device, no weights), times 4 (float32) or 2 (bf16) bytes.
2. ``throughput``: building and reading the cache in memory vs disk mode (pedestrian, first
   backbone, shipped defaults) on ``--images`` images, each mode in a subprocess of its own:
   images/s to build, images/s read in training-like random batches, peak and final resident
   memory (anonymous vs file-backed pages; the disk mode's file pages are page cache the kernel
   can reclaim, its anonymous memory is the bounded part). The images are a rendered synthetic release's
   (``--release``, default: the train benchmark's default-profile release), their paths
   repeated up to ``--images`` when it has fewer.

    python bench/bench_cache_size.py [--parts sizes,throughput] [--images 8000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "cache_size.json"
DOMAINS = ("pedestrian", "vehicle", "router")
log = logging.getLogger("bench_cache_size")


def full_release_rows() -> dict[str, dict[str, int]]:
    """Rows of each domain's training process on the `full` profile (the real release's counts):
    its own training images plus every val and test image (pipeline.train.data.load_domain)."""
    from pipeline.synth.release import PROFILES

    full = PROFILES["full"]
    evaluated = sum(full["val"]) + sum(full["test"])
    return {"pedestrian": {"train": full["train"][0], "eval": evaluated},
            "vehicle": {"train": full["train"][1], "eval": evaluated},
            "router": {"train": sum(full["train"]), "eval": evaluated}}


def views(params, domain: str) -> tuple[list[str], int, int]:
    """The domain's crops at the given params, and the cached views per training / val-test row."""
    from pipeline.schema import GROUPS_BY_DOMAIN, ROUTER_GROUP
    from pipeline.train.data import crop_of

    tp = params.train
    groups = (ROUTER_GROUP,) if domain == "router" else GROUPS_BY_DOMAIN[domain]
    crops = sorted({crop_of(g.name, tp.crops) for g in groups}) if not tp.multitask else ["full"]
    return crops, len(crops) * (2 if tp.train_flip else 1), len(crops) * (2 if tp.tta_flip else 1)


def sample_images(folder: Path, n: int = 2) -> list[str]:
    """``n`` noise JPEGs (the feature shape depends on the input size, not the content)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (160, 90, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def measure_sizes(params) -> list[dict]:
    """Feature shape and bytes per image per (crop, flip) entry, read off caches built for real."""
    import numpy as np

    from pipeline import backbones
    from pipeline.train.cache import build_features
    from pipeline.train.data import crop_box
    from pipeline.train.stage import resolve_trainable

    tp = params.train
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = sample_images(Path(tmp) / "images")
        for name in backbones.list_backbones():
            spec = backbones.get_spec(name)
            if not spec.cpu:
                continue
            try:
                model = backbones.create_backbone(name)
            except Exception as e:  # weights not installed here
                log.warning("%s skipped: %s", name, e)
                continue
            cfg = backbones.data_config(name)
            for domain in DOMAINS:
                trainable = resolve_trainable(params, domain, name)
                prefix, _ = backbones.split_backbone(model, trainable)
                size = tuple(tp.input_size[domain])
                crops, per_train, per_eval = views(params, domain)
                boxes = {c: crop_box(c, tp.crop_boxes) for c in crops}
                entries = {}
                for mode in ("memory", "disk"):
                    src = build_features(mode, prefix, paths, boxes, size, cfg["mean"], cfg["std"],
                                         interpolation=cfg.get("interpolation", "bilinear"), workers=1,
                                         disk_dir=Path(tmp) / "disk", keep_aspect=domain in tp.keep_aspect)
                    for (crop, flip), data in src.store.items():
                        e = entries.setdefault(f"{crop}/{'flip' if flip else 'plain'}",
                                               {"shape": list(data.shape[1:]), "dtype": str(data.dtype)})
                        if mode == "memory":
                            e["bytes_per_image_memory"] = data.untyped_storage().nbytes() // len(data)
                        else:
                            f = Path(data.filename)
                            header = np.load(f, mmap_mode="r").offset
                            e["bytes_per_image_disk"] = (f.stat().st_size - header) // len(data)
                    src.close()
                per_view = max(e["bytes_per_image_memory"] for e in entries.values())
                rows.append({"backbone": name, "domain": domain, "input_size": list(size),
                             "trainable": trainable, "crops": crops, "entries": entries,
                             "views_per_train_row": per_train,
                             "views_per_eval_row": per_eval, "bytes_per_view": per_view})
                log.info("%s / %s: %s", name, domain, {k: (v["shape"], v["bytes_per_image_memory"])
                                                      for k, v in entries.items()})
    return rows


def project(rows: list[dict]) -> dict:
    """The measured bytes per view times the views of the real release's rows (full profile)."""
    counts = full_release_rows()
    out = {}
    for r in rows:
        c = counts[r["domain"]]
        n_views = c["train"] * r["views_per_train_row"] + c["eval"] * r["views_per_eval_row"]
        out.setdefault(r["backbone"], {})[r["domain"]] = {
            "rows": c, "views": n_views, "gib": round(n_views * r["bytes_per_view"] / 2**30, 2)}
    for b in out.values():
        b["total_gib"] = round(sum(v["gib"] for v in b.values()), 2)
    return out


def eva_rows(params) -> list[dict]:
    """Computed, not measured: ViT-L/14 tokens x width from the timm architecture (meta device),
    times float32 / bf16 bytes, per frozen block output, and for the release's views."""
    import timm
    import torch

    counts = full_release_rows()
    out = []
    for timm_name, px in (("eva02_large_patch14_clip_224", 224), ("eva02_large_patch14_448", 448)):
        with torch.device("meta"):
            m = timm.create_model(timm_name, pretrained=False)
        tokens = m.patch_embed.num_patches + m.num_prefix_tokens
        row = {"model": timm_name, "input_px": px, "tokens": int(tokens), "width": int(m.embed_dim),
               "blocks": len(m.blocks), "computed_not_measured": True, "by_domain": {}}
        for dtype, nbytes in (("float32", 4), ("bf16", 2)):
            row[f"bytes_per_view_{dtype}"] = int(tokens * m.embed_dim * nbytes)
        for domain in DOMAINS:
            _, per_train, per_eval = views(params, domain)
            n_views = counts[domain]["train"] * per_train + counts[domain]["eval"] * per_eval
            row["by_domain"][domain] = {"views": n_views, **{
                f"gib_{d}": round(n_views * row[f"bytes_per_view_{d}"] / 2**30, 1)
                for d in ("float32", "bf16")}}
        out.append(row)
    return out


def _rss() -> dict[str, int]:
    """Resident memory now (kB): anonymous and file-backed pages (Linux /proc)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(line.split()[1])
    return out


def throughput_child(mode: str, release: Path, n: int, out: Path) -> None:
    """One mode in this process: build the pedestrian cache on ``n`` images, then read it as
    training does (12 subtasks x random batches of 64 rows of their crop, one epoch)."""
    import numpy as np
    import torch

    from pipeline import backbones
    from pipeline.config import load_params
    from pipeline.train.cache import build_features
    from pipeline.train.data import crop_box
    from pipeline.train.stage import resolve_trainable

    params = load_params(ROOT / "params.yaml")
    tp = params.train
    name = tp.backbones[0]
    files = sorted(release.glob("*/*_images/*.jpg"))
    distinct = len(files)
    paths = [str(files[i % distinct]) for i in range(n)]
    crops, _, _ = views(params, "pedestrian")
    boxes = {c: crop_box(c, tp.crop_boxes) for c in crops}
    cfg = backbones.data_config(name)
    trainable = resolve_trainable(params, "pedestrian", name)
    prefix, _ = backbones.split_backbone(backbones.create_backbone(name), trainable)
    before = _rss()
    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / ".work") as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        src = build_features(mode, prefix, paths, boxes, tuple(tp.input_size["pedestrian"]), cfg["mean"],
                             cfg["std"], interpolation=cfg.get("interpolation", "bilinear"),
                             batch_size=tp.cache_batch_size, workers=tp.workers, disk_dir=tmp,
                             flip_rows=np.array([], dtype=int))
        build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
        after_build = _rss()
        nbytes = sum(np.prod(v.shape) * 4 for v in src.store.values())
        # Ask the kernel to drop the files' cached pages. Pages this process still maps stay resident
        # (RssFile shows them), so at a size that fits in RAM the disk read is a page-cache read.
        if mode == "disk":
            for v in src.store.values():
                v.flush()
                fd = os.open(v.filename, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
        g = torch.Generator().manual_seed(0)
        subtask_crops = [crops[k % len(crops)] for k in range(12)]
        t0 = time.perf_counter()
        read = 0
        for crop in subtask_crops:
            order = torch.randperm(n, generator=g)
            for s in range(0, n, 64):
                x = src.features(crop, False, order[s:s + 64])
                read += len(x)
        read_s = time.perf_counter() - t0
        after_read = _rss()
        src.close()
    out.write_text(json.dumps({
        "mode": mode, "backbone": name, "images": n, "distinct_images": distinct, "crops": crops,
        "cache_gib": round(nbytes / 2**30, 3), "build_s": round(build_s, 1),
        "build_cpu_s": round(build_cpu, 1),
        "build_img_s": round(n / build_s, 1), "read_rows": read, "read_s": round(read_s, 1),
        "read_rows_s": round(read / read_s), "rss_kb_before_build": before, "rss_kb_after_build": after_build,
        "rss_kb_after_read": after_read, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "load_avg_end": round(os.getloadavg()[0], 2)}))


def measure_throughput(release: Path, n: int) -> dict:
    out: dict = {}
    for mode in ("memory", "disk"):
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            subprocess.run([sys.executable, __file__, "--child", mode, "--release", str(release),
                            "--images", str(n), "--child-out", f.name], check=True)
            out[mode] = json.loads(Path(f.name).read_text())
        log.info("throughput %s: %s", mode, out[mode])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="sizes,throughput")
    ap.add_argument("--images", type=int, default=8000, help="images in the throughput part")
    ap.add_argument("--release", type=Path, default=ROOT / "bench" / ".work" / "train" / "release-default")
    ap.add_argument("--child", choices=("memory", "disk"), help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.child:
        throughput_child(args.child, args.release, args.images, args.child_out)
        return
    import torch

    from pipeline.config import load_params

    params = load_params(ROOT / "params.yaml")
    parts = set(args.parts.split(","))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    results["machine"] = {"cpus": os.cpu_count(), "torch": torch.__version__,
                          "python": platform.python_version(),
                          "mem_total_gib": round(mem / 2**30, 1),
                          "load_avg_at_start": round(os.getloadavg()[0], 2)}
    if "sizes" in parts:
        rows = measure_sizes(params)
        results["measured"] = rows
        results["release_rows"] = full_release_rows()
        results["projected_release_gib"] = project(rows)
        results["eva02_large_computed"] = eva_rows(params)
    if "throughput" in parts:
        t = measure_throughput(args.release, args.images)
        c = full_release_rows()["pedestrian"]
        _, per_train, per_eval = views(params, "pedestrian")
        full_views = c["train"] * per_train + c["eval"] * per_eval
        measured_views = args.images * len(t["memory"]["crops"])
        t["extrapolated_full_pedestrian"] = {
            "views": full_views,
            **{f"{m}_build_s": round(t[m]["build_s"] * full_views / measured_views)
               for m in ("memory", "disk")},
            "note": f"not measured: the build time scaled linearly from {measured_views} cached views "
                    f"({args.images} images, no flipped views) to the full release's {full_views}"}
        results["throughput"] = t
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    log.info("wrote %s", RESULTS)


if __name__ == "__main__":
    main()
