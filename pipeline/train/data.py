"""Tables -> per-domain label matrices, per-group crops and class weights.

A domain's images are its training images plus *every* validation and test image: predictions
are written for whole splits because the router, not the label, decides the domain downstream.
Labels are a dense ``(n_images, n_groups)`` int64 matrix with ``-1`` where a label is missing
(vehicle labels are partial; test images have none; a pedestrian model sees val vehicles).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import schema
from pipeline.formats import label_matrix, read_table
from pipeline.formats.labels import MISSING
from pipeline.schema import Group

log = logging.getLogger(__name__)

FULL = "full"


def domain_groups(domain: str) -> tuple[Group, ...]:
    """The subtasks (attribute groups) of a training domain."""
    if domain == "router":
        return (schema.ROUTER_GROUP,)
    try:
        return schema.GROUPS_BY_DOMAIN[domain]
    except KeyError:
        raise ValueError(f"unknown domain {domain!r}; expected one of {list(schema.TRAINING_DOMAINS)}") from None


@dataclass(frozen=True)
class DomainData:
    """Everything one training process needs to know about its images and labels."""

    domain: str
    groups: tuple[Group, ...]
    names: np.ndarray    # (N,) image names
    paths: np.ndarray    # (N,) paths as reachable from the repository root
    split: np.ndarray    # (N,) "train" | "val" | "test"
    labels: np.ndarray   # (N, G) int64 class index per group, MISSING where unlabelled

    def index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)


def load_domain(prepared_dir: str | Path, domain: str) -> DomainData:
    """Read ``images.parquet`` + ``labels.parquet`` (docs/architecture.md) for one domain."""
    groups = domain_groups(domain)
    images, labels = read_table(prepared_dir, "images"), read_table(prepared_dir, "labels")
    train = images[images["split"] == "train"]
    if domain != "router":
        train = train[train["domain"] == domain]
    rows = pd.concat([train, images[images["split"] == "val"], images[images["split"] == "test"]],
                     ignore_index=True)
    if not len(rows):
        raise ValueError(f"no images for domain {domain!r} in {prepared_dir}")
    if domain != "router":  # the router's label is the images table's own `domain` column
        keep = ["name", "split"] + [g.name for g in groups if g.name in labels.columns]
        lab = labels[keep].drop_duplicates(["name", "split"])
        rows = rows.merge(lab, on=["name", "split"], how="left", validate="one_to_one")
    if (rows["split"] == "train").sum() == 0:
        raise ValueError(f"no training images for domain {domain!r} in {prepared_dir}")
    return DomainData(domain, groups, rows["name"].to_numpy(), rows["path"].to_numpy(),
                      rows["split"].to_numpy(), label_matrix(rows, groups))


# --------------------------------------------------------------------------- crops

def crop_of(group: str, crops: dict[str, str]) -> str:
    """The crop a group trains and predicts on (``full`` unless ``crops`` names one)."""
    return crops.get(group, FULL)


def crop_box(crop: str, boxes: dict[str, list[float]]) -> tuple[float, float, float, float]:
    """``(top, bottom, left, right)`` as fractions of the image for a named crop."""
    if crop == FULL and FULL not in boxes:
        return (0.0, 1.0, 0.0, 1.0)
    try:
        top, bottom, left, right = boxes[crop]
    except KeyError:
        raise ValueError(f"unknown crop {crop!r}; crop_boxes defines {sorted(boxes)}") from None
    except ValueError:
        raise ValueError(f"crop {crop!r} needs [top, bottom, left, right], got {boxes[crop]}") from None
    if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
        raise ValueError(f"crop {crop!r}: fractions must satisfy 0 <= top < bottom <= 1 and "
                         f"0 <= left < right <= 1, got {boxes[crop]}")
    return (top, bottom, left, right)


def load_views(path: str | Path, boxes: dict[str, tuple[float, float, float, float]],
               size: tuple[int, int], interpolation: str = "bilinear",
               keep_aspect: bool = False) -> dict[str, np.ndarray]:
    """Decode one image once and return each named crop resized to ``size`` (H, W) as uint8 CHW.

    ``keep_aspect`` letterboxes instead of stretching: the crop is scaled to fit and centred on a
    grey canvas, so the network still sees the object's shape (portrait pedestrian vs. wide car).
    """
    from PIL import Image

    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                "nearest": Image.NEAREST}.get(interpolation, Image.BILINEAR)
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    w, h = im.size
    out = {}
    for name, (top, bottom, left, right) in boxes.items():
        box = (round(left * w), round(top * h), max(round(right * w), round(left * w) + 1),
               max(round(bottom * h), round(top * h) + 1))
        view = im.crop(box)
        view = _letterbox(view, size, resample) if keep_aspect else view.resize((size[1], size[0]), resample)
        out[name] = np.asarray(view, dtype=np.uint8).transpose(2, 0, 1).copy()
    return out


def _letterbox(view, size: tuple[int, int], resample):
    """Scale ``view`` to fit ``size`` (H, W) keeping its aspect ratio, centred on mid-grey."""
    from PIL import Image

    h, w = size
    scale = min(w / view.width, h / view.height)
    fitted = view.resize((max(1, round(view.width * scale)), max(1, round(view.height * scale))), resample)
    canvas = Image.new("RGB", (w, h), (128, 128, 128))
    canvas.paste(fitted, ((w - fitted.width) // 2, (h - fitted.height) // 2))
    return canvas


# --------------------------------------------------------------------------- imbalance

def class_weights(labels: np.ndarray, n_classes: int, power: float) -> np.ndarray:
    """Per-class loss weights ``(n / (K * n_c)) ** power`` over the labelled rows.

    ``power`` 0 gives plain cross-entropy, 1 the full inverse frequency; 0.5 (the default) lifts
    a 1 % class about 7x without letting a handful of examples dominate. Absent classes get 0.
    """
    y = labels[labels != MISSING]
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.zeros(n_classes)
    present = counts > 0
    w[present] = (len(y) / (present.sum() * counts[present])) ** power
    return w.astype(np.float32)
