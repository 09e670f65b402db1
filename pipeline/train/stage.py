"""The ``train`` stage for one (domain, backbone): every subtask, one MLflow parent run.

Outputs (docs/architecture.md):
- ``<models_dir>/<domain>/<backbone>/<subtask>.pt``: tail + head weights and how to rebuild them;
- ``<predictions_dir>/<domain>/<backbone>/{val,test}.parquet``: ``name`` + ``group=value``
  probabilities (flip TTA) for every image of the split;
- ``<reports_dir>/train/<domain>-<backbone>.json``: per-subtask val accuracy and mA next to the
  majority-class baseline, epochs, times, pseudo-labels added.

Checkpoints live outside the DVC outputs (``checkpoint_dir``, keyed by a fingerprint of params
and data) because DVC deletes a stage's outputs before rerunning it: a rerun after a crash finds
them and resumes.
"""

from __future__ import annotations

import copy
import dataclasses
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

from pipeline import schema
from pipeline.config import Params
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


def fingerprint(params: Params, domain: str, backbone: str) -> str:
    """Checkpoints are reused only for the same params, seed, domain, backbone and data."""
    from pipeline.tracking import data_hash

    blob = json.dumps({"train": dataclasses.asdict(params.train), "seed": params.base.seed,
                       "domain": domain, "backbone": backbone,
                       "data": data_hash(params.base.prepared_dir)}, sort_keys=True, default=str)
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


def train_subtask(params: Params, data: DomainData, source, tail, num_features: int, name: str,
                  groups: tuple[schema.Group, ...], crop: str, labels: np.ndarray, ckpt_dir: Path,
                  budget=None) -> SubtaskResult:
    """Train one subtask net (own copy of ``tail`` + heads) from its checkpoint or from scratch."""
    import torch

    from pipeline.metrics import group_accuracy
    from pipeline.train.loop import FitConfig, fit, predict
    from pipeline.train.model import SubtaskNet, make_head

    tp = params.train
    cols = [[g.name for g in data.groups].index(g.name) for g in groups]
    train_idx = data.index("train")
    y = labels[train_idx][:, cols]
    keep = (y != MISSING).any(axis=1)
    index, y = train_idx[keep], y[keep]
    if not len(index):
        raise ValueError(f"subtask {name!r} of {data.domain} has no labelled training image")
    seed = params.base.seed + zlib.crc32(name.encode()) % 100_000
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
    history = fit(net, source, crop, index, y, weights, cfg, ckpt_dir / f"{name}.pt",
                  evaluate=evaluate if tp.eval_every_epoch else None, budget=budget,
                  desc=f"{data.domain}/{name}")
    probs = predict(net, source, crop, val_idx_l, tta=tp.tta_flip)
    metrics = {}
    for j, g in enumerate(groups):
        m = group_accuracy(probs[g.name], val_y_l[:, j], g.n_classes)
        base = majority_baseline(data.labels[train_idx][:, cols[j]], val_y_l[:, j], g.n_classes)
        metrics[g.name] = {"val_acc": m["accuracy"], "val_mA": m["mA"], "n_val": m["n"],
                           "majority_acc": base["accuracy"], "majority_mA": base["mA"],
                           "n_train": int((y[:, j] != MISSING).sum())}
    return SubtaskResult(name, groups, crop, net, history, len(index), metrics,
                         {"val_probs": probs, "val_labels": val_y_l})


