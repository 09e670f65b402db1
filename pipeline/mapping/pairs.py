"""(caption, label) pairs as arrays, decoded from a ``labels.parquet``-shaped frame.

The decoding is the mapping's own until pipeline/formats owns labels.parquet (issue 9, item 4).
"""

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
    n = len(df)
    labels: dict[str, np.ndarray] = {}
    for g in schema.PEDESTRIAN_GROUPS:
        col = df[g.name] if g.name in df else None
        labels[g.name] = (np.full(n, -1, np.int16) if col is None
                          else col.astype("Int16").fillna(-1).to_numpy(np.int16))
    for g in schema.VEHICLE_GROUPS:
        index = {v: i for i, v in enumerate(g.values)}
        col = df[g.name] if g.name in df else [None] * n
        labels[g.name] = np.array([index[v] if isinstance(v, str) else -1 for v in col], np.int16)
    return Pairs([str(c) for c in df["caption"]], df["domain"].to_numpy(str), labels)


def label_values(pairs: Pairs, i: int) -> dict[str, str | None]:
    """Value names of caption ``i``'s label, None for unlabelled groups."""
    return {g: (schema.group(g).values[k] if k >= 0 else None)
            for g, k in ((g, int(pairs.labels[g][i])) for g in pairs.labels)}
