"""MLflow conventions shared by every stage: where runs go and how they are tagged.

Runs live in one experiment (``base.experiment``) whose artifacts sit under the repository at an
absolute path, so ``dvc exp run --temp`` (which runs in a temporary copy) still logs to the same
place. Every run is tagged with the git commit, the DVC experiment name and the data hash of the
prepared tables, so a run in the MLflow UI can be traced back to code and data.

Failing fast and cleanly (docs/reliability.md): every command that talks to MLflow goes through
:func:`connect`, which bounds MLflow's HTTP client (retries, per-request timeout) and checks that an
``http(s)`` tracking server answers within ``TRACK2_TRACKING_TIMEOUT`` seconds (default 10);
otherwise it raises :class:`TrackingError`, one line the CLI prints before exiting 2. A stage's run
is ended FAILED when the stage raises and KILLED on Ctrl-C or SIGTERM/SIGHUP; a run whose process
died without ending it (``kill -9``, power loss) is ended KILLED by the next stage that starts on
the same host (:func:`end_orphaned_runs`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

#: Seconds a tracking server has to answer before a command gives up (environment; default 10).
TIMEOUT_ENV = "TRACK2_TRACKING_TIMEOUT"
DEFAULT_TIMEOUT_S = 10.0
#: Tags naming the process that owns a run, so the next start can tell a dead owner from a live one.
HOST_TAG, PID_TAG, STARTED_TAG = "track2.host", "track2.pid", "track2.pid_started"


class TrackingError(RuntimeError):
    """MLflow cannot be reached or refused a call; the message is one line for the user."""


class Terminated(SystemExit):
    """SIGTERM/SIGHUP arrived while a stage ran: the run is ended KILLED, the exit code is 128+signal."""


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


def timeout_s() -> float:
    """``TRACK2_TRACKING_TIMEOUT`` in seconds (default 10); a bad value is a :class:`TrackingError`."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise TrackingError(f"{TIMEOUT_ENV} must be a number of seconds above 0, got {raw!r}")
    return value


def configure_http(timeout: float | None = None) -> None:
    """Bound MLflow's HTTP client so a dead server fails a call in seconds, not minutes.

    MLflow's defaults (7 retries with exponential backoff, 120 s per request) make a call to a
    stopped server hang about 4 minutes. Unless the user set MLflow's own variables, a request
    may take ``timeout`` seconds and is retried twice (backoff 0 s, then 2 s). Set
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``MLFLOW_HTTP_REQUEST_TIMEOUT`` to override.
    """
    t = timeout_s() if timeout is None else timeout
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # one line per retry otherwise
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(t))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.5")


def shown_uri(uri: str) -> str:
    """The tracking URI without credentials (``https://user:pw@host`` -> ``https://host``)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.scheme in ("http", "https") and "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    return urlunsplit(parts)


def check_reachable(uri: str, timeout: float | None = None) -> None:
    """For an ``http(s)`` URI: raise :class:`TrackingError` unless the server answers (any HTTP
    status counts) within ``timeout`` seconds. Other stores (sqlite, file) are not probed."""
    import ssl
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    t = timeout_s() if timeout is None else timeout
    started = time.monotonic()
    deadline = started + t
    reason, delay, attempts = "no answer", 0.5, 3
    for attempt in range(1, attempts + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=remaining).close()
            return
        except urllib.error.HTTPError:
            return  # it answered (e.g. behind a proxy without /health): MLflow takes it from here
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLError):
                return  # TLS settings are MLflow's business (MLFLOW_TRACKING_INSECURE_TLS, ...)
            reason = _reason(e.reason)
        except (OSError, ValueError) as e:
            reason = _reason(e)
        if attempt == attempts or time.monotonic() + delay >= deadline:
            break
        time.sleep(delay)
        delay *= 2
    raise TrackingError(
        f"tracking server {shown_uri(uri)} is unreachable ({reason}); gave up after "
        f"{time.monotonic() - started:.1f} s ({TIMEOUT_ENV}={t:g}). Start it, or point "
        f"MLFLOW_TRACKING_URI at a running server")


def _reason(e: BaseException | str) -> str:
    if isinstance(e, socket.timeout) or "timed out" in str(e):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def connect() -> str:
    """Point MLflow at the project's store with bounded HTTP calls; check a server answers."""
    import mlflow

    from pipeline.store import follow_repository

    configure_http()
    uri = tracking_uri()
    check_reachable(uri)
    follow_repository(uri, repo_root())  # a copied clone's own store points at its own artifacts
    mlflow.set_tracking_uri(uri)
    return uri


