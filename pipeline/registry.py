"""Stage ``register`` and the ``promote`` command: the ensemble from challenger to production.

``register`` logs the served ensemble (:mod:`pipeline.serving`) as a new version of
``register.model_name`` with alias ``challenger``. Its tags are few (the registry page stays
readable): ``metrics`` (every validation figure, JSON, under its DVC name:
``val.all.official_map10``, ``val.pedestrian.hit1``, ``classifiers.mA``), the promoted figure again
on its own (``register.metric``, the one column worth seeing), ``metric_definition`` (the
``relevance`` and ``top_k`` the figures were computed under), ``ranker`` (distance, members),
``lineage`` (git commit, DVC experiment, data hash) and ``validation`` = passed / failed / missing,
read from the validate stage's summary.

``promote`` moves alias ``production`` to the best version whose validation passed, only when it
beats the current holder by ``margin`` on the same metric (higher is better), and only among
versions whose metric was computed under the same definition as production's (or, with no
production yet, as the newest version's): a figure judged with ``relevance=label`` or another
``top_k`` is another figure. An unknown metric is refused with the list of known ones. Versions
whose validation did not pass are never promoted. Every decision is written into version tags
(``promotion.decision``, ``promotion.reason``, and ``promotion.record``: metric, margin, both
figures, when and by whom, as JSON), except in a dry run.

Crash consistency (docs/reliability.md). A version is created with ``registration=incomplete``
(in the same call as its other tags) and tagged ``registration=complete`` only as the last step,
after alias ``challenger``; only complete versions are promoted. A promotion writes the candidate's
record (``promotion.state=pending``) before it moves ``production`` and ``applied`` after. The next
``register`` or ``promote`` repairs what a killed one left (:func:`repair`): an incomplete version
that holds ``challenger`` is completed (only the final tag was missing), any other is marked
``abandoned``; a pending promotion becomes ``applied`` or ``interrupted`` by where the alias is.
Every decision (promote, no-op, refusal, repair) is also appended to the registered model's
history: one tag ``promotion.history.<UTC time>.<pid>`` per decision, a JSON line
(:func:`history`, ``python -m pipeline promote --history``); no decision overwrites another's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pipeline.config import Params

log = logging.getLogger(__name__)

CHALLENGER, PRODUCTION = "challenger", "production"
#: Version tag: ``incomplete`` from creation until the last step of register, then ``complete``
#: (``abandoned`` when a killed register left it). A version without it predates the tag.
REGISTRATION = "registration"
#: Version tag of a promotion record: ``pending`` before the alias moves, ``applied`` after.
PROMOTION_STATE = "promotion.state"
HISTORY_PREFIX = "promotion.history."
#: Version tag beside ``promotion.decision`` / ``promotion.reason``: the rest of the decision as JSON
#: (metric, margin, both figures, when, by whom).
RECORD_TAG = "promotion.record"
#: A leftover whose owner cannot be checked (another host) is taken as dead after this long.
STALE_AFTER_S = 3600.0
#: Tests set it to a fault point's name to kill the process there with SIGKILL (a real crash).
FAULT_ENV = "TRACK2_FAULT_AT"


#: What MLflow's stores raise when two writers upsert the same tag or alias at once (read, then
#: insert): the second writer's retry finds the row and updates it.
_RACES = ("UNIQUE constraint failed", "database is locked", "IntegrityError", "Duplicate entry",
          "duplicate key value")


class _RaceSafe:
    """A client whose ``set_*`` / ``delete_*`` calls are retried (5 tries) after a write race."""

    def __init__(self, client: Any):
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not (callable(attr) and name.startswith(("set_", "delete_"))):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            for attempt in range(5):
                try:
                    return attr(*args, **kwargs)
                except Exception as e:
                    if attempt == 4 or not any(r in str(e) for r in _RACES):
                        raise
                    log.debug("%s raced another writer (%s); retrying", name, str(e).splitlines()[0][:120])
                    time.sleep(0.05 * (attempt + 1))

        return call


def race_safe(client: Any) -> Any:
    return client if isinstance(client, _RaceSafe) else _RaceSafe(client)


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == point:
        log.warning("fault injection: SIGKILL at %s", point)
        os.kill(os.getpid(), signal.SIGKILL)


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


#: Version tags (module docstring): every figure, the definition it was computed under, lineage.
METRICS_TAG, DEFINITION_TAG, RANKER_TAG, LINEAGE_TAG = "metrics", "metric_definition", "ranker", "lineage"


class UnknownMetric(RegistryError):
    """``promote --metric`` names a figure no version carries."""


def metric_figures(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``{"val.all.official_map10": 0.61, "val.pedestrian.hit1": ..., "classifiers.mA": ...}``:
    the validation figures of a metrics.json under the names DVC shows them by."""
    out: dict[str, float] = {}
    for domain, ms in metrics.get("val", {}).items():
        for name, value in ms.items():
            if name != "n_queries" and isinstance(value, (int, float)) and math.isfinite(value):
                out[f"val.{domain}.{name}"] = round(float(value), 6)
    for name, value in metrics.get("classifiers", {}).items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[f"classifiers.{name}"] = round(float(value), 6)
    return out


