"""The prepared tables: columns and dtypes defined once, built, written and read from here.

``ingest`` builds its frames with :func:`table_frame` (so they carry exactly these columns, in
this order, with these dtypes), writes them with :func:`write_table`; the validate stage checks
the tables it reads against :data:`TABLES`; every stage reads them with :func:`read_table`.
What each column holds: docs/architecture.md, "Files between stages".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline import schema
from pipeline.formats.lines import LabelLine, read_label_file

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Table -> column -> dtype (pandas names: "string" and "Int8" are nullable, numpy ones are not).
TABLES: dict[str, dict[str, str]] = {
    "images": {"name": "string", "path": "string", "split": "string", "domain": "string",
               "width": "int32", "height": "int32"},
    "labels": {"name": "string", "split": "string", "domain": "string", "attribute": "string",
               "caption": "string", **dict.fromkeys(schema.PEDESTRIAN_BITS, "Int8"),
               **{g.name: "Int8" for g in schema.PEDESTRIAN_GROUPS},  # class index, null for vehicles
               **{g.name: "string" for g in schema.VEHICLE_GROUPS}},  # value, null when not labelled
    "queries": {"query_id": "int64", "split": "string", "text": "string", "image": "string"},
    "quarantine": {"file": "string", "line": "int64", "raw": "string", "reason": "string"},
}
FILES = {"images": "images.parquet", "labels": "labels.parquet", "queries": "queries.parquet",
         "quarantine": "quarantine.csv"}


def columns(table: str) -> list[str]:
    """The contract's columns of ``table``, in order."""
    return list(_contract(table))


def _contract(table: str) -> dict[str, str]:
    try:
        return TABLES[table]
    except KeyError:
        raise ValueError(f"unknown prepared table {table!r}; expected one of {list(TABLES)}") from None


def table_frame(table: str, data: Mapping[str, Any]) -> pd.DataFrame:
    """A frame of ``table`` from one sequence (or array) per contract column, cast to its dtype."""
    import pandas as pd

    contract = _contract(table)
    if set(data) != set(contract):
        raise ValueError(f"{table}: columns {sorted(set(data) ^ set(contract))} differ from the contract")

    def cast(values: Any, dtype: str) -> Any:
        if dtype[0].isupper() or dtype == "string":  # a pandas extension dtype: nulls allowed
            return pd.array(values, dtype=dtype)
        return np.asarray(values, dtype=dtype)

    return pd.DataFrame({c: cast(data[c], dtype) for c, dtype in contract.items()})


def label_frame(records: Sequence[LabelLine], split: str) -> pd.DataFrame:
    """``labels`` rows of kept label lines (bits and group indices null for vehicles, vehicle
    groups null where the line does not label them)."""
    import pandas as pd

    n = len(records)
    bits = np.zeros((n, schema.N_BITS), np.int8)
    for i, r in enumerate(records):
        if r.bits is not None:
            bits[i] = r.bits
    groups = schema.bits_matrix_to_groups(bits) if n else np.zeros((0, len(schema.PEDESTRIAN_GROUPS)), np.int8)
    vehicle = np.array([r.domain != "pedestrian" for r in records], bool)
    data: dict[str, Any] = {
        "name": [r.name for r in records], "split": [split] * n, "domain": [r.domain for r in records],
        "attribute": [r.attribute for r in records], "caption": [r.caption for r in records],
    }
    for j, bit in enumerate(schema.PEDESTRIAN_BITS):
        data[bit] = pd.arrays.IntegerArray(bits[:, j].copy(), vehicle.copy())
    for j, g in enumerate(schema.PEDESTRIAN_GROUPS):
        data[g.name] = pd.arrays.IntegerArray(groups[:, j].astype(np.int8), vehicle.copy())
    for g in schema.VEHICLE_GROUPS:
        data[g.name] = [r.vehicle.get(g.name) for r in records]
    return table_frame("labels", data)


def labels_from_files(paths: list[str | Path]) -> pd.DataFrame:
    """A ``labels.parquet``-shaped frame of the kept lines of label files (used by mine-mapping)."""
    import pandas as pd

    frames = []
    for p in paths:
        kept, bad, _ = read_label_file(p)
        if bad:
            log.warning("%s: %d malformed lines skipped (first: line %d, %s)", p, len(bad), bad[0][0], bad[0][2])
        frames.append(label_frame(kept, Path(p).stem.split("_")[0]))
    return pd.concat(frames, ignore_index=True)


def write_table(prepared_dir: str | Path, table: str, frame: pd.DataFrame) -> Path:
    """Write ``frame`` as ``table`` under ``prepared_dir`` (Parquet, or CSV for the quarantine)."""
    if list(frame.columns) != columns(table):
        raise ValueError(f"{table}: columns {list(frame.columns)} are not the contract's {columns(table)}")
    from pipeline.formats.atomic import atomic_path

    path = Path(prepared_dir) / FILES[table]
    with atomic_path(path) as tmp:
        if path.suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return path


def read_table(prepared_dir: str | Path, table: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One prepared table from ``prepared_dir`` (see :func:`read_table_file`)."""
    _contract(table)
    return read_table_file(Path(prepared_dir) / FILES[table], table, columns)


def read_table_file(path: str | Path, table: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The prepared table ``table`` stored at ``path`` (optionally only ``columns``).

    ``FileNotFoundError`` naming the file when ingest has not written it; the quarantine comes
    back as text (empty fields as ``""``), ``ValueError`` when it lacks a contract column.
    """
    import pandas as pd

    contract = _contract(table)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the ingest stage first")
    if path.suffix == ".parquet":
        return pd.read_parquet(path, columns=None if columns is None else list(columns))
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in (columns or contract) if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (expected {', '.join(contract)})")
    return frame if columns is None else frame[list(columns)]
