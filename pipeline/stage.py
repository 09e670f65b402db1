"""How every stage runs: ``run(params, io) -> report``, wrapped in one MLflow run.

Each stage module defines a frozen ``<Stage>IO`` dataclass (the files it reads and writes, given
on its command line by ``dvc.yaml``) and ``run(params, io)``, which reads ``params.base`` plus its
own section and returns its report: the headline figures it also wrote to disk. :func:`execute`
is the one place MLflow meets a stage: a run named after the stage, tagged (commit, DVC
experiment, data hash), with the section's params, every finite number of the report as a metric,
the report itself and the files the IO's ``artifacts()`` names. With ``track=False`` the stage
runs the same and MLflow is not touched; code inside a stage that logs more (train's child runs)
asks :func:`pipeline.tracking.active_run` first.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

from pipeline.config import Params

log = logging.getLogger(__name__)


class StageIO(Protocol):
    """What :func:`execute` needs of a stage's IO dataclass (every field a path or None).

    ``artifacts()`` names the files worth keeping with the run: a path (a folder keeps its
    name), or ``(path, folder)`` to file it under ``folder``."""

    def artifacts(self) -> list[Path | tuple[Path, str]]: ...


IO = TypeVar("IO")


def paths_of(io: Any) -> dict[str, Path | None]:
    """The IO dataclass as ``{field: path}`` (what the stage's MLflow run records as tags)."""
    return {f.name: getattr(io, f.name) for f in fields(io)}


def metrics_of(report: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every finite number of a nested report as a flat, MLflow-safe metric name."""
    out: dict[str, float] = {}
    for key, value in report.items():
        name = re.sub(r"[^\w\-./ ]", "_", f"{prefix}{key}")
        if isinstance(value, dict):
            out.update(metrics_of(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def execute(stage: str, run: Callable[[Params, IO], dict[str, Any]], params: Params, io: IO, *,
            track: bool = True, section: str | None = None, data: tuple[Path, ...] = (),
            tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one stage and, with ``track``, record it as one MLflow run; return its report.

    ``section`` is the params section logged (default: ``stage``); ``data`` the inputs whose
    content hash tags the run. A stage that raises leaves its run marked FAILED.
    """
    if not track:
        return run(params, io)
    import mlflow

    from pipeline import tracking

    logged = {**params.section(section or stage), "seed": params.base.seed}
    with tracking.stage_run(params.base.experiment, stage, logged, data_paths=data, **(tags or {})):
        report = run(params, io)
        mlflow.set_tags({f"io.{k}": str(v) for k, v in paths_of(io).items() if v is not None})
        if isinstance(report.get("status"), str):
            mlflow.set_tag("status", report["status"])
        mlflow.log_metrics(metrics_of(report))
        mlflow.log_dict(report, "report.json")
        artifacts = getattr(io, "artifacts", lambda: [])()
        for item in artifacts:
            path, folder = item if isinstance(item, tuple) else (item, None)
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=folder or path.name)
            elif path.exists():
                mlflow.log_artifact(str(path), artifact_path=folder)
    return report
