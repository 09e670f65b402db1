"""Where an MLflow run came from: the DVC experiment, its commit, and DVC's hashes of its data.

DVC sets ``DVC_EXP_NAME`` and ``DVC_EXP_BASELINE_REV`` in the environment of a stage it runs for
``dvc exp run`` (workspace, ``--temp`` or queued); ``dvc.lock`` holds the md5 DVC computed for
every stage output, so a stage's data deps carry the hashes the upstream stage recorded. These
become tags on every run (children too) and ``mlflow.log_input`` datasets, so a run in the UI
leads to the experiment (`dvc exp show`) and to the exact data (`dvc checkout`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml


def dvc_outputs(lock: Path = Path("dvc.lock")) -> dict[str, str]:
    """``{output path: md5}`` of every stage output recorded in ``dvc.lock`` (empty without one)."""
    if not lock.exists():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    return {o["path"]: o.get("md5", "") for s in stages.values() for o in s.get("outs", []) if "path" in o}


def dvc_hash(path: Path, outputs: dict[str, str] | None = None) -> str | None:
    """DVC's md5 of ``path``, or of the output it lies in (``<dir md5>:<relative path>``)."""
    outputs = dvc_outputs() if outputs is None else outputs
    rel = Path(os.path.relpath(path)).as_posix()
    if rel in outputs:
        return outputs[rel].removesuffix(".dir")
    for out, md5 in outputs.items():
        if rel.startswith(out.rstrip("/") + "/"):
            return f"{md5.removesuffix('.dir')}:{rel[len(out) + 1:]}"
    return None


def run_tags() -> dict[str, str]:
    """Tags every run carries: the DVC experiment (empty outside one) and the commit it started from."""
    tags = {"dvc.exp_name": os.environ.get("DVC_EXP_NAME", ""),
            "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", "")}
    return {k: v for k, v in tags.items() if v}


def run_name(stage: str) -> str:
    """``stage`` plus the DVC experiment it runs in, as the UI's run list shows it."""
    exp = os.environ.get("DVC_EXP_NAME")
    return f"{stage} · {exp}" if exp else stage


def _local_source(path: Path) -> Any:
    """The file as a local dataset source (MLflow registers that class twice and warns when it guesses)."""
    from mlflow.data.dataset_source_registry import get_registered_sources

    local = next(s for s in get_registered_sources() if s.__name__ == "LocalArtifactDatasetSource")
    return local(Path(os.path.relpath(path)).as_posix())  # the path as dvc.yaml names it


def log_inputs(paths: tuple[Path, ...], context: str) -> None:
    """``mlflow.log_input`` of each prepared table under ``paths`` (DVC's md5 as digest, the DVC
    path as source) and a ``dvc.deps`` tag with the hashes of all of them."""
    import mlflow

    from pipeline.formats import TABLES, read_table_file

    outputs = dvc_outputs()
    hashes: dict[str, Any] = {}
    for path in paths:
        hashes[str(path)] = dvc_hash(path, outputs)
        tables = [path / f"{t}.parquet" for t in TABLES if (path / f"{t}.parquet").exists()] if path.is_dir() \
            else [path] if path.suffix == ".parquet" else []
        for table in tables:
            digest = dvc_hash(table, outputs)
            frame = read_table_file(table, table.stem)
            mlflow.log_input(mlflow.data.from_pandas(frame, source=_local_source(table), name=table.stem,
                                                     digest=(digest or "")[:36] or None), context=context)
    mlflow.set_tag("dvc.deps", json.dumps(hashes, sort_keys=True))
