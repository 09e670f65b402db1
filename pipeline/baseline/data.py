"""The baseline's data: (image, caption) pairs of a split with labels over every group, and galleries.

Labels are one ``(N, G)`` int64 matrix over every attribute group of both domains (pedestrian
groups, then vehicle groups; ``-1`` where unlabelled or of the other domain). What a caption
states is read as the retrieve stage judges relevance: the *groups* come from the caption
mapping, their *values* from the image's label (``pipeline.retrieve.stated_from_label``), so a
training caption's positives are exactly the images the retrieve stage would count as relevant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import schema
from pipeline.formats import label_matrix, read_table
from pipeline.formats.labels import MISSING

#: Every attribute group, in the order of the label and stated matrices.
GROUPS: tuple[schema.Group, ...] = schema.PEDESTRIAN_GROUPS + schema.VEHICLE_GROUPS
GROUP_INDEX = {g.name: j for j, g in enumerate(GROUPS)}
DOMAIN_ID = {d: i for i, d in enumerate(schema.DOMAINS)}


@dataclass(frozen=True)
class Pairs:
    """The labelled (image, caption) pairs of one split, in labels-table order."""

    names: np.ndarray     # (N,) image names
    paths: np.ndarray     # (N,) paths as reachable from the repository root
    captions: np.ndarray  # (N,) the caption written for the image
    domain: np.ndarray    # (N,) int, DOMAIN_ID of the image's true domain
    labels: np.ndarray    # (N, G) int64 class indices over GROUPS, MISSING where unlabelled
    stated: np.ndarray    # (N, G) bool: the caption states the group (and the image is labelled there)

    def __len__(self) -> int:
        return len(self.names)


def label_rows(rows: pd.DataFrame) -> np.ndarray:
    """``(len(rows), len(GROUPS))`` class indices of labels.parquet rows over both domains' groups."""
    return np.hstack([label_matrix(rows, schema.PEDESTRIAN_GROUPS), label_matrix(rows, schema.VEHICLE_GROUPS)])


def stated_matrix(parsed: list[Any], labels: np.ndarray) -> np.ndarray:
    """``(N, G)`` bool: the groups each parsed caption states, where its image has a label."""
    out = np.zeros(labels.shape, dtype=bool)
    for i, p in enumerate(parsed):
        for g in p.attributes:
            out[i, GROUP_INDEX[g]] = True
    return out & (labels != MISSING)


def load_pairs(prepared: Path, mapping: Any, split: str = "train") -> Pairs:
    """The pairs of ``split`` from ingest's tables; ``mapping`` parses what each caption states."""
    labels = read_table(prepared, "labels")
    labels = labels[labels["split"] == split].reset_index(drop=True)
    if not len(labels):
        raise ValueError(f"no {split} labels in {prepared}")
    images = read_table(prepared, "images")
    paths = dict(zip(images.loc[images["split"] == split, "name"], images.loc[images["split"] == split, "path"]))
    lost = [n for n in labels["name"] if n not in paths]
    if lost:
        raise ValueError(f"{len(lost)} {split} labels name images missing from images.parquet, e.g. {lost[0]!r}")
    lab = label_rows(labels)
    parsed = mapping.parse_many(labels["caption"].astype(str).tolist())
    domain = labels["domain"].map(DOMAIN_ID)
    if domain.isna().any():
        raise ValueError(f"{split} labels with an unknown domain: {sorted(set(labels['domain'][domain.isna()]))}")
    return Pairs(labels["name"].to_numpy(str), np.array([paths[n] for n in labels["name"]]),
                 labels["caption"].to_numpy(str), domain.to_numpy(np.int64), lab, stated_matrix(parsed, lab))


def gallery(prepared: Path, split: str) -> pd.DataFrame:
    """``name``, ``path`` and ``domain`` (null for test) of a split's images, in table order."""
    images = read_table(prepared, "images")
    return images.loc[images["split"] == split, ["name", "path", "domain"]].reset_index(drop=True)


def content_vocabulary(captions: list[str]) -> list[str]:
    """The words of ``captions`` that carry meaning (the mapping's function words left out), sorted.

    The served ensemble calls a caption fully understood only when every content word is one the
    training captions use (pipeline/baseline/combine.py).
    """
    from pipeline.mapping import FUNCTION_WORDS, tokens

    return sorted({t for c in captions for t in tokens(c)} - FUNCTION_WORDS)