def confusion_figure(probs: np.ndarray, labels: np.ndarray, group: schema.Group):
    """Row-normalised confusion matrix of one group on validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = group.n_classes
    keep = labels != MISSING
    cm = np.zeros((k, k))
    np.add.at(cm, (labels[keep], probs[keep].argmax(1)), 1)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(14, 2.5 + 0.3 * k)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), group.values, rotation=90, fontsize=7 if k > 12 else 9)
    ax.set_yticks(range(k), group.values, fontsize=7 if k > 12 else 9)
    if k <= 12:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{group.name} (val): counts, shade = share of the row", fontsize=10)
    fig.tight_layout()
    return fig


def log_child(params: Params, domain: str, backbone: str, res: SubtaskResult, prefix, size,
              trainable, pseudo: dict[str, int] | None) -> None:
    """One nested MLflow run: params, per-epoch metrics, confusion PNGs, the logged models."""
    import matplotlib.pyplot as plt
    import mlflow
    import torch

    from pipeline.train.model import ServingModel

    tp = params.train
    with mlflow.start_run(run_name=res.name, nested=True,
                          tags={"stage": "train", "domain": domain, "backbone": backbone,
                                "subtask": res.name}):
        mlflow.log_params({"subtask": res.name, "crop": res.crop, "trainable": str(trainable),
                           "input_size": f"{size[0]}x{size[1]}", "epochs": tp.epochs[domain],
                           "n_train": res.n_train, "backbone": backbone, "domain": domain,
                           "class_weight_power": tp.class_weight_power, "cache": tp.cache})
        for rec in res.history:
            mlflow.log_metrics({k: v for k, v in rec.items() if k != "epoch"}, step=int(rec["epoch"]))
        for g in res.groups:
            m = res.metrics[g.name]
            sfx = "" if len(res.groups) == 1 else f"_{g.name}"
            mlflow.log_metrics({f"final_{k}{sfx}": float(v) for k, v in m.items()})
            if pseudo and g.name in pseudo:
                mlflow.log_metric(f"pseudo_labels_added{sfx}", pseudo[g.name])
            j = [x.name for x in res.groups].index(g.name)
            fig = confusion_figure(res.extra["val_probs"][g.name], res.extra["val_labels"][:, j], g)
            mlflow.log_figure(fig, f"confusion_{g.name}.png")
            plt.close(fig)
        if not tp.log_models:
            return
        from mlflow.models import infer_signature

        # Pickle is a deliberate choice (pt2 export of timm models is slow); skip its warning per model.
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)

        example = np.zeros((1, 3, *size), dtype=np.float32)
        for g in res.groups:
            model = ServingModel(copy.deepcopy(prefix).cpu(), copy.deepcopy(res.net.tail).cpu(),
                                 copy.deepcopy(res.net.head(g.name)).cpu()).eval()
            with torch.no_grad():
                out = model(torch.from_numpy(example)).numpy()
            sub = res.name if len(res.groups) == 1 else f"{res.name}-{g.name}"
            mlflow.pytorch.log_model(
                model, name=f"model-{g.name}", serialization_format="pickle",
                signature=infer_signature(example, out), input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "timm", "numpy"],
                registered_model_name=f"track2-{domain}-{sub}-{backbone}",
                metadata={"classes": list(g.values), "crop": res.crop,
                          "crop_box": list(crop_box(res.crop, tp.crop_boxes)),
                          "input": "RGB crop resized to input_size, normalised with the backbone mean/std"})


def save_subtask(out_dir: Path, res: SubtaskResult, backbone: str, trainable, size, norm) -> None:
    """The subtask model: tail + head weights plus what is needed to rebuild them."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {k: v.cpu() for k, v in res.net.state_dict().items()}, "backbone": backbone, "trainable": trainable,
                "groups": [g.name for g in res.groups], "classes": {g.name: list(g.values) for g in res.groups},
                "crop": res.crop, "input_size": list(size), "mean": list(norm[0]), "std": list(norm[1])},
               out_dir / f"{res.name}.pt")


