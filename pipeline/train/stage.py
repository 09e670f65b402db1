"""The ``train`` stage for one (domain, backbone): every subtask in one process.

Outputs (:class:`TrainIO`, docs/architecture.md):
- ``models/<subtask>.pt``: tail + head weights and how to rebuild them;
- ``predictions/{val,test}.parquet``: ``name`` + ``group=value`` probabilities (flip TTA) for every
  image of the split;
- ``report``: per-subtask val accuracy and mA next to the majority-class baseline, epochs, times,
  pseudo-labels added.

Checkpoints live outside the DVC outputs (``checkpoints``, keyed by a fingerprint of params and
data) because DVC deletes a stage's outputs before rerunning it: a rerun after a crash finds them
and resumes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import schema, tracking
from pipeline.config import Params
from pipeline.train import distributed
from pipeline.train.data import MISSING, DomainData, class_weights, crop_box, crop_of, load_domain

log = logging.getLogger(__name__)


@dataclass
class SubtaskResult:
    """One trained subtask: its net, crop, training history and validation metrics."""

    name: str
    groups: tuple[schema.Group, ...]
    crop: str
    net: Any
    history: list[dict[str, float]]
    n_train: int
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_trainable(params: Params, domain: str, backbone: str) -> int | str:
    """``trainable_by_backbone[backbone][domain]`` if set, else ``trainable[domain]``."""
    tp = params.train
    value = tp.trainable_by_backbone.get(backbone, {}).get(domain, tp.trainable.get(domain))
    if value is None:
        raise ValueError(f"train.trainable has no entry for domain {domain!r}")
    if isinstance(value, str) and value not in ("full", "linear"):
        raise ValueError(f"trainable for {backbone}/{domain} must be an int, 'full' or 'linear', got {value!r}")
    return value


def pick_device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def fingerprint(params: Params, io: TrainIO) -> str:
    """Checkpoints are reused only for the same params, seed, domain, backbone and data."""
    blob = json.dumps({"train": params.section("train"), "seed": params.base.seed,
                       "domain": io.domain, "backbone": io.backbone,
                       "data": tracking.data_hash(io.prepared)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def majority_baseline(train_labels: np.ndarray, val_labels: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy and mA of always answering the most frequent training class."""
    from pipeline.metrics import group_accuracy

    y = train_labels[train_labels != MISSING]
    top = int(np.bincount(y, minlength=n_classes).argmax()) if len(y) else 0
    probs = np.zeros((len(val_labels), n_classes), dtype=np.float32)
    probs[:, top] = 1
    return group_accuracy(probs, val_labels, n_classes)


def flip_rows(params: Params, data: DomainData) -> np.ndarray:
    """Rows that need flipped views: training rows with flip augmentation, val/test with flip TTA."""
    tp = params.train
    return np.flatnonzero(((data.split == "train") & tp.train_flip) | ((data.split != "train") & tp.tta_flip))


def _subtasks(params: Params, data: DomainData) -> list[tuple[str, tuple[schema.Group, ...], str]]:
    """``(name, groups, crop)``: one per group, or one multi-task net on the full image."""
    if params.train.multitask:
        return [("multitask", data.groups, "full")]
    return [(g.name, (g,), crop_of(g.name, params.train.crops)) for g in data.groups]