def as_tracking_error(e: BaseException, what: str) -> BaseException:
    """``e`` as a one-line :class:`TrackingError` when it is MLflow's (or its HTTP client's);
    otherwise ``e`` itself. The full traceback goes to the debug log (``--verbose``)."""
    if isinstance(e, TrackingError):
        return e
    mod = type(e).__module__.split(".")[0]
    if mod not in ("mlflow", "requests", "urllib3", "sqlalchemy"):
        return e
    log.debug("%s failed", what, exc_info=e)
    return TrackingError(f"{what}: {one_line(e)}")


def one_line(e: BaseException) -> str:
    """An MLflow error in one line: its message's first line; a failed HTTP call as "the tracking
    server ... stopped answering (reason)"."""
    message = str(getattr(e, "message", None) or e).strip()
    first = message.splitlines()[0] if message else type(e).__name__
    if "API request to" in first and ("error code 401 " in first or "error code 403 " in first):
        code = "401" if "error code 401 " in first else "403"
        first = (f"the tracking server {shown_uri(tracking_uri())} refused the credentials ({code}): "
                 "check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (docs/team.md)")
    elif "API request to" in first and "failed with" in first:
        first = f"the tracking server {shown_uri(tracking_uri())} stopped answering ({_api_reason(first)})"
    return first if len(first) <= 300 else first[:297] + "..."


def _api_reason(message: str) -> str:
    for needle, reason in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                           ("timeout", "timed out"), ("Max retries exceeded", "no answer after retries"),
                           ("Name or service not known", "unknown host")):
        if needle in message:
            return reason
    return "request failed"


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Turn MLflow's exceptions inside the block into a one-line :class:`TrackingError`."""
    try:
        yield
    except Exception as e:
        translated = as_tracking_error(e, what)
        if translated is e:
            raise
        raise translated from e


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store (so a ``--temp``
    experiment, run in a copy, still writes next to the store it logs to); a server decides itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    return (repo_root() / "mlartifacts").as_uri()


def setup(experiment: str) -> str:
    """Connect (:func:`connect`) and make sure ``experiment`` exists; return its id."""
    import mlflow

    uri = connect()
    with guard(f"MLflow experiment {experiment!r}"):
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            artifacts = artifact_root(uri)
            try:
                exp_id = mlflow.create_experiment(experiment, artifact_location=artifacts)
            except Exception:  # another stage created it meanwhile
                exp = mlflow.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


# ------------------------------------------------------------------ runs that outlive their process

def _process_started(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux ``/proc``), or ``""``: with the
    pid it tells a live owner from a new process that reuses the pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_tags() -> dict[str, str]:
    """Tags naming this process as a run's owner (host, pid, the pid's start time)."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), STARTED_TAG: _process_started(pid)}


def owner_alive(tags: dict[str, str]) -> bool | None:
    """Whether the process named by :func:`owner_tags` still runs; None when it cannot be told
    (another host, or no owner tags)."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return None
    pid = int(tags[PID_TAG])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    started = tags.get(STARTED_TAG, "")
    return not (started and _process_started(pid) and _process_started(pid) != started)


