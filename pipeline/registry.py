"""Stage ``register`` and the ``promote`` command: the ensemble from challenger to production.

``register`` logs the served ensemble (:mod:`pipeline.serving`) as a new version of
``register.model_name`` with alias ``challenger``. Its version tags carry the validation metrics
(``val_<metric>`` overall, ``val_<domain>_<metric>`` per domain), the data hash, the git commit and
``validation`` = passed / failed / missing, read from the validate stage's summary.

``promote`` moves alias ``production`` to the best version whose validation passed, only when it
beats the current holder by ``margin`` on the same metric (higher is better). Versions whose
validation did not pass are never promoted. Every decision is written into version tags
(``promotion.*``: decision, reason, metric, both figures), except in a dry run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pipeline.config import Params

log = logging.getLogger(__name__)

CHALLENGER, PRODUCTION = "challenger", "production"


class RegistryError(ValueError):
    """Missing inputs or an impossible registry operation."""


def validation_status(summary: Path) -> str:
    """``passed``/``failed`` from the validate stage's summary.json, ``missing`` without one.

    Reads the first boolean among ``success``, ``passed``, ``ok`` (or a ``status`` string).
    """
    if not summary.exists():
        return "missing"
    data = json.loads(summary.read_text())
    for key in ("success", "passed", "ok"):
        if isinstance(data.get(key), bool):
            return "passed" if data[key] else "failed"
    status = str(data.get("status", "")).lower()
    if status in ("passed", "success", "ok"):
        return "passed"
    if status in ("failed", "failure", "error"):
        return "failed"
    raise RegistryError(f"{summary}: cannot tell whether validation passed (no success/passed/status key)")


def metric_tags(metrics: Mapping[str, Any]) -> dict[str, str]:
    """``{"val_official_map10": "0.61", "val_pedestrian_official_map10": ...}`` from metrics.json."""
    out = {}
    for domain, ms in metrics.get("val", {}).items():
        for name, value in ms.items():
            if name != "n_queries" and isinstance(value, (int, float)) and math.isfinite(value):
                out[f"val_{name}" if domain == "all" else f"val_{domain}_{name}"] = f"{value:.6f}"
    for name, value in metrics.get("classifiers", {}).items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[f"val_{name}"] = f"{value:.6f}"
    return out


@dataclass(frozen=True)
class RegisterIO:
    retrieval: Path   # in: the retrieve stage's folder (metrics.json, ranker.json, gallery_test.npz)
    mapping: Path     # in: the caption mapping, bundled into the served model
    validation: Path  # in: validate's summary.json (a version that failed it is never promoted)
    queries: Path     # in: the prepared queries.parquet (two test captions as the input example)
    report: Path      # out: the version registered, its aliases and the promotion decision


def run(params: Params, io: RegisterIO) -> dict[str, Any]:
    """The stage: log the ensemble as a pyfunc in the stage's run, register it as ``challenger``,
    promote when ``register.promote``; write and return the report.

    Untracked (``--no-track``) it builds the model in a temporary folder and answers the input
    example with it - a check that the bundle works - and registers nothing.
    """
    from pipeline import serving, tracking

    r = params.register
    needed = [io.retrieval / f for f in ("metrics.json", "ranker.json", "gallery_test.npz")] + [io.mapping]
    missing = [str(f) for f in needed if not f.exists()]
    if missing:
        raise RegistryError(f"missing {missing} (run the retrieve stage first)")
    metrics = json.loads((io.retrieval / "metrics.json").read_text())
    ranker = json.loads((io.retrieval / "ranker.json").read_text())  # the served model ranks as retrieve did
    status = validation_status(io.validation)
    captions = _example_captions(io.queries)
    with tempfile.TemporaryDirectory() as tmp:  # log_model copies the artifacts into the model
        artifacts = serving.write_artifacts(Path(tmp), io.retrieval / "gallery_test.npz", io.mapping,
                                            ranker["distance"], ranker["top_k"], r.mapping_loader)
        if tracking.active_run() is None:
            answer = serving.answer(artifacts, captions)
            report = {"model": r.model_name, "registered": False, "validation": status,
                      "example": {c: names[:3] for c, names in zip(captions, answer["image_names"])}}
        else:
            report = _register(params, metrics, ranker, status, artifacts, captions, io.queries)
    io.report.parent.mkdir(parents=True, exist_ok=True)
    io.report.write_text(json.dumps(report, indent=2))
    return report


def _register(params: Params, metrics: dict, ranker: dict, status: str, artifacts: dict[str, str],
              captions: list[str], queries: Path) -> dict[str, Any]:
    """Log, register and alias the model in the active run; promote when asked; the report."""
    import mlflow
    from mlflow import MlflowClient

    from pipeline import serving, tracking

    r = params.register
    tags = {**metric_tags(metrics), "validation": status, "distance": ranker["distance"],
            "members": json.dumps(ranker["members"]), **tracking.standard_tags((queries.parent,))}
    mlflow.log_metrics({k: float(v) for k, v in metric_tags(metrics).items()})
    info = serving.log_ensemble("ensemble", artifacts, captions, code_paths=[str(Path(__file__).resolve().parent)])
    client = MlflowClient()
    _ensure_model(client, r.model_name)
    version = mlflow.register_model(info.model_uri, r.model_name, tags=tags)
    client.set_registered_model_alias(r.model_name, CHALLENGER, version.version)
    log.info("registered %s version %s as %s (validation %s, %s=%s)", r.model_name, version.version,
             CHALLENGER, status, r.metric, tags.get(r.metric))
    if status != "passed":
        log.warning("version %s: validation %s - it can never be promoted", version.version, status)
    decision = promote(client, r.model_name, r.metric, r.margin) if r.promote else None
    return {"model": r.model_name, "registered": True, "version": str(version.version), "validation": status,
            "metric": r.metric, "value": tags.get(r.metric),
            "promotion": dataclasses.asdict(decision) if decision else None,
            "aliases": {k: str(v) for k, v in client.get_registered_model(r.model_name).aliases.items()}}


def _ensure_model(client: Any, name: str) -> None:
    """Create the registered model (with a description) on first use."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Decoupled Track-2 retrieval ensemble "
                                       "(captions in, ranked image names and distances out).")


