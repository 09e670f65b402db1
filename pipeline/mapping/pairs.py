"""(caption, label) pairs as arrays, decoded from a ``labels.parquet``-shaped frame by the one
labels decoder (:func:`pipeline.formats.label_matrix`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline import schema


@dataclass
class Pairs:
    """(caption, label) pairs as arrays: ``labels[group]`` is a class index per caption, -1 if unlabelled."""

    captions: list[str]
    domains: np.ndarray  # str: pedestrian | vehicle
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.captions)


def pairs_from_frame(df) -> Pairs:
    """Pairs from a ``labels.parquet``-shaped frame (see docs/architecture.md)."""
    from pipeline.formats import MISSING, label_matrix

    groups = schema.PEDESTRIAN_GROUPS + schema.VEHICLE_GROUPS
    present = [g for g in groups if g.name in df]  # a frame may carry one domain's columns only
    decoded = label_matrix(df, present).astype(np.int16)
    labels = {g.name: np.full(len(df), MISSING, np.int16) for g in groups}
    labels.update({g.name: decoded[:, j] for j, g in enumerate(present)})
    return Pairs([str(c) for c in df["caption"]], df["domain"].to_numpy(str), labels)


def label_values(pairs: Pairs, i: int) -> dict[str, str | None]:
    """Value names of caption ``i``'s label, None for unlabelled groups."""
    return {g: (schema.group(g).values[k] if k >= 0 else None)
            for g, k in ((g, int(pairs.labels[g][i])) for g in pairs.labels)}