def version_tags(metrics: Mapping[str, Any], definition: Mapping[str, Any], headline: str,
                 lineage: Mapping[str, str]) -> dict[str, str]:
    """The compact tags of a new version: the figures and their definition as JSON, lineage as
    JSON, and ``headline`` (the promoted figure) on its own so the registry page shows it."""
    figures = metric_figures(metrics)
    tags = {METRICS_TAG: json.dumps(figures, sort_keys=True),
            DEFINITION_TAG: json.dumps(dict(definition), sort_keys=True),
            LINEAGE_TAG: json.dumps(dict(lineage), sort_keys=True)}
    if headline in figures:
        tags[headline] = f"{figures[headline]:.6f}"
    return tags


_RETRIEVAL_FIGURES = ("official_map10", "standard_map10", "hit1", "hit5", "hit10")


def _current_name(key: str) -> str:
    """A figure's name as versions registered before the ``metrics`` tag spelled it
    (``val_official_map10``, ``val_pedestrian_hit1``, ``val_router_accuracy``) in today's DVC
    names, so old and new versions compare; any other name unchanged."""
    if not key.startswith("val_"):
        return key
    rest = key[4:]
    if rest in _RETRIEVAL_FIGURES:
        return f"val.all.{rest}"
    domain, _, figure = rest.partition("_")
    if figure in _RETRIEVAL_FIGURES:
        return f"val.{domain}.{figure}"
    return f"classifiers.{rest}"


def figures_of(version: Any) -> dict[str, float]:
    """A version's figures: its ``metrics`` tag, plus numeric ``val*`` tags (set by hand, or by
    versions registered before the ``metrics`` tag, under their old names: :func:`_current_name`)."""
    tags = version.tags
    out: dict[str, float] = {}
    for key, value in tags.items():
        if key.startswith("val"):
            try:
                out[_current_name(key)] = float(value)
            except (TypeError, ValueError):
                pass
    try:
        recorded = json.loads(tags.get(METRICS_TAG, "{}"))
    except (TypeError, ValueError):
        recorded = {}
    if isinstance(recorded, dict):
        out.update({k: float(v) for k, v in recorded.items() if isinstance(v, (int, float))})
    return {k: v for k, v in out.items() if math.isfinite(v)}


def definition_of(version: Any) -> str | None:
    """The metric definition a version's figures were computed under, as text, or None."""
    raw = version.tags.get(DEFINITION_TAG)
    try:
        d = json.loads(raw) if raw else None
    except (TypeError, ValueError):
        return raw
    return ", ".join(f"{k}={d[k]}" for k in sorted(d)) if isinstance(d, dict) else None


