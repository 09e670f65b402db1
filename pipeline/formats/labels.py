"""``labels.parquet`` rows decoded: class indices per group, or ``{group: value or None}`` per image.

Pedestrian groups are stored as class indices (``Int8``), vehicle groups as value names
(strings); both are null where a label is missing (vehicle labels are partial: "colour Brand."
or "Type."). A group is only read on rows of its own domain, so a pedestrian row never carries a
vehicle label and vice versa. The router's group (``domain``) is read on every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from pipeline import schema

if TYPE_CHECKING:
    import pandas as pd

#: The class index of a missing label.
MISSING = -1
_DOMAIN_OF = {g.name: d for d, groups in schema.GROUPS_BY_DOMAIN.items() for g in groups}
_INDEX_CODED = {g.name for g in schema.PEDESTRIAN_GROUPS}


def label_matrix(rows: pd.DataFrame, groups: Sequence[schema.Group]) -> np.ndarray:
    """``(len(rows), len(groups))`` int64 class indices, :data:`MISSING` where unlabelled.

    ``rows`` needs a ``domain`` column and one column per group (labels.parquet, or images
    joined with it). Raises ``ValueError`` naming missing columns, ``KeyError`` on a value
    outside a group's vocabulary.
    """
    missing = [g.name for g in groups if g.name not in rows.columns]
    if missing:
        raise ValueError(f"labels.parquet lacks the columns {missing}")
    out = np.full((len(rows), len(groups)), MISSING, dtype=np.int64)
    domain = rows["domain"]
    for j, g in enumerate(groups):
        col = rows[g.name]
        if g.name in _INDEX_CODED:
            col = col.astype("Float64")
            known = col.notna().to_numpy(bool)
            out[known, j] = col[known].astype("int64").to_numpy()
        else:
            out[:, j] = [g.index(v) if isinstance(v, str) else MISSING for v in col.tolist()]
        if g.name in _DOMAIN_OF:
            out[~(domain == _DOMAIN_OF[g.name]).fillna(False).to_numpy(bool), j] = MISSING
    return out


def label_records(labels: pd.DataFrame) -> list[dict[str, str | None]]:
    """``{group: value or None}`` per row, over the groups of the row's domain (vehicle groups
    for a row that is not a pedestrian)."""
    decoded = {d: label_matrix(labels, groups) for d, groups in schema.GROUPS_BY_DOMAIN.items()}
    pedestrian = (labels["domain"] == "pedestrian").fillna(False).to_numpy(bool)
    out = []
    for i, is_pedestrian in enumerate(pedestrian.tolist()):
        d = "pedestrian" if is_pedestrian else "vehicle"
        out.append({g.name: (g.values[k] if k != MISSING else None)
                    for g, k in zip(schema.GROUPS_BY_DOMAIN[d], decoded[d][i].tolist())})
    return out


def label_dicts(labels: pd.DataFrame) -> dict[str, dict[str, str | None]]:
    """Image name -> ``{group: value or None}`` (names must be unique: one split's rows)."""
    return dict(zip(labels["name"].tolist(), label_records(labels)))
