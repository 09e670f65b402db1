"""The ``predict`` command: index any image folder with the trained members, in shards.

A gallery is a folder of images (``.jpg``, ``.jpeg``, ``.png``; an image's name is its file name,
as in a release). Every member of the ensemble (backbone x pedestrian / vehicle / router) gives
every image its group probabilities, exactly as the train stage predicts val and test: the same
decoding (:func:`pipeline.train.data.load_views`), the same frozen prefix
(:class:`pipeline.train.cache.FeatureSource`) and the same flip TTA (:func:`pipeline.train.loop.predict`).

**Shards.** The files, sorted by name, are cut into batches of ``train.cache_batch_size`` images;
shard ``i`` of ``n`` takes a contiguous run of whole batches. Every batch is then computed the same
way whichever process computes it (same images, same batch), so the shards' outputs concatenated in
shard order equal a single process's output exactly - not merely within float tolerance. A shard
writes ``<out>/shards/shard-<i>-of-<n>/``: ``<domain>/<backbone>/gallery.parquet`` (the train
stage's predictions format, :func:`pipeline.train.outputs.write_predictions`) and ``shard.json``
(its range, the unreadable images with the reason, timing). Shards are independent processes
(``--shard i/n``, torchrun ranks, any job scheduler); :func:`merge` checks that every shard of the
same file list and models is there and builds the gallery index with the retrieve stage's own
:func:`pipeline.retrieve.build_index` (ensemble weights, router) into ``<out>/gallery.npz``: the
format the served model ranks (:class:`pipeline.rank.GalleryIndex`).

**Models.** ``models:/<name>@<alias>`` (or ``/<version>``) is the registered ensemble: its version
tags name the members and their weights, and its register run's ``data_hash`` leads to the train
stage runs that trained on the same tables (the latest finished before the register run); their
subtask child runs hold the logged subtask models (prefix + tail + head, crop box in the model's
metadata) and the train params (input size, letterbox, flip TTA). A local folder is the train
stage's ``<models>/<domain>/<backbone>/<subtask>.pt`` with the members of ``retrieve.members`` and
the crops, letterbox and TTA of ``params.yaml``; the frozen prefix is rebuilt from the backbone's
pretrained weights, as training built it.

Unreadable images (a broken file with an image suffix) are skipped and counted in the report, with
their names; files without an image suffix are counted as ignored.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline import schema
from pipeline.config import Params
from pipeline.formats import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

#: The split name of a predicted gallery in the predictions format (``<domain>/<backbone>/gallery.parquet``).
SPLIT = "gallery"
SHARDS = "shards"
SHARD_META = "shard.json"


class PredictError(ValueError):
    """Bad input of ``predict``: a folder, a shard spec, a models source."""


# --------------------------------------------------------------------------- files and shards

@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}-of-{self.count:05d}"


def parse_shard(text: str) -> Shard:
    """``"i/n"`` (0-based ``i``) -> :class:`Shard`; anything else is a :class:`PredictError`."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise PredictError(f"--shard must be i/n with whole numbers (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise PredictError(f"shard {text}: n must be >= 1 and i in 0..n-1 (0-based), got i={i}, n={n}")
    return Shard(i, n)


def shard_from_env() -> Shard | None:
    """The torchrun rank as a shard (``RANK`` / ``WORLD_SIZE``), or None outside a multi-process launch."""
    from pipeline.train import distributed

    if distributed.world_size() <= 1:
        return None
    return parse_shard(f"{distributed.rank()}/{distributed.world_size()}")


def list_images(folder: Path) -> tuple[list[Path], int]:
    """The folder's image files sorted by name, and how many other files it holds."""
    folder = Path(folder)
    if not folder.exists():
        raise PredictError(f"image folder {folder} not found")
    if not folder.is_dir():
        raise PredictError(f"--images {folder} is a file, not a folder of images")
    files = sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.name)
    images = [p for p in files if p.name.lower().endswith(IMAGE_SUFFIXES)]
    if not images:
        raise PredictError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}"
                           + (f" ({len(files)} other files)" if files else " (empty folder)"))
    return images, len(files) - len(images)