def _example_captions(path: Path) -> list[str]:
    """Two real test captions of ``queries.parquet`` (one per domain where possible) for the input example."""
    from pipeline.formats import read_table_file

    fallback = ["A female pedestrian is someone who is under 18 years old with her back to the camera.",
                "This is a white Audi Sedan."]
    try:
        q = read_table_file(path, "queries", columns=["split", "text"])
    except FileNotFoundError:
        return fallback
    texts = q.loc[q["split"] == "test", "text"].tolist()
    return [texts[0], texts[-1]] if len(texts) >= 2 else fallback


# --------------------------------------------------------------------------- promotion

@dataclass
class Decision:
    """The outcome of one promotion check."""

    action: str  # "promote" or "noop"
    reason: str
    candidate: str | None = None
    candidate_value: float | None = None
    incumbent: str | None = None
    incumbent_value: float | None = None


def _value(version: Any, metric: str) -> float | None:
    try:
        v = float(version.tags[metric])
    except (KeyError, ValueError):
        return None
    return v if math.isfinite(v) else None


def promote(client: Any, name: str, metric: str = "val_official_map10", margin: float = 0.0,
            dry_run: bool = False) -> Decision:
    """Move ``production`` to the best validated version if it beats the holder by ``margin``."""
    from mlflow.exceptions import MlflowException

    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise RegistryError(f"no registered versions of {name!r} (run the register stage first)")
    refused = [v for v in versions if v.tags.get("validation") != "passed"]
    scored = [(v, _value(v, metric)) for v in versions if v not in refused]
    scored = [(v, x) for v, x in scored if x is not None]
    for v in refused:
        log.info("version %s refused: validation %s", v.version, v.tags.get("validation", "missing"))
    try:
        holder = client.get_model_version_by_alias(name, PRODUCTION)
    except MlflowException:
        holder = None
    held = _value(holder, metric) if holder is not None else None
    if not scored:
        d = Decision("noop", f"no version with validation passed and a {metric!r} tag",
                     incumbent=getattr(holder, "version", None), incumbent_value=held)
        log.info("promote: nothing to do - %s", d.reason)
        return d
    best, value = max(scored, key=lambda vx: (vx[1], int(vx[0].version)))
    bv, hv = str(best.version), (None if holder is None else str(holder.version))
    if hv == bv:
        d = Decision("noop", f"production (version {hv}) is already the best validated "
                     f"version on {metric} ({value:.4f})", bv, value, hv, held)
    elif holder is None:
        d = Decision("promote", f"no production model yet; version {bv} is the best validated "
                     f"version on {metric} ({value:.4f})", bv, value)
    elif held is None:
        d = Decision("promote", f"production (version {hv}) has no {metric!r} figure; "
                     f"version {bv} has {value:.4f}", bv, value, hv)
    elif value > held + margin:
        d = Decision("promote", f"version {bv} beats production (version {hv}) on "
                     f"{metric}: {value:.4f} > {held:.4f} + margin {margin}", bv, value,
                     hv, held)
    else:
        d = Decision("noop", f"best validated version {bv} does not beat production (version "
                     f"{hv}) on {metric} by the margin: {value:.4f} <= {held:.4f} + {margin}",
                     bv, value, hv, held)
    log.info("promote%s: %s - %s", " (dry run)" if dry_run else "", d.action, d.reason)
    if dry_run:
        return d
    if d.action == "promote":
        client.set_registered_model_alias(name, PRODUCTION, bv)
        if hv is not None:
            client.set_model_version_tag(name, hv, "promotion.replaced_by", bv)
    tags = {"promotion.decision": d.action, "promotion.reason": d.reason, "promotion.metric": metric,
            "promotion.margin": str(margin), "promotion.value": f"{value:.6f}",
            "promotion.incumbent": str(d.incumbent or ""),
            "promotion.incumbent_value": "" if d.incumbent_value is None else f"{d.incumbent_value:.6f}",
            "promotion.time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for k, v in tags.items():
        client.set_model_version_tag(name, bv, k, v)
    return d
