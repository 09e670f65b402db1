"""The repository's own MLflow store moves with the repository.

The default store is ``<repo>/mlflow.db`` with artifacts under ``<repo>/mlartifacts``, and MLflow
records artifact locations as absolute ``file://`` URIs. A copied or moved clone (or the copy
``dvc exp run --temp`` makes, when the tracking URI points into it) would then keep writing
into, and reading from, the original folder. :func:`follow_repository` rewrites those URIs to the
current root before the store is used - only for a SQLite store that lies inside the repository,
never for a shared server or a database elsewhere.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

ARTIFACTS = "mlartifacts"
#: (table, column) pairs that hold artifact URIs in MLflow 3's SQL schema.
URI_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
               ("model_versions", "source"), ("model_versions", "storage_location"),
               ("logged_models", "artifact_location"))


def _db_path(tracking_uri: str) -> Path | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).resolve()


def follow_repository(tracking_uri: str, root: Path) -> int:
    """Point the artifact URIs of a SQLite store inside ``root`` at ``root/mlartifacts``; return
    how many rows changed (0 when the store is elsewhere, new, or already in place)."""
    db = _db_path(tracking_uri)
    root = root.resolve()
    if db is None or not db.exists() or root not in db.parents:
        return 0
    new = (root / ARTIFACTS).as_uri()
    with sqlite3.connect(db) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "experiments" not in tables:
            return 0
        olds = {loc.split(f"/{ARTIFACTS}")[0] + f"/{ARTIFACTS}"
                for (loc,) in con.execute("SELECT artifact_location FROM experiments")
                if loc and loc.startswith("file://") and f"/{ARTIFACTS}" in loc}
        olds.discard(new)
        changed = 0
        for old in olds:
            for table, column in URI_COLUMNS:
                if table not in tables:
                    continue
                cur = con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608
                                  f"WHERE {column} LIKE ? ESCAPE '\\'",
                                  (new, len(old) + 1, old.replace("%", "\\%").replace("_", "\\_") + "%"))
                changed += cur.rowcount
    if changed:
        log.info("MLflow store %s moved with its repository: %d artifact locations now under %s",
                 db, changed, root / ARTIFACTS)
    return changed