def shard_range(n_files: int, batch: int, shard: Shard) -> tuple[int, int]:
    """``[start, stop)`` of shard's files: a contiguous run of whole batches (the last may be short)."""
    n_batches = -(-n_files // batch)
    lo = shard.index * n_batches // shard.count
    hi = (shard.index + 1) * n_batches // shard.count
    return min(n_files, lo * batch), min(n_files, hi * batch)


def files_digest(names: Sequence[str]) -> str:
    """A short hash of the whole sorted file list: the shards of one gallery share it."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- models

@dataclass
class Subtask:
    name: str
    groups: tuple[schema.Group, ...]
    crop: str
    net: Any  # pipeline.train.model.SubtaskNet


@dataclass
class DomainModel:
    """One member's model of one domain: frozen prefix, how to decode, and its subtask nets."""

    domain: str
    backbone: str
    prefix: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: tuple[int, int]
    interpolation: str
    keep_aspect: bool
    boxes: dict[str, tuple[float, float, float, float]]
    tta: bool
    subtasks: list[Subtask]

    def view_key(self) -> tuple:
        """Models with the same key decode an image to the same pixels (decoded once for all)."""
        return (tuple(self.size), self.interpolation, self.keep_aspect, tuple(sorted(self.boxes.items())))


@dataclass
class ModelSet:
    source: str                 # the models URI or folder, as given
    resolved: str               # what it resolved to (registered version, or the folder)
    members: dict[str, float]   # backbone -> ensemble weight
    models: list[DomainModel] = field(default_factory=list)


def _check_cover(domain: str, subtasks: list[Subtask], where: str) -> list[Subtask]:
    """Every group of ``domain`` predicted once; subtasks in schema order."""
    from pipeline.train.data import domain_groups

    want = [g.name for g in domain_groups(domain)]
    have = [g.name for s in subtasks for g in s.groups]
    if sorted(have) != sorted(want):
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        raise PredictError(f"{where}: the subtask models do not cover the {domain} groups "
                           f"(missing {missing}, unexpected {extra})")
    return sorted(subtasks, key=lambda s: want.index(s.groups[0].name))


def _groups(domain: str, names: Sequence[str], classes: dict[str, list[str]] | None, where: str
            ) -> tuple[schema.Group, ...]:
    out = []
    for n in names:
        g = schema.group(n)  # the router's "domain" group too
        if classes is not None and list(classes.get(n, [])) != list(g.values):
            raise PredictError(f"{where}: group {n!r} was trained on other classes than the schema's")
        out.append(g)
    return tuple(out)


def load_models_dir(root: Path, params: Params) -> ModelSet:
    """The train stage's ``<root>/<domain>/<backbone>/<subtask>.pt`` for every member of ``retrieve.members``."""
    import torch

    from pipeline import backbones
    from pipeline.train.data import crop_box
    from pipeline.train.model import SubtaskNet, make_head

    root = Path(root)
    if not root.is_dir():
        raise PredictError(f"models folder {root} not found (train first, or pass --model "
                           "models:/<name>@production)")
    tp = params.train
    members = dict(params.retrieve.members)
    out = ModelSet(str(root), str(root.resolve()), members)
    for backbone in members:
        for domain in schema.TRAINING_DOMAINS:
            folder = root / domain / backbone
            files = sorted(folder.glob("*.pt")) if folder.is_dir() else []
            if not files:
                raise PredictError(f"no subtask models in {folder} (member {backbone} of retrieve.members)")
            saved = [torch.load(f, map_location="cpu", weights_only=False) for f in files]
            trainable = {str(s["trainable"]) for s in saved}
            if len(trainable) != 1:
                raise PredictError(f"{folder}: subtask models of different backbone splits {sorted(trainable)}")
            model = backbones.create_backbone(backbone, pretrained=tp.pretrained, weights_path=tp.weights.get(backbone))
            prefix, tail = backbones.split_backbone(model, saved[0]["trainable"])
            subtasks = []
            for f, s in zip(files, saved):
                groups = _groups(domain, s["groups"], s["classes"], str(f))
                net = SubtaskNet(copy.deepcopy(tail), {g.name: make_head(model.num_features, g.n_classes, 0.0)
                                                       for g in groups})
                net.load_state_dict(s["state_dict"])
                subtasks.append(Subtask(f.stem, groups, s["crop"], net.eval()))
            first = saved[0]
            out.models.append(DomainModel(
                domain, backbone, prefix.eval(), tuple(first["mean"]), tuple(first["std"]),
                tuple(first["input_size"]), backbones.data_config(backbone).get("interpolation", "bilinear"),
                domain in tp.keep_aspect, {s.crop: crop_box(s.crop, tp.crop_boxes) for s in subtasks},
                tp.tta_flip, _check_cover(domain, subtasks, str(folder))))
    return out


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` -> (name, alias, None); ``models:/name/3`` -> (name, None, "3")."""
    rest = uri[len("models:/"):].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        if name and alias:
            return name, alias, None
    elif "/" in rest:
        name, version = rest.rsplit("/", 1)
        if name and version.isdigit():
            return name, None, version
    raise PredictError(f"--model {uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")


def _param(params: dict[str, str], key: str, where: str) -> Any:
    try:
        return ast.literal_eval(params[key])
    except KeyError:
        raise PredictError(f"{where} has no param {key!r} (logged by an older train stage?)") from None
    except (ValueError, SyntaxError):
        return params[key]


def load_registered(uri: str) -> ModelSet:
    """The members of a registered ensemble version, traced to the subtask models its train runs logged."""
    import mlflow.pytorch
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    from pipeline import backbones
    from pipeline.train.model import SubtaskNet

    name, alias, number = parse_models_uri(uri)
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    except MlflowException as e:
        raise PredictError(f"cannot resolve {uri}: {str(e).splitlines()[0][:200]}") from None
    label = f"{name} version {version.version}"
    # The ensemble weights: the version's `ranker` tag ({"distance", "members"}; `members` alone
    # on versions registered before it).
    ranker = json.loads(version.tags.get("ranker", "{}"))
    members = ranker.get("members") or json.loads(version.tags.get("members", "{}"))
    if not members:
        raise PredictError(f"{label} names no ensemble members (no 'ranker' or 'members' tag: not "
                           "registered by the register stage)")
    members = {k: float(v) for k, v in members.items()}
    reg = client.get_run(version.run_id)
    h = reg.data.tags.get("data_hash") or json.loads(version.tags.get("lineage", "{}")).get("data_hash")
    exp = reg.info.experiment_id
    if not h:
        raise PredictError(f"{label}: its register run {reg.info.run_id} has no data_hash tag")
    out = ModelSet(uri, label, members)
    for backbone in members:
        for domain in schema.TRAINING_DOMAINS:
            stage = f"train-{domain}-{backbone}"
            runs = [r for r in client.search_runs(
                [exp], f"tags.stage = '{stage}' and tags.data_hash = '{h}' and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"]) if r.info.start_time <= reg.info.start_time]
            if not runs:
                raise PredictError(f"{label}: no finished {stage} run on its data (data_hash {h}) in "
                                   f"experiment {exp}")
            train = runs[0]
            where = f"train run {train.info.run_id} ({stage})"
            size = tuple(_param(train.data.params, f"input_size.{domain}", where))
            keep_aspect = domain in _param(train.data.params, "keep_aspect", where)
            tta = bool(_param(train.data.params, "tta_flip", where))
            children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{train.info.run_id}'")
            by_subtask: dict[str, dict[str, Any]] = {}
            prefix, boxes = None, {}
            for child in children:
                for v in client.search_model_versions(f"run_id = '{child.info.run_id}'"):
                    sub = child.data.tags["subtask"]
                    group = v.name[len(f"track2-{domain}-"):-len(f"-{backbone}")]
                    group = group[len(sub) + 1:] if group != sub else sub
                    with tempfile.TemporaryDirectory() as tmp:
                        local = mlflow.artifacts.download_artifacts(f"models:/{v.name}/{v.version}", dst_path=tmp)
                        meta = Model.load(str(Path(local) / "MLmodel")).metadata or {}
                        serving = mlflow.pytorch.load_model(local, map_location="cpu")
                    g = _groups(domain, [group], {group: meta.get("classes", [])}, f"{v.name} v{v.version}")[0]
                    prefix = prefix or serving.prefix
                    boxes[meta["crop"]] = tuple(meta["crop_box"])
                    entry = by_subtask.setdefault(sub, {"tail": serving.tail, "heads": {}, "crop": meta["crop"]})
                    entry["heads"][g.name] = serving.head
            if not by_subtask:
                raise PredictError(f"{where}: no registered subtask models (train.log_models off?)")
            subtasks = [Subtask(s, _groups(domain, list(e["heads"]), None, where), e["crop"],
                                SubtaskNet(e["tail"], e["heads"]).eval()) for s, e in by_subtask.items()]
            cfg = backbones.data_config(backbone)
            out.models.append(DomainModel(domain, backbone, prefix.eval(), tuple(cfg["mean"]), tuple(cfg["std"]),
                                          size, cfg.get("interpolation", "bilinear"), keep_aspect, boxes, tta,
                                          _check_cover(domain, subtasks, where)))
    log.info("%s -> %s: members %s", uri, label, members)
    return out


def load_models(model: str, params: Params) -> ModelSet:
    """A ``models:/`` URI through MLflow, anything else as a local models folder."""
    if model.startswith("models:/"):
        from pipeline import tracking

        tracking.connect()
        return load_registered(model)
    return load_models_dir(Path(model), params)


# --------------------------------------------------------------------------- prediction

def _decode(path: Path, specs: dict[tuple, DomainModel]) -> dict[tuple, dict[str, np.ndarray]] | str:
    """Every distinct view of one image, or the reason it cannot be read."""
    from pipeline.train.data import load_views

    try:
        return {key: load_views(path, m.boxes, m.size, m.interpolation, m.keep_aspect) for key, m in specs.items()}
    except ValueError as e:
        return str(e)


def _batch_source(m: DomainModel, pixels: dict[str, np.ndarray], device: str, amp: bool):
    """The frozen prefix's features of one batch, as the train stage's cache holds them."""
    from pipeline.train.cache import FeatureSource

    class BatchFeatures(FeatureSource):
        def __init__(self) -> None:
            super().__init__(m.prefix, m.mean, m.std, device, amp)
            self.store = {(c, f): self.run_prefix(px, f) for c, px in pixels.items()
                          for f in ((False, True) if m.tta else (False,))}

        def features(self, crop, flip, index):
            return self.store[(crop, flip)][index.to(self.device)]

    return BatchFeatures()


def predict_files(models: ModelSet, paths: Sequence[Path], batch_size: int, device: str, amp: bool,
                  workers: int) -> tuple[list[str], list[dict[str, str]], dict[tuple[str, str], dict[str, np.ndarray]]]:
    """Predict ``paths`` in batches of ``batch_size``: the names predicted, the unreadable images
    (name, reason) and ``{(domain, backbone): {group: (n, classes) float32}}``."""
    from tqdm import tqdm

    from pipeline.train.loop import predict

    specs = {m.view_key(): m for m in models.models}
    names: list[str] = []
    bad: list[dict[str, str]] = []
    out: dict[tuple[str, str], dict[str, list[np.ndarray]]] = {
        (m.domain, m.backbone): {g.name: [] for s in m.subtasks for g in s.groups} for m in models.models}
    for m in models.models:
        m.prefix.to(device)
        for s in m.subtasks:
            s.net.to(device).eval()
    with ThreadPoolExecutor(max(1, workers)) as pool, \
            tqdm(total=len(paths), desc="predict", unit="img", leave=False) as bar:
        for start in range(0, len(paths), batch_size):
            batch = paths[start:start + batch_size]
            views = list(pool.map(lambda p: _decode(p, specs), batch))
            ok = [i for i, v in enumerate(views) if not isinstance(v, str)]
            bad += [{"name": batch[i].name, "reason": v} for i, v in enumerate(views) if isinstance(v, str)]
            bar.update(len(batch))
            if not ok:
                continue
            names += [batch[i].name for i in ok]
            index = np.arange(len(ok))
            for m in models.models:
                key = m.view_key()
                pixels = {c: np.stack([views[i][key][c] for i in ok]) for c in m.boxes}
                source = _batch_source(m, pixels, device, amp)
                for s in m.subtasks:
                    probs = predict(s.net, source, s.crop, index, batch_size=len(ok), tta=m.tta)
                    for g, p in probs.items():
                        out[(m.domain, m.backbone)][g].append(p)
    return names, bad, {k: {g: np.concatenate(v) if v else np.zeros((0, schema.group(g).n_classes), np.float32)
                            for g, v in by.items()} for k, by in out.items()}


def _write_tables(folder: Path, names: Sequence[str], preds: dict[tuple[str, str], dict[str, np.ndarray]]) -> None:
    """``<folder>/<domain>/<backbone>/gallery.parquet`` in the train stage's predictions format."""
    from pipeline.train.data import DomainData, domain_groups
    from pipeline.train.outputs import write_predictions

    n = len(names)
    for (domain, backbone), by_group in preds.items():
        groups = domain_groups(domain)
        data = DomainData(domain, groups, np.asarray(names, dtype=object), np.asarray(names, dtype=object),
                          np.full(n, SPLIT, dtype=object), np.zeros((n, len(groups)), np.int64))
        write_predictions(folder / domain / backbone, data, {SPLIT: by_group})


@dataclass(frozen=True)
class PredictIO:
    images: Path   # in: the image folder
    model: str     # in: models:/<name>@<alias> or a local models folder
    out: Path      # out: shards/, predictions/, gallery.npz, report.json


def predict_shard(params: Params, io: PredictIO, shard: Shard, models: ModelSet | None = None) -> dict[str, Any]:
    """Predict shard ``shard`` of the folder into ``<out>/shards/<shard.name>/``; return its record."""
    from pipeline.train.stage import setup_torch

    paths, ignored = list_images(io.images)
    tp = params.train
    start, stop = shard_range(len(paths), tp.cache_batch_size, shard)
    device = setup_torch(params)
    if device == "cuda" and shard_from_env() is not None:  # torchrun on a machine with several GPUs
        import torch

        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % max(1, torch.cuda.device_count())}"
    models = models or load_models(io.model, params)
    t0 = time.perf_counter()
    names, bad, preds = predict_files(models, paths[start:stop], tp.cache_batch_size, device, tp.amp, tp.workers)
    seconds = time.perf_counter() - t0
    record = {"shard": shard.index, "of": shard.count, "images_dir": str(Path(io.images).resolve()),
              "files": len(paths), "files_digest": files_digest([p.name for p in paths]),
              "ignored_files": ignored, "range": [start, stop], "predicted": len(names),
              "unreadable": bad, "models": models.source, "resolved": models.resolved,
              "members": models.members, "batch_size": tp.cache_batch_size, "device": device,
              "seconds": round(seconds, 3), "images_per_s": round((stop - start) / seconds, 2) if seconds else None}
    shards = Path(io.out) / SHARDS
    shards.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=shards, prefix=f".{shard.name}-"))
    try:  # written whole, then renamed: merge never sees half a shard
        _write_tables(tmp, names, preds)
        (tmp / SHARD_META).write_text(json.dumps(record, indent=2))
        final = shards / shard.name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for b in bad:
        log.warning("unreadable image skipped: %s (%s)", b["name"], b["reason"])
    log.info("%s: images %d-%d of %d, %d predicted, %d unreadable, %.1f img/s", shard.name, start, stop,
             len(paths), len(names), len(bad), record["images_per_s"] or 0.0)
    return record


def merge(out: Path) -> dict[str, Any]:
    """Check the shards under ``<out>/shards`` and build ``<out>/gallery.npz``; return the report."""
    import pandas as pd

    from pipeline.retrieve import build_index
    from pipeline.stage import write_atomic

    out = Path(out)
    metas = [json.loads(p.read_text()) for p in sorted((out / SHARDS).glob(f"shard-*/{SHARD_META}"))]
    if not metas:
        raise PredictError(f"no shards in {out / SHARDS} (run predict first)")
    keys = {(m["of"], m["files_digest"], m["resolved"], json.dumps(m["members"], sort_keys=True), m["batch_size"])
            for m in metas}
    if len(keys) > 1:
        raise PredictError(f"{out / SHARDS} holds shards of different runs (shard counts, file lists or "
                           f"models differ): clear it and predict again")
    count = metas[0]["of"]
    found = sorted(m["shard"] for m in metas)
    missing = sorted(set(range(count)) - set(found))
    if missing:
        raise PredictError(f"shards {missing} of {count} are missing in {out / SHARDS}")
    members = metas[0]["members"]
    pred_dir = out / "predictions"
    shutil.rmtree(pred_dir, ignore_errors=True)
    for d in schema.TRAINING_DOMAINS:
        for backbone in members:
            parts = [pd.read_parquet(out / SHARDS / Shard(m["shard"], count).name / d / backbone / f"{SPLIT}.parquet")
                     for m in metas]
            (pred_dir / d / backbone).mkdir(parents=True, exist_ok=True)
            pd.concat(parts, ignore_index=True).to_parquet(pred_dir / d / backbone / f"{SPLIT}.parquet", index=False)
    predicted = sum(m["predicted"] for m in metas)
    unreadable = [b for m in metas for b in m["unreadable"]]
    if not predicted:
        raise PredictError(f"none of the {metas[0]['files']} images could be read "
                           f"(e.g. {unreadable[0]['name']}: {unreadable[0]['reason']})")
    index = build_index(pred_dir, members, SPLIT)
    index.save(out / "gallery.npz")
    seconds = sum(m["seconds"] for m in metas)
    report = {"gallery": str(out / "gallery.npz"), "images_dir": metas[0]["images_dir"], "files": metas[0]["files"],
              "ignored_files": metas[0]["ignored_files"], "indexed": predicted, "unreadable": len(unreadable),
              "unreadable_images": unreadable, "routed": {d: int((index.domain == d).sum()) for d in schema.DOMAINS},
              "shards": count, "models": metas[0]["models"], "resolved": metas[0]["resolved"], "members": members,
              "device": sorted({m["device"] for m in metas}), "shard_seconds": seconds,
              "images_per_s": round(metas[0]["files"] / seconds, 2) if seconds else None}
    write_atomic(out / "report.json", json.dumps(report, indent=2))
    log.info("gallery of %d images (%d unreadable skipped) from %d shards -> %s", predicted, len(unreadable),
             count, out / "gallery.npz")
    return report


def _barrier() -> bool:
    """Under torchrun (MASTER_ADDR set): wait for every rank over gloo - for hours if need be,
    shards end at different times; False when there is no group."""
    from pipeline.train import distributed

    if not os.environ.get("MASTER_ADDR"):
        return False
    with distributed.process_group("cpu", timeout_s=6 * 3600):
        distributed.barrier()
    return True


def run(params: Params, io: PredictIO, shard: Shard | None = None) -> dict[str, Any]:
    """The command: one shard (``shard``, or the torchrun rank), or the whole folder and the merge.

    Under torchrun every rank writes its shard and rank 0 merges once all are written; with an
    explicit ``shard`` nothing is merged (``predict-merge`` does it when every shard is done).
    Returns the merge report, or the shard's record when this process did not merge.
    """
    list_images(io.images)  # bad folders are refused before any model loads
    ranked = shard is None and shard_from_env() is not None
    if shard is None:
        shard = shard_from_env() or Shard(0, 1)
        if shard.count == 1:  # a whole run replaces whatever an earlier run left
            shutil.rmtree(Path(io.out) / SHARDS, ignore_errors=True)
    record = predict_shard(params, io, shard)
    if shard.count == 1:
        return merge(io.out)
    if ranked and _barrier() and shard.index == 0:
        return merge(io.out)
    return {**record, "merged": False, "ranked": ranked}