def prepare_subtask(params: Params, data: DomainData, source, tail, num_features: int, name: str,
                    groups: tuple[schema.Group, ...], crop: str, labels: np.ndarray):
    """What training one subtask needs: a :class:`pipeline.train.batched.Member` (its net, own
    copy of ``tail`` + heads seeded by its name, rows, targets, weights, schedule, val evaluation)
    and its labelled val rows ``(val_idx, val_y)``."""
    import torch

    from pipeline.metrics import group_accuracy
    from pipeline.train.batched import Member
    from pipeline.train.loop import FitConfig, predict
    from pipeline.train.model import SubtaskNet, make_head

    tp = params.train
    cols = [[g.name for g in data.groups].index(g.name) for g in groups]
    train_idx = data.index("train")
    y = labels[train_idx][:, cols]
    keep = (y != MISSING).any(axis=1)
    index, y = train_idx[keep], y[keep]
    if not len(index):
        raise ValueError(f"subtask {name!r} of {data.domain} has no labelled training image")
    seed = params.base.seed + params.train.seed + zlib.crc32(name.encode()) % 100_000
    torch.manual_seed(seed)
    net = SubtaskNet(copy.deepcopy(tail), {g.name: make_head(num_features, g.n_classes, tp.head_dropout)
                                           for g in groups})
    weights = [torch.from_numpy(class_weights(y[:, j], g.n_classes, tp.class_weight_power))
               if tp.class_weight_power else None for j, g in enumerate(groups)]
    val_idx = data.index("val")
    val_y = data.labels[val_idx][:, cols]
    val_idx_l = val_idx[(val_y != MISSING).any(axis=1)]
    val_y_l = data.labels[val_idx_l][:, cols]

    def evaluate(model) -> dict[str, float]:
        probs = predict(model, source, crop, val_idx_l, tta=tp.tta_flip)
        out: dict[str, float] = {}
        for j, g in enumerate(groups):
            m = group_accuracy(probs[g.name], val_y_l[:, j], g.n_classes)
            sfx = "" if len(groups) == 1 else f"_{g.name}"
            out[f"val_acc{sfx}"], out[f"val_mA{sfx}"] = m["accuracy"], m["mA"]
        return out

    cfg = FitConfig(epochs=tp.epochs[data.domain], batch_size=tp.batch_size, lr=tp.lr,
                    weight_decay=tp.weight_decay, warmup_frac=tp.warmup_frac, seed=seed,
                    train_flip=tp.train_flip)
    member = Member(name, net, crop, index, y, weights, cfg, evaluate if tp.eval_every_epoch else None)
    return member, (val_idx_l, val_y_l)


def finish_subtask(params: Params, data: DomainData, source, member, groups: tuple[schema.Group, ...],
                   val: tuple[np.ndarray, np.ndarray], history: list[dict[str, float]]) -> SubtaskResult:
    """The trained subtask's result: val metrics next to the majority baseline, val probabilities."""
    from pipeline.metrics import group_accuracy
    from pipeline.train.loop import predict

    cols = [[g.name for g in data.groups].index(g.name) for g in groups]
    train_idx = data.index("train")
    val_idx_l, val_y_l = val
    probs = predict(member.net, source, member.crop, val_idx_l, tta=params.train.tta_flip)
    metrics = {}
    for j, g in enumerate(groups):
        m = group_accuracy(probs[g.name], val_y_l[:, j], g.n_classes)
        base = majority_baseline(data.labels[train_idx][:, cols[j]], val_y_l[:, j], g.n_classes)
        metrics[g.name] = {"val_acc": m["accuracy"], "val_mA": m["mA"], "n_val": m["n"],
                           "majority_acc": base["accuracy"], "majority_mA": base["mA"],
                           "n_train": int((member.targets[:, j] != MISSING).sum())}
    return SubtaskResult(member.name, groups, member.crop, member.net, history, len(member.index), metrics,
                         {"val_probs": probs, "val_labels": val_y_l})


def train_subtask(params: Params, data: DomainData, source, tail, num_features: int, name: str,
                  groups: tuple[schema.Group, ...], crop: str, labels: np.ndarray, ckpt_dir: Path,
                  budget=None, on_epoch=None) -> SubtaskResult:
    """Train one subtask net (own copy of ``tail`` + heads) from its checkpoint or from scratch."""
    from pipeline.train.loop import fit

    m, val = prepare_subtask(params, data, source, tail, num_features, name, groups, crop, labels)
    main = distributed.is_main()  # under DDP rank 0 alone evaluates, reports and logs
    history = fit(m.net, source, crop, m.index, m.targets, m.weights, m.cfg, ckpt_dir / f"{name}.pt",
                  evaluate=m.evaluate if main else None, budget=budget,
                  desc=f"{data.domain}/{name}", on_epoch=on_epoch)
    if not main:
        return SubtaskResult(name, groups, crop, m.net, history, len(m.index))
    return finish_subtask(params, data, source, m, groups, val, history)


