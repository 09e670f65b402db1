"""The train stage's MLflow child runs: one per subtask, open while it trains (its curves show as
the epochs end), then given its final figures, confusion matrices and the registered model
``track2-<domain>-<subtask>-<backbone>``. Only inside a tracked run."""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from pipeline import schema
from pipeline.config import Params
from pipeline.train.data import MISSING, crop_box


@contextmanager
def subtask_run(domain: str, backbone: str, subtask: str, round_name: str = "") -> Iterator[tuple[Any, Any]]:
    """``(run_id, on_epoch)`` of a nested run for one subtask while it trains, logging each epoch's
    record as it ends; ``(None, None)`` when the stage runs untracked."""
    from pipeline import lineage, tracking

    if tracking.active_run() is None:
        yield None, None
        return
    import mlflow

    name = f"{subtask} ({round_name})" if round_name else subtask
    tags = {"stage": "train", "domain": domain, "backbone": backbone, "subtask": subtask, **lineage.run_tags()}
    if round_name:
        tags["round"] = round_name
    with mlflow.start_run(run_name=lineage.run_name(f"{domain}/{backbone}/{name}"), nested=True, tags=tags) as run:
        def on_epoch(record: dict[str, float]) -> None:
            mlflow.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=int(record["epoch"]))

        yield run.info.run_id, on_epoch

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


def log_child(params: Params, domain: str, backbone: str, res, prefix, size,
              trainable, pseudo: dict[str, int] | None) -> None:
    """One nested MLflow run: params, per-epoch metrics, confusion PNGs, the logged models."""
    import matplotlib.pyplot as plt
    import mlflow
    import torch

    from pipeline.train.model import ServingModel

    tp = params.train
    # The subtask's own run, opened while it trained (subtask_run): the rest goes into it.
    with mlflow.start_run(run_id=res.extra["run_id"], nested=True):
        mlflow.log_params({"subtask": res.name, "crop": res.crop, "trainable": str(trainable),
                           "input_size": f"{size[0]}x{size[1]}", "epochs": tp.epochs[domain],
                           "n_train": res.n_train, "backbone": backbone, "domain": domain,
                           "class_weight_power": tp.class_weight_power, "cache": tp.cache})
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
