"""MLflow conventions shared by every stage: where runs go and how they are tagged.

Runs live in one experiment (``base.experiment``) whose artifacts sit under the repository at an
absolute path, so ``dvc exp run --temp`` (which runs in a temporary copy) still logs to the same
place. Every run is tagged with the git commit, the DVC experiment name and the data hash of the
prepared tables, so a run in the MLflow UI can be traced back to code and data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)


def repo_root() -> Path:
    """The repository root: ``TRACK2_ROOT`` if set, else the folder above this package."""
    return Path(os.environ.get("TRACK2_ROOT", Path(__file__).resolve().parents[1])).resolve()


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set (the Makefile sets it), else ``sqlite:///<root>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def git_commit() -> str:
    """The current commit (with ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=repo_root(), check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=repo_root()).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_hash(*paths: str | Path) -> str:
    """A short content hash of files (folders are walked in sorted order)."""
    h = hashlib.sha256()
    for p in map(Path, paths):
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for f in files:
            if f.exists():
                h.update(f.name.encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def standard_tags(data_paths: tuple[str | Path, ...] = ()) -> dict[str, str]:
    """Tags every run carries: git commit, DVC experiment name, data hash."""
    tags = {
        "git_commit": git_commit(),
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
    }
    if data_paths:
        tags["data_hash"] = data_hash(*data_paths)
    return tags


def setup(experiment: str) -> str:
    """Point MLflow at the project's store and make sure ``experiment`` exists; return its id."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        artifacts = (repo_root() / "mlartifacts").as_uri()
        exp_id = mlflow.create_experiment(experiment, artifact_location=artifacts)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@contextmanager
def stage_run(experiment: str, stage: str, params: dict[str, Any] | None = None,
              data_paths: tuple[str | Path, ...] = (), **tags: str) -> Iterator[Any]:
    """Start a parent MLflow run for one pipeline stage, tagged and with its params logged."""
    import mlflow

    setup(experiment)
    with mlflow.start_run(run_name=stage, tags={"stage": stage, **standard_tags(data_paths), **tags}) as run:
        if params:
            mlflow.log_params(flatten(params))
        yield run


def active_run() -> Any:
    """The MLflow run the stage runs in, or None when it runs untracked (``--no-track``)."""
    mlflow = sys.modules.get("mlflow")
    return mlflow.active_run() if mlflow is not None else None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