@dataclass(frozen=True)
class RegisterIO:
    retrieval: Path   # in: the retrieve stage's folder (metrics.json, ranker.json, gallery_test.npz)
    mapping: Path     # in: the caption mapping, bundled into the served model
    validation: Path  # in: validate's gate.json (a version that failed it is never promoted)
    queries: Path     # in: the prepared queries.parquet (two test captions as the input example)
    report: Path      # out: the version registered, its aliases and the promotion decision
    baseline: Path | None = None  # in: the baseline stage's folder: its dual encoder reads what the mapping cannot


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
        fallback = None
        if io.baseline is not None:  # the everyday-caption fallback (pipeline/baseline/combine.py)
            from pipeline.baseline.combine import fallback_artifacts

            fallback = fallback_artifacts(io.baseline)
        artifacts = serving.write_artifacts(Path(tmp), io.retrieval / "gallery_test.npz", io.mapping,
                                            ranker["distance"], ranker["top_k"], r.mapping_loader, fallback)
        if tracking.active_run() is None:
            answer = serving.answer(artifacts, captions)
            report = {"model": r.model_name, "registered": False, "validation": status,
                      "example": {c: names[:3] for c, names in zip(captions, answer["image_names"])}}
        else:
            report = _register(params, metrics, ranker, status, artifacts, captions, io.queries)
    from pipeline.stage import write_atomic

    write_atomic(io.report, json.dumps(report, indent=2))
    return report


def _register(params: Params, metrics: dict, ranker: dict, status: str, artifacts: dict[str, str],
              captions: list[str], queries: Path) -> dict[str, Any]:
    """Log, register and alias the model in the active run; promote when asked; the report.

    Order matters for a crash at any point: the model is logged before the version exists; the
    version is created ``incomplete`` with every other tag; ``challenger`` moves; ``complete`` is
    the last tag. Leftovers of a killed run are repaired first."""
    import mlflow
    from mlflow import MlflowClient

    from pipeline import serving, tracking

    r = params.register
    client = race_safe(MlflowClient())
    repaired = repair(client, r.model_name)
    run_id = tracking.active_run().info.run_id
    definition = {"relevance": ranker["relevance"], "top_k": ranker["top_k"]}
    tags = {**version_tags(metrics, definition, r.metric, tracking.standard_tags((queries.parent,))),
            RANKER_TAG: json.dumps({"distance": ranker["distance"], "members": ranker["members"]}, sort_keys=True),
            "validation": status, REGISTRATION: "incomplete", "registration.run_id": run_id}
    mlflow.log_metrics(metric_figures(metrics))
    info = serving.log_ensemble("ensemble", artifacts, captions, code_paths=[str(Path(__file__).resolve().parent)])
    _fault("register:after-log-model")
    _ensure_model(client, r.model_name)
    version = mlflow.register_model(info.model_uri, r.model_name, tags=tags)
    v = str(version.version)
    _fault("register:after-create")
    client.set_registered_model_alias(r.model_name, CHALLENGER, v)
    _fault("register:after-alias")
    client.set_model_version_tag(r.model_name, v, REGISTRATION, "complete")  # the last step
    log.info("registered %s version %s as %s (validation %s, %s=%s)", r.model_name, v,
             CHALLENGER, status, r.metric, tags.get(r.metric))
    if status != "passed":
        log.warning("version %s: validation %s - it can never be promoted", v, status)
    decision = promote(client, r.model_name, r.metric, r.margin) if r.promote else None
    return {"model": r.model_name, "registered": True, "version": v, "validation": status,
            "metric": r.metric, "value": tags.get(r.metric), "repaired": repaired,
            "promotion": dataclasses.asdict(decision) if decision else None,
            "aliases": {k: str(x) for k, x in client.get_registered_model(r.model_name).aliases.items()}}


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
    refused: dict[str, str] = field(default_factory=dict)  # version -> why it cannot be promoted
    history_key: str | None = None  # the registered model's tag that keeps this decision


def _value(version: Any, metric: str) -> float | None:
    return figures_of(version).get(metric)


def refusal(version: Any, metric: str, definition: str | None = None) -> str | None:
    """Why ``version`` cannot be promoted on ``metric`` (computed under ``definition`` when given),
    or None when it can."""
    status = getattr(version, "status", None)
    if status not in (None, "READY"):
        return f"status {status}"
    registration = version.tags.get(REGISTRATION)
    if registration not in (None, "complete"):
        return f"registration {registration} (its register run did not finish)"
    validation = version.tags.get("validation", "missing")
    if validation != "passed":
        return f"validation {validation}"
    if _value(version, metric) is None:
        return f"no {metric!r} figure"
    if definition is not None and definition_of(version) != definition:
        return f"{metric} computed under {definition_of(version) or 'an unrecorded definition'}, not {definition}"
    return None