def train_batched(params: Params, data: DomainData, source, tail, num_features: int,
                  subtasks: list[tuple[str, tuple[schema.Group, ...], str]], labels: np.ndarray,
                  ckpt_dir: Path, budget=None) -> dict[str, tuple[SubtaskResult, list[dict[str, float]]]]:
    """``train.batched_tails``: the subtasks that share a schedule (the same number of labelled
    training rows) trained together by :func:`pipeline.train.batched.fit_group`; a subtask
    alone in its group trains as usual. Returns ``{name: (result, history)}``."""
    from pipeline.train.batched import checkpoint_name, fit_group, group_key
    from pipeline.train.loop import fit

    prepared = {name: (*prepare_subtask(params, data, source, tail, num_features, name, groups, crop, labels),
                       groups) for name, groups, crop in subtasks}
    by_key: dict[tuple, list[str]] = {}
    for name, (m, _, _) in prepared.items():
        by_key.setdefault(group_key(m), []).append(name)
    out = {}
    for names in by_key.values():
        members = [prepared[n][0] for n in names]
        if len(members) > 1:
            histories = fit_group(members, source, ckpt_dir / checkpoint_name(names), budget=budget,
                                  desc=f"{data.domain}/{len(names)} subtasks")
        else:
            m = members[0]
            histories = [fit(m.net, source, m.crop, m.index, m.targets, m.weights, m.cfg,
                             ckpt_dir / f"{m.name}.pt", evaluate=m.evaluate, budget=budget,
                             desc=f"{data.domain}/{m.name}")]
        for n, hist in zip(names, histories):
            m, val, groups = prepared[n]
            out[n] = (finish_subtask(params, data, source, m, groups, val, hist), hist)
    return {name: out[name] for name, _, _ in subtasks}  # in the subtasks' order


def pseudo_labels(params: Params, data: DomainData, source, results: dict[str, SubtaskResult]
                  ) -> tuple[np.ndarray, dict[str, int]]:
    """The label matrix with the first round's confident predictions filling missing train labels."""
    from pipeline.train.loop import predict
    from pipeline.train.pseudo import fill_missing

    tp = params.train
    train_idx = data.index("train")
    probs: dict[str, np.ndarray] = {}
    for res in results.values():
        # Training rows have flipped views only with flip augmentation.
        probs.update(predict(res.net, source, res.crop, train_idx, tta=tp.tta_flip and tp.train_flip))
    filled, added = fill_missing(data.labels[train_idx], probs, data.groups, tp.pseudo_thresholds)
    labels = data.labels.copy()
    labels[train_idx] = filled
    log.info("pseudo-labels added: %s", added)
    return labels, added


@dataclass(frozen=True)
class TrainIO:
    """One (domain, backbone) process: what it reads and writes."""

    domain: str
    backbone: str
    prepared: Path     # in: ingest's tables
    gate: Path         # in: validate's gate.json; training refuses data that failed validation
    models: Path       # out: <subtask>.pt per subtask
    predictions: Path  # out: {val,test}.parquet
    report: Path       # out: per-subtask accuracy next to the majority baseline, times
    checkpoints: Path  # scratch outside the DVC outputs: a rerun after a crash resumes from here
    metrics: Path | None = None  # out: the headline figures for DVC

    def artifacts(self) -> list[Path]:
        return [self.report]


@dataclass
class Backbone:
    """The backbone split for training: frozen prefix (run once, cached) and the tail each subtask copies."""

    prefix: Any
    tail: Any
    num_features: int
    trainable: int | str
    size: tuple[int, int]
    norm: tuple[Any, Any]  # mean, std
    interpolation: str


def check_gate(gate: Path) -> None:
    """Stop unless validation passed on these tables (the gate dvc.yaml puts before training)."""
    if not gate.exists():
        raise FileNotFoundError(f"{gate} not found: run the validate stage first")
    status = json.loads(gate.read_text()).get("status")
    if status != "passed":
        raise ValueError(f"validation {status!r} in {gate}: fix the data (see summary.md beside it) "
                         "before training")