def end_orphaned_runs(experiment_id: str, client: Any = None) -> list[str]:
    """End KILLED every RUNNING run of the experiment whose owning process on this host is gone
    (and the RUNNING children of such runs); return their ids. Runs of other hosts are left."""
    from mlflow import MlflowClient

    client = client or MlflowClient()
    running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
    dead = {r.info.run_id: r for r in running if owner_alive(r.data.tags) is False}
    children = [r for r in running if r.info.run_id not in dead
                and r.data.tags.get("mlflow.parentRunId") in dead]
    ended = []
    for r in [*dead.values(), *children]:
        note = (f"ended KILLED at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} by pid {os.getpid()}: "
                f"its process (pid {r.data.tags.get(PID_TAG, '?')}) died without ending it")
        try:
            client.set_tag(r.info.run_id, "track2.ended_by", note)
            client.set_terminated(r.info.run_id, "KILLED")
            ended.append(r.info.run_id)
        except Exception as e:  # best effort: a concurrent cleanup may have ended it already
            log.debug("could not end run %s: %s", r.info.run_id, e)
    if ended:
        log.warning("ended %d run(s) left RUNNING by dead processes as KILLED: %s", len(ended),
                    ", ".join(f"{r} ({dead[r].info.run_name if r in dead else 'child'})" for r in ended))
    return ended


@contextmanager
def _signals_end_the_run() -> Iterator[None]:
    """SIGTERM/SIGHUP raise :class:`Terminated` in this process (so the run is ended KILLED);
    forked children keep the default action."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner:  # a forked worker: die as the signal says
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated(128 + signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _end_runs_quietly(run_id: str, status: str) -> None:
    """End the active runs down to and including ``run_id``; a dead server only leaves a log line
    (the next start ends the run, see :func:`end_orphaned_runs`)."""
    import mlflow

    try:
        while (active := mlflow.active_run()) is not None:
            mlflow.end_run(status)
            if active.info.run_id == run_id:
                break
    except Exception as e:
        log.warning("could not mark run %s %s (%s); the next stage started on this host will",
                    run_id, status, str(e).splitlines()[0][:200] if str(e) else type(e).__name__)


@contextmanager
def stage_run(experiment: str, stage: str, params: dict[str, Any] | None = None,
              data_paths: tuple[str | Path, ...] = (), **tags: str) -> Iterator[Any]:
    """Start a parent MLflow run for one pipeline stage, tagged and with its params logged.

    Runs left RUNNING by dead processes on this host are ended KILLED first. The run ends
    FINISHED, FAILED when the block raises, KILLED on Ctrl-C / SIGTERM / SIGHUP; MLflow's errors
    leave the block as one-line :class:`TrackingError`s.
    """
    import mlflow

    exp_id = setup(experiment)
    try:
        end_orphaned_runs(exp_id)
    except Exception as e:  # best effort: the stage's own run matters more
        log.warning("could not check for runs left RUNNING by dead processes: %s", as_tracking_error(e, "cleanup"))
    with guard(f"stage {stage}: starting its MLflow run"):
        run = mlflow.start_run(run_name=stage, tags={"stage": stage, **standard_tags(data_paths),
                                                     **owner_tags(), **tags})
    with _signals_end_the_run():
        try:
            if params:
                mlflow.log_params(flatten(params))
            yield run
        except BaseException as e:
            status = "KILLED" if isinstance(e, (KeyboardInterrupt, Terminated)) else "FAILED"
            _end_runs_quietly(run.info.run_id, status)
            translated = as_tracking_error(e, f"stage {stage}") if isinstance(e, Exception) else e
            if translated is e:
                raise
            raise translated from e
        with guard(f"stage {stage}: ending its MLflow run"):
            _end_active_down_to(run.info.run_id)


def _end_active_down_to(run_id: str) -> None:
    import mlflow

    while (active := mlflow.active_run()) is not None:
        mlflow.end_run("FINISHED")
        if active.info.run_id == run_id:
            break


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