def reference_definition(versions: list[Any], holder: Any) -> str | None:
    """The definition figures are compared under: production's, else the newest complete version's."""
    if holder is not None:
        return definition_of(holder)
    for v in sorted(versions, key=lambda v: -int(v.version)):
        if v.tags.get(REGISTRATION) in (None, "complete") and definition_of(v) is not None:
            return definition_of(v)
    return None


def known_metrics(versions: list[Any]) -> list[str]:
    """Every figure some version of the model carries (what ``promote --metric`` accepts)."""
    return sorted({k for v in versions for k in figures_of(v)})


def _alias(client: Any, name: str, alias: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if getattr(e, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _by() -> str:
    """``host pid started``: who wrote a record (:func:`pipeline.tracking.owner_tags`)."""
    from pipeline import tracking

    t = tracking.owner_tags()
    return f"{t[tracking.HOST_TAG]} {t[tracking.PID_TAG]} {t[tracking.STARTED_TAG]}".strip()


def _by_alive(by: str) -> bool | None:
    from pipeline import tracking

    parts = by.split()
    if len(parts) < 2:
        return None
    return tracking.owner_alive({tracking.HOST_TAG: parts[0], tracking.PID_TAG: parts[1],
                                 tracking.STARTED_TAG: parts[2] if len(parts) > 2 else ""})


def _age_s(version: Any) -> float:
    ms = getattr(version, "last_updated_timestamp", None) or getattr(version, "creation_timestamp", None) or 0
    return time.time() - ms / 1000.0


def append_history(client: Any, name: str, entry: dict[str, Any]) -> str:
    """Add one decision to the registered model's history (a tag of its own); return the key."""
    t = time.time()
    key = (f"{HISTORY_PREFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime(t))}.{int(t % 1 * 1e6):06d}Z"
           f".{os.getpid()}")
    entry = {"time": _now(), **entry, "by": _by()}
    client.set_registered_model_tag(name, key, json.dumps(entry, sort_keys=False))
    return key


def history(client: Any, name: str) -> list[dict[str, Any]]:
    """Every recorded decision about ``name``, oldest first (each with its tag ``key``)."""
    tags = client.get_registered_model(name).tags
    out = []
    for key in sorted(k for k in tags if k.startswith(HISTORY_PREFIX)):
        try:
            out.append({"key": key, **json.loads(tags[key])})
        except (ValueError, TypeError):
            out.append({"key": key, "unreadable": tags[key]})
    return out


def format_history(entries: list[dict[str, Any]]) -> str:
    """The history as readable lines: time, decision, candidate, production after, reason."""
    lines = []
    for e in entries:
        if "unreadable" in e:
            lines.append(f"{e['key']}: {e['unreadable']}")
            continue
        refused = f"; refused {e['refused']}" if e.get("refused") else ""
        lines.append(f"{e.get('time', '?')}  {e.get('decision', '?'):<9} candidate {e.get('candidate') or '-'}"
                     f"  production {e.get('production') or '-'}  {e.get('reason', '')}{refused}")
    return "\n".join(lines)


def repair(client: Any, name: str) -> list[str]:
    """Repair what killed ``register`` / ``promote`` runs left in ``name``; return what was done.

    - ``registration=incomplete`` whose run is over (or whose process is gone): completed when it
      holds ``challenger`` (only the final tag was missing), otherwise marked ``abandoned``.
      The run, when still RUNNING with a dead owner, is ended KILLED.
    - ``promotion.state=pending`` whose writer is gone: ``applied`` if it holds ``production``,
      ``interrupted`` otherwise; either way a history entry says so.
    Work still in progress in a live process (or, on another host, younger than an hour) is left.
    """
    from mlflow.exceptions import MlflowException

    from pipeline import tracking

    client = race_safe(client)
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        return []
    done: list[str] = []
    challenger = _alias(client, name, CHALLENGER)
    holder = _alias(client, name, PRODUCTION)
    cv = None if challenger is None else str(challenger.version)
    hv = None if holder is None else str(holder.version)
    for v in versions:
        ver, tags = str(v.version), v.tags
        if tags.get(REGISTRATION) == "incomplete":
            run_id = tags.get("registration.run_id") or getattr(v, "run_id", None)
            run = None
            if run_id:
                try:
                    run = client.get_run(run_id)
                except MlflowException:
                    run = None
            if run is None and _age_s(v) < STALE_AFTER_S:
                continue  # no run to ask: a register may still be going on
            if run is not None and run.info.status == "RUNNING":
                alive = tracking.owner_alive(run.data.tags)
                if alive or (alive is None and _age_s(v) < STALE_AFTER_S):
                    continue  # a register still going on
                client.set_tag(run_id, "track2.ended_by", f"ended KILLED by repair at {_now()}: its "
                               "process died during register")
                client.set_terminated(run_id, "KILLED")
            status = "ended" if run is None else run.info.status
            if ver == cv:
                client.set_model_version_tag(name, ver, "registration.repaired",
                                             f"{_now()}: completed by repair (run {run_id} {status} after "
                                             "moving challenger, before its last tag)")
                client.set_model_version_tag(name, ver, REGISTRATION, "complete")
                what = f"version {ver}: registration completed (it holds {CHALLENGER}; only the last tag was missing)"
            else:
                client.set_model_version_tag(name, ver, "registration.repaired",
                                             f"{_now()}: abandoned by repair (run {run_id} {status} before "
                                             f"moving {CHALLENGER}); never promoted")
                client.set_model_version_tag(name, ver, REGISTRATION, "abandoned")
                what = f"version {ver}: registration abandoned (its register run died before {CHALLENGER})"
            append_history(client, name, {"decision": "repair", "candidate": ver, "production": hv,
                                          "reason": what})
            done.append(what)
        if tags.get(PROMOTION_STATE) == "pending":
            alive = _by_alive(promotion_record(v).get("by", ""))
            if alive or (alive is None and _age_s(v) < STALE_AFTER_S):
                continue  # a promote still going on
            state = "applied" if ver == hv else "interrupted"
            client.set_model_version_tag(name, ver, PROMOTION_STATE, state)
            what = (f"version {ver}: promotion applied (its promote died after moving {PRODUCTION})"
                    if state == "applied" else
                    f"version {ver}: promotion interrupted before moving {PRODUCTION} (holder stays {hv})")
            incumbent = promotion_record(v).get("incumbent")
            if state == "applied" and incumbent:
                client.set_model_version_tag(name, str(incumbent), "promotion.replaced_by", ver)
            append_history(client, name, {"decision": "repair", "candidate": ver, "production": hv,
                                          "reason": what})
            done.append(what)
    for what in done:
        log.warning("repaired %s: %s", name, what)
    return done


def promote(client: Any, name: str, metric: str = "val.all.official_map10", margin: float = 0.0,
            dry_run: bool = False) -> Decision:
    """Move ``production`` to the best validated, complete version if it beats the holder by
    ``margin`` on a figure computed the same way; record the decision (except in a dry run, which
    changes nothing). An unknown ``metric`` raises :class:`UnknownMetric` before anything changes."""
    client = race_safe(client)
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise RegistryError(f"no registered versions of {name!r} (run the register stage first)")
    metric = _current_name(metric)  # the old spelling (val_official_map10) still names its figure
    known = known_metrics(versions)
    if metric not in known:
        raise UnknownMetric(f"unknown metric {metric!r}: versions of {name} carry {', '.join(known) or 'none'}")
    if not dry_run and repair(client, name):
        versions = client.search_model_versions(f"name='{name}'")
    holder = _alias(client, name, PRODUCTION)
    definition = reference_definition(versions, holder)
    refused = {str(v.version): why for v in versions if (why := refusal(v, metric, definition)) is not None}
    scored = [(v, _value(v, metric)) for v in versions if str(v.version) not in refused]
    for ver, why in sorted(refused.items(), key=lambda kv: int(kv[0])):
        log.info("version %s refused: %s", ver, why)
    held = _value(holder, metric) if holder is not None else None
    hv = None if holder is None else str(holder.version)
    if not scored:
        d = Decision("noop", f"no version with validation passed, a complete registration and a {metric!r} tag",
                     incumbent=hv, incumbent_value=held, refused=refused)
        log.info("promote: nothing to do - %s", d.reason)
        if not dry_run:
            _record_refusals(client, name, versions, refused)
            d.history_key = append_history(client, name, _entry(d, metric, margin, hv))
        return d
    best, value = max(scored, key=lambda vx: (vx[1], int(vx[0].version)))
    bv = str(best.version)
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
    d.refused = refused
    log.info("promote%s: %s - %s", " (dry run)" if dry_run else "", d.action, d.reason)
    if dry_run:
        return d
    now = _now()
    record = {"promotion.decision": d.action, "promotion.reason": d.reason,
              RECORD_TAG: _record(metric, margin, value, d.incumbent, d.incumbent_value, now)}
    if d.action == "promote":
        # The record first (pending), then the alias, then "applied": a crash anywhere leaves a
        # record that repair() can settle, never an alias that the tags contradict.
        for k, v in {**record, PROMOTION_STATE: "pending"}.items():
            client.set_model_version_tag(name, bv, k, v)
        _fault("promote:after-record")
        client.set_registered_model_alias(name, PRODUCTION, bv)
        _fault("promote:after-alias")
        if hv is not None:
            client.set_model_version_tag(name, hv, "promotion.replaced_by", bv)
        client.set_model_version_tag(name, bv, PROMOTION_STATE, "applied")
    elif bv != hv:
        for k, v in record.items():  # a challenger that lost keeps its own record
            client.set_model_version_tag(name, bv, k, v)
    else:
        # The holder's promotion record (the decision that moved the alias) stays as it is.
        client.set_model_version_tag(name, bv, "promotion.last_check", f"{now} noop: {d.reason}")
    _record_refusals(client, name, versions, refused)
    # Other challengers that lost (not the best): a record of their own, once.
    for v, x in scored:
        if str(v.version) not in (bv, hv) and "promotion.decision" not in v.tags:
            for k, val in {"promotion.decision": "noop",
                           "promotion.reason": f"version {v.version} ({x:.4f}) is not the best validated "
                                               f"version on {metric}: version {bv} has {value:.4f}",
                           RECORD_TAG: _record(metric, margin, x, d.incumbent, d.incumbent_value, now)}.items():
                client.set_model_version_tag(name, str(v.version), k, val)
    d.history_key = append_history(client, name, _entry(d, metric, margin, bv if d.action == "promote" else hv))
    return d


def _record(metric: str, margin: float, value: float, incumbent: str | None, incumbent_value: float | None,
            now: str) -> str:
    return json.dumps({"metric": metric, "margin": margin, "value": round(value, 6), "incumbent": incumbent,
                       "incumbent_value": None if incumbent_value is None else round(incumbent_value, 6),
                       "time": now, "by": _by()})


def promotion_record(version: Any) -> dict[str, Any]:
    """The JSON part of a version's promotion record (empty without one)."""
    try:
        record = json.loads(version.tags.get(RECORD_TAG, "{}"))
    except (TypeError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _entry(d: Decision, metric: str, margin: float, production: str | None) -> dict[str, Any]:
    return {"decision": d.action, "candidate": d.candidate, "candidate_value": d.candidate_value,
            "incumbent": d.incumbent, "incumbent_value": d.incumbent_value, "production": production,
            "metric": metric, "margin": margin, "reason": d.reason, "refused": d.refused}


def _record_refusals(client: Any, name: str, versions: list[Any], refused: dict[str, str]) -> None:
    """A refused version without any promotion record gets one (once: a refusal does not change;
    an incomplete registration may still be under way, so it gets none)."""
    for v in versions:
        ver = str(v.version)
        if ver in refused and "promotion.decision" not in v.tags and v.tags.get(REGISTRATION) != "incomplete":
            client.set_model_version_tag(name, ver, "promotion.decision", "refused")
            client.set_model_version_tag(name, ver, "promotion.reason", refused[ver])
            client.set_model_version_tag(name, ver, RECORD_TAG, json.dumps({"time": _now(), "by": _by()}))