def setup_torch(params: Params) -> str:
    """Seed, determinism and threads; return the device."""
    import torch

    torch.manual_seed(params.base.seed + params.train.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if params.train.threads:
        torch.set_num_threads(params.train.threads)
    elif distributed.world_size() > 1:
        torch.set_num_threads(distributed.threads_per_rank())  # the machine's cores shared by its ranks
    return pick_device(params.train.device)


def build_backbone(params: Params, domain: str, backbone: str) -> Backbone:
    """The pretrained backbone, split into the frozen prefix and the trainable tail."""
    from pipeline import backbones

    tp = params.train
    trainable = resolve_trainable(params, domain, backbone)
    cfg = backbones.data_config(backbone)
    model = backbones.create_backbone(backbone, pretrained=tp.pretrained, weights_path=tp.weights.get(backbone))
    prefix, tail = backbones.split_backbone(model, trainable)
    return Backbone(prefix, tail, model.num_features, trainable, tuple(tp.input_size[domain]),
                    (cfg["mean"], cfg["std"]), cfg.get("interpolation", "bilinear"))


def train_all(params: Params, data: DomainData, source, bb: Backbone, backbone: str, ckpt_root: Path, budget
              ) -> tuple[dict[str, SubtaskResult], dict[str, Any]]:
    """Every subtask; for vehicles a second round on pseudo-labels. Returns results and the
    pseudo-labelling record (empty when there was none). In a tracked run each subtask trains
    inside its own child run, so its curves show in the UI as the epochs end."""
    from pipeline.train.runs import subtask_run

    def train(labels: np.ndarray, ckpt: Path, round_name: str = "") -> dict[str, SubtaskResult]:
        out = {}
        if params.train.batched_tails and not params.train.multitask and not distributed.is_distributed():
            # All subtasks train at once, so no child run can be open during training: each
            # gets its child run afterwards, with its epoch records replayed into it.
            for name, (res, history) in train_batched(params, data, source, bb.tail, bb.num_features,
                                                      _subtasks(params, data), labels, ckpt, budget).items():
                with subtask_run(data.domain, backbone, name, round_name) as (run_id, on_epoch):
                    for record in history if on_epoch else ():
                        on_epoch(record)
                    out[name] = res
                    out[name].extra["run_id"] = run_id
            return out
        for name, groups, crop in _subtasks(params, data):
            with subtask_run(data.domain, backbone, name, round_name) as (run_id, on_epoch):
                out[name] = train_subtask(params, data, source, bb.tail, bb.num_features, name, groups, crop,
                                          labels, ckpt, budget, on_epoch)
                out[name].extra["run_id"] = run_id
        return out

    results = train(data.labels, ckpt_root)
    tp = params.train
    if not (tp.pseudo_label and data.domain == "vehicle" and not tp.multitask):
        return results, {}
    first_round = {g: {k: round(m[k], 4) for k in ("val_acc", "val_mA")}
                   for res in results.values() for g, m in res.metrics.items()}
    labels, added = pseudo_labels(params, data, source, results)
    if any(added.values()):
        results = train(labels, ckpt_root / "pseudo", "pseudo-labels")
    else:
        log.info("no prediction reached its pseudo-label threshold: the first round is final")
    return results, {"pseudo_labels_added": added, "first_round": first_round}


def predict_splits(params: Params, data: DomainData, source, results: dict[str, SubtaskResult]
                   ) -> dict[str, dict[str, np.ndarray]]:
    """``{split: {group: probabilities}}`` for every val and test image (flip TTA)."""
    from pipeline.train.loop import predict

    preds: dict[str, dict[str, np.ndarray]] = {}
    for split in schema.EVAL_SPLITS:
        preds[split] = {}
        for res in results.values():
            preds[split].update(predict(res.net, source, res.crop, data.index(split), tta=params.train.tta_flip))
    return preds


def make_report(params: Params, io: TrainIO, bb: Backbone, device: str, data: DomainData,
                results: dict[str, SubtaskResult], times: dict[str, float]) -> dict[str, Any]:
    """The stage's figures: per-subtask val accuracy and mA beside the majority baseline, times."""
    tp = params.train
    subtasks = {g: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}
                for res in results.values() for g, m in res.metrics.items()}
    beats = [g for g, m in subtasks.items() if m["val_acc"] > m["majority_acc"] and m["val_mA"] > m["majority_mA"]]
    run = tracking.active_run()
    return {
        "domain": io.domain, "backbone": io.backbone, "trainable": bb.trainable,
        "input_size": list(bb.size), "epochs": tp.epochs[io.domain], "cache": tp.cache,
        "multitask": tp.multitask, "device": device, "ranks": distributed.world_size(),
        # CPU seconds (all threads) next to wall time: on a shared machine wall time says
        # more about the neighbours than about this stage.
        **{k: round(v, 2) for k, v in times.items()},
        "n_train_images": int(len(data.index("train"))),
        "mlflow_run_id": run.info.run_id if run else None,
        "subtasks": subtasks,
        "subtasks_beating_majority": len(beats),
        "beats_majority": f"{len(beats)}/{len(subtasks)}",
    }


