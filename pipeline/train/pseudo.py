"""Pseudo-labels for the partial vehicle labels.

No training vehicle carries all three of colour, brand and type (a label is either
"colour Brand." or "Type."). After a first round, each head's confident predictions fill the
missing labels of that group, and a second round trains on the filled matrix.
"""

from __future__ import annotations

import numpy as np

from pipeline.schema import Group
from pipeline.train.data import MISSING


def fill_missing(labels: np.ndarray, probs: dict[str, np.ndarray], groups: tuple[Group, ...],
                 thresholds: dict[str, float]) -> tuple[np.ndarray, dict[str, int]]:
    """Fill ``MISSING`` entries whose top probability reaches the group's threshold.

    ``labels`` is ``(N, G)``, ``probs[group]`` ``(N, K)`` for the same rows. Groups without a
    threshold are left alone; known labels are never overwritten. Returns the new matrix and the
    number of labels added per group.
    """
    out = labels.copy()
    added: dict[str, int] = {}
    for j, g in enumerate(groups):
        if g.name not in thresholds or g.name not in probs:
            continue
        p = probs[g.name]
        if len(p) != len(labels):
            raise ValueError(f"{len(p)} probability rows for {len(labels)} label rows ({g.name})")
        take = (labels[:, j] == MISSING) & (p.max(axis=1) >= thresholds[g.name])
        out[take, j] = p[take].argmax(axis=1)
        added[g.name] = int(take.sum())
    return out, added