def write_predictions(out_dir: Path, data: DomainData, preds: dict[str, dict[str, np.ndarray]]) -> None:
    """``{split}.parquet``: ``name`` + one ``group=value`` column per class, every image of the split."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    for split, by_group in preds.items():
        idx = data.index(split)
        cols: dict[str, Any] = {"name": data.names[idx]}
        for g in data.groups:
            p = by_group[g.name]
            for k, col in enumerate(schema.prob_columns([g])):
                cols[col] = p[:, k].astype(np.float32)
        pd.DataFrame(cols).to_parquet(out_dir / f"{split}.parquet", index=False)


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


def run_train(params: Params, domain: str, backbone: str, budget=None) -> dict[str, Any]:
    """Train every subtask of ``domain`` on ``backbone``; write models, predictions and report."""
    import torch

    from pipeline import backbones, tracking
    from pipeline.train.cache import build_features
    from pipeline.train.loop import EpochBudget, predict

    t_start, cpu_start = time.perf_counter(), time.process_time()
    tp, base = params.train, params.base
    if domain not in tp.epochs or domain not in tp.input_size:
        raise ValueError(f"train.epochs and train.input_size need an entry for domain {domain!r}")
    torch.manual_seed(base.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if tp.threads:
        torch.set_num_threads(tp.threads)
    budget = budget or EpochBudget()
    device = pick_device(tp.device)
    data = load_domain(base.prepared_dir, domain)
    trainable = resolve_trainable(params, domain, backbone)
    size = tuple(tp.input_size[domain])
    cfg = backbones.data_config(backbone)
    model = backbones.create_backbone(backbone, pretrained=tp.pretrained, weights_path=tp.weights.get(backbone))
    prefix, tail = backbones.split_backbone(model, trainable)
    num_features = model.num_features
    subtasks = _subtasks(params, data)
    boxes = {c: crop_box(c, tp.crop_boxes) for c in sorted({c for _, _, c in subtasks})}
    log.info("train %s/%s: %d images (%d train), subtasks %s, trainable=%s, input %s, device %s, cache %s",
             domain, backbone, len(data.names), len(data.index("train")), [s for s, _, _ in subtasks],
             trainable, size, device, tp.cache)

    source = build_features(tp.cache, prefix, list(data.paths), boxes, size, cfg["mean"], cfg["std"],
                            interpolation=cfg.get("interpolation", "bilinear"), device=device,
                            amp=tp.amp, batch_size=tp.eval_batch_size, workers=tp.workers,
                            disk_dir=tp.cache_dir or None, flip_rows=flip_rows(params, data),
                            keep_aspect=domain in tp.keep_aspect)
    t_cache = time.perf_counter() - t_start
    ckpt_root = Path(tp.checkpoint_dir) / domain / backbone / fingerprint(params, domain, backbone)
    models_dir = Path(tp.models_dir) / domain / backbone
    run_pseudo = tp.pseudo_label and domain == "vehicle" and not tp.multitask
    results: dict[str, SubtaskResult] = {}
    pseudo_added: dict[str, int] = {}

    with tracking.stage_run(base.experiment, f"train-{domain}-{backbone}",
                            params={"train": dataclasses.asdict(tp), "seed": base.seed},
                            data_paths=(base.prepared_dir,), domain=domain, backbone=backbone) as run:
        for name, groups, crop in subtasks:
            results[name] = train_subtask(params, data, source, tail, num_features, name, groups, crop,
                                          data.labels, ckpt_root, budget)
        if run_pseudo:
            first_round = {g: {k: round(m[k], 4) for k in ("val_acc", "val_mA")}
                           for res in results.values() for g, m in res.metrics.items()}
            labels, pseudo_added = pseudo_labels(params, data, source, results)
            if any(pseudo_added.values()):
                for name, groups, crop in subtasks:
                    results[name] = train_subtask(params, data, source, tail, num_features, name, groups,
                                                  crop, labels, ckpt_root / "pseudo", budget)
            else:
                log.info("no prediction reached its pseudo-label threshold: the first round is final")

        preds: dict[str, dict[str, np.ndarray]] = {}
        for split in ("val", "test"):
            preds[split] = {}
            for res in results.values():
                preds[split].update(predict(res.net, source, res.crop, data.index(split), tta=tp.tta_flip))
        write_predictions(Path(tp.predictions_dir) / domain / backbone, data, preds)
        for res in results.values():
            save_subtask(models_dir, res, backbone, trainable, size, (cfg["mean"], cfg["std"]))
        t_train = time.perf_counter() - t_start
        for res in results.values():
            log_child(params, domain, backbone, res, prefix, size, trainable, pseudo_added)

        report = {
            "domain": domain, "backbone": backbone, "trainable": trainable,
            "input_size": list(size), "epochs": tp.epochs[domain], "cache": tp.cache,
            "multitask": tp.multitask, "device": device,
            # CPU seconds (all threads) next to wall time: on a shared machine wall time says
            # more about the neighbours than about this stage.
            "time_s": round(time.perf_counter() - t_start, 2), "cpu_s": round(time.process_time() - cpu_start, 2),
            "train_time_s": round(t_train, 2),
            "cache_time_s": round(t_cache, 2), "n_train_images": int(len(data.index("train"))),
            "mlflow_run_id": run.info.run_id,
            "subtasks": {g: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}
                         for res in results.values() for g, m in res.metrics.items()},
        }
        if run_pseudo:
            report["pseudo_labels_added"] = pseudo_added
            report["first_round"] = first_round
        beats = [g for g, m in report["subtasks"].items()
                 if m["val_acc"] > m["majority_acc"] and m["val_mA"] > m["majority_mA"]]
        report["beats_majority"] = f"{len(beats)}/{len(report['subtasks'])}"
        import mlflow

        mlflow.log_metrics({"time_s": report["time_s"], "cache_time_s": t_cache,
                            "subtasks_beating_majority": len(beats)})
        out = Path(base.reports_dir) / "train" / f"{domain}-{backbone}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        mlflow.log_artifact(str(out))
    source.close()
    if not tp.keep_checkpoints:
        shutil.rmtree(ckpt_root, ignore_errors=True)
    log.info("train %s/%s done in %.1fs (%s beat the majority baseline)", domain, backbone,
             report["time_s"], report["beats_majority"])
    return report