def headline(report: dict[str, Any]) -> dict[str, float]:
    """Means over the subtasks (val accuracy and mA), how many beat the majority class, wall and CPU time."""
    subtasks = list(report["subtasks"].values())
    return {"val_acc": float(np.mean([m["val_acc"] for m in subtasks])),
            "val_mA": float(np.mean([m["val_mA"] for m in subtasks])),
            "subtasks_beating_majority": report["subtasks_beating_majority"], "time_s": report["time_s"],
            "cpu_s": report["cpu_s"]}


def run(params: Params, io: TrainIO, budget=None) -> dict[str, Any]:
    """Train every subtask of ``io.domain`` on ``io.backbone``; write models, predictions and report.

    Inside a tracked stage run (pipeline/stage.py) each subtask also gets a child run and a
    registered model. ``budget`` (tests) interrupts after a number of epochs, as a crash would.
    Under ``torchrun`` (or ``train.nproc`` > 1) this process is one DDP rank (distributed.py).
    """
    from pipeline.train.loop import EpochBudget

    t_start, cpu_start = time.perf_counter(), time.process_time()
    check_gate(io.gate)
    device = setup_torch(params)
    with distributed.process_group(device) as device:
        return _run(params, io, budget or EpochBudget(), device, t_start, cpu_start)


def _run(params: Params, io: TrainIO, budget, device: str, t_start: float,
         cpu_start: float) -> dict[str, Any]:
    """:func:`run` once the process group (if any) is up. Under DDP every rank builds its share
    of the cache and trains; rank 0 alone predicts and writes (the others return ``{}``)."""
    from pipeline.stage import write_atomic, write_metrics
    from pipeline.train.cache import build_features
    from pipeline.train.outputs import save_subtask, write_predictions

    data = load_domain(io.prepared, io.domain)
    bb = build_backbone(params, io.domain, io.backbone)
    tp = params.train
    boxes = {c: crop_box(c, tp.crop_boxes) for c in sorted({c for _, _, c in _subtasks(params, data)})}
    log.info("train %s/%s: %d images (%d train), trainable=%s, input %s, device %s, cache %s",
             io.domain, io.backbone, len(data.names), len(data.index("train")), bb.trainable, bb.size,
             device, tp.cache)
    source = build_features(tp.cache, bb.prefix, list(data.paths), boxes, bb.size, *bb.norm,
                            interpolation=bb.interpolation, device=device,
                            amp=tp.amp, batch_size=tp.cache_batch_size, workers=tp.workers,
                            disk_dir=tp.cache_dir or None, flip_rows=flip_rows(params, data),
                            keep_aspect=io.domain in tp.keep_aspect)
    t_cache = time.perf_counter() - t_start
    ckpt_root = io.checkpoints / fingerprint(params, io)
    results, pseudo = train_all(params, data, source, bb, io.backbone, ckpt_root, budget)
    if not distributed.is_main():
        source.close()
        return {}
    write_predictions(io.predictions, data, predict_splits(params, data, source, results))
    for res in results.values():
        save_subtask(io.models, res, io.backbone, bb.trainable, bb.size, bb.norm)
    t_train = time.perf_counter() - t_start
    if tracking.active_run() is not None:
        from pipeline.train.runs import log_child

        for res in results.values():
            log_child(params, io.domain, io.backbone, res, bb.prefix, bb.size, bb.trainable,
                      pseudo.get("pseudo_labels_added"))
    source.close()
    times = {"time_s": time.perf_counter() - t_start, "cpu_s": time.process_time() - cpu_start,
             "train_time_s": t_train, "cache_time_s": t_cache}
    report = {**make_report(params, io, bb, device, data, results, times), **pseudo}
    write_atomic(io.report, json.dumps(report, indent=2) + "\n")
    write_metrics(io.metrics, headline(report))
    if not tp.keep_checkpoints:
        shutil.rmtree(ckpt_root, ignore_errors=True)
    log.info("train %s/%s done in %.1fs (%s beat the majority baseline)", io.domain, io.backbone,
             report["time_s"], report["beats_majority"])
    return report

