"""The team services for real (issue 15): ``scripts/services.py`` starts PostgreSQL, the
S3-compatible object store and MLflow's authenticated tracking server on loopback ports of its
own, and the pipeline runs against them.

- Nobody gets in without credentials: MLflow answers 401 to a request without (or with wrong)
  basic-auth credentials, the pipeline's account is not an admin, the object store answers 403
  without a valid key, every service listens on 127.0.0.1 only.
- Tracked stages (``retrieve``, ``register``), ``promote`` and ``search`` run on a tiny world with
  ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``: the runs and the registry land in PostgreSQL, the
  artifacts in the object store.
- DVC: a copy of the repository on the smoke profile (the release ``dvc add``-ed, as a team keeps
  the real one, then ``dvc repro mapping``) pushes to the S3 remote; a fresh clone pulls and is
  up to date without re-running anything.
- ``stop`` stops exactly what ``start`` started; a restart keeps the runs and the objects.

The services are started once for the module, in a folder under /tmp (the PostgreSQL OS user
must be able to reach it; pytest's own temporary folders are private to root), and stopped in a
``finally`` however the tests end. Missing server binaries or packages skip the module with the
reason, except under ``CI``, where they fail it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "services.py"
BIN = Path(sys.executable).parent
#: Each call to the server may wait this long on a busy 2-core machine (the pipeline's own bound).
TRACKING_TIMEOUT_S = "120"

pytestmark = pytest.mark.slow


def _services_module():
    """scripts/services.py as a module (its dataclasses need it registered in sys.modules)."""
    if "track2_services" not in sys.modules:
        spec = importlib.util.spec_from_file_location("track2_services", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["track2_services"] = module
        spec.loader.exec_module(module)
    return sys.modules["track2_services"]


def _missing() -> str | None:
    """Why the services cannot run here, or None."""
    for module, package in (("psycopg", "psycopg"), ("moto", "moto"), ("boto3", "boto3"),
                            ("dvc_s3", "dvc-s3"), ("flask_wtf", "Flask-WTF")):
        if importlib.util.find_spec(module) is None:
            return f"the Python package {package} is not installed (make venv installs requirements.lock)"
    svc = _services_module()
    try:
        svc.pg_bin_dir()
        svc.pg_os_user()
    except svc.ServiceError as e:
        return str(e)
    return None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _services(state: Path, *args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    # Generated credentials and the module's own ports, not the caller's (TRACK2_PG_BIN / _OS_USER pass).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))
           and not (k.startswith("TRACK2_") and k not in ("TRACK2_PG_BIN", "TRACK2_PG_OS_USER"))}
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--state-dir", str(state)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines()
                if line.startswith("export "))


@dataclass
class Services:
    state: Path
    env: dict[str, str]       # what `start` printed: the pipeline's environment
    secrets: dict[str, str]   # the generated credentials (secrets.env)
    ports: dict[str, int]
    startup: dict[str, float]

    def pipeline_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
        env.pop("TRACK2_ROOT", None)
        env.update(self.env)
        env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", DVC_NO_ANALYTICS="1",
                   HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE", TRACK2_TRACKING_TIMEOUT=TRACKING_TIMEOUT_S,
                   PYTHONPATH=str(ROOT), PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        env.update(extra)
        return env

    def s3(self, **keys):
        import boto3

        return boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                            **(keys or {"aws_access_key_id": self.env["AWS_ACCESS_KEY_ID"],
                                        "aws_secret_access_key": self.env["AWS_SECRET_ACCESS_KEY"]}))

    def pg(self):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.ports["pg"], user="mlflow", dbname="mlflow",
                               password=self.secrets["TRACK2_PG_PASSWORD"], connect_timeout=10)


@pytest.fixture(scope="module")
def services() -> Services:
    reason = _missing()
    if reason:
        message = f"team services cannot run here: {reason}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    state = Path(tempfile.mkdtemp(prefix="track2-services-", dir="/tmp"))
    os.chmod(state, 0o711)
    pg, s3, ml = _free_ports(3)
    try:
        r = _services(state, "start", "--pg-port", str(pg), "--s3-port", str(s3), "--mlflow-port", str(ml),
                      "--timeout", "300")
        assert r.returncode == 0, f"services did not start:\n{r.stderr[-4000:]}"
        env = _read_env(state / "env.sh")
        assert env == dict(line.removeprefix("export ").split("=", 1) for line in r.stdout.splitlines()
                           if line.startswith("export ")), "start printed another environment than env.sh"
        secrets = dict(line.split("=", 1) for line in (state / "secrets.env").read_text().splitlines()
                       if "=" in line and not line.startswith("#"))
        startup = json.loads((state / "startup.json").read_text())
        print(f"\nservices start-up (cold, s): {startup}")
        yield Services(state, env, secrets, {"pg": pg, "s3": s3, "mlflow": ml}, startup)
    finally:
        r = _services(state, "stop", timeout=180)
        shutil.rmtree(state, ignore_errors=True)
        assert r.returncode == 0, r.stderr[-2000:]


def _keys(services: Services, bucket: str, prefix: str = "") -> list[str]:
    pages = services.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _get(url: str, user: str | None = None, password: str | None = None, method: str = "GET",
         body: dict | None = None) -> int:
    svc = _services_module()
    return svc.http(method, url, user, password, body, timeout=120)[0]


# ------------------------------------------------------------------ nobody gets in where they don't belong


def test_mlflow_refuses_requests_without_credentials(services):
    base = services.env["MLFLOW_TRACKING_URI"]
    search = f"{base}/api/2.0/mlflow/experiments/search?max_results=1"
    user, pw = services.env["MLFLOW_TRACKING_USERNAME"], services.env["MLFLOW_TRACKING_PASSWORD"]
    assert _get(search) == 401
    assert _get(f"{base}/") == 401  # the UI too
    assert _get(search, user, pw + "x") == 401
    assert _get(search, "nobody", pw) == 401
    assert _get(search, user, pw) == 200
    # The pipeline's account is not an admin: it cannot create users.
    assert _get(f"{base}/api/2.0/mlflow/users/create", user, pw, "POST",
                {"username": "intruder", "password": "intruder-password"}) == 403


def test_object_store_refuses_requests_without_valid_keys(services):
    import botocore
    from botocore.config import Config

    assert services.s3().list_objects_v2(Bucket="track2-mlflow")["ResponseMetadata"]["HTTPStatusCode"] == 200
    unsigned = services.s3(config=Config(signature_version=botocore.UNSIGNED))
    wrong_secret = services.s3(aws_access_key_id=services.env["AWS_ACCESS_KEY_ID"],
                               aws_secret_access_key="not-the-secret")
    unknown_key = services.s3(aws_access_key_id="AKIAUNKNOWN000000000", aws_secret_access_key="x" * 40)
    for client in (unsigned, wrong_secret, unknown_key):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client.list_objects_v2(Bucket="track2-mlflow")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    endpoint = services.env["AWS_ENDPOINT_URL"]
    for url, data in ((f"{endpoint}/track2-dvc", None), (f"{endpoint}/moto-api/reset-auth", b"1000")):
        with pytest.raises(urllib.error.HTTPError) as e:  # moto's control API would switch auth off
            urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30)
        assert e.value.code == 403


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the sockets that listen on ``port``."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.rsplit(":", 1)
            if state == "0A" and int(p, 16) == port:
                out.add(addr)
    return out


def test_every_service_listens_on_loopback_only(services):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp on this system")
    for name, port in services.ports.items():
        addrs = _listening(port)
        assert addrs, f"{name} does not listen on {port}"
        assert addrs <= {"0100007F"}, f"{name} listens on {addrs} (not only 127.0.0.1)"


# ------------------------------------------------------------------ the pipeline against the services


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    r.seconds = time.monotonic() - t0
    return r


def test_tracked_stages_promote_and_search(services, retrieval_world):
    from tests.conftest import retrieval_params_data

    world = retrieval_world
    data = retrieval_params_data()
    data["base"]["experiment"] = "team-services"
    (world / "params.yaml").write_text(yaml.safe_dump(data))
    gate = world / "reports" / "validation" / "gate.json"
    gate.parent.mkdir(parents=True)
    gate.write_text(json.dumps({"success": True}))
    env = services.pipeline_env()
    py = [sys.executable, "-m", "pipeline"]

    r = _run(py + ["retrieve", "--prepared", "data/prepared", "--release", "release",
                   "--predictions", "data/predictions", "--mapping", "data/mapping/mapping.yaml",
                   "--out", "data/retrieval"], world, env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    r = _run(py + ["register", "--retrieval", "data/retrieval", "--mapping", "data/mapping/mapping.yaml",
                   "--validation", str(gate), "--queries", "data/prepared/queries.parquet",
                   "--report", "reports/register.json"], world, env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    report = json.loads((world / "reports" / "register.json").read_text())
    assert report["aliases"]["production"] == report["version"]
    print(f"\nregister against the team server: {r.seconds:.1f} s")

    # The runs and the registry are in PostgreSQL ...
    with services.pg() as con:
        stages = {row[0] for row in con.execute(
            "SELECT t.value FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid JOIN experiments e "
            "ON e.experiment_id = r.experiment_id WHERE t.key = 'stage' AND e.name = 'team-services'")}
        models = {row[0] for row in con.execute("SELECT name FROM registered_models")}
        artifact_root = con.execute("SELECT artifact_location FROM experiments WHERE name = 'team-services'"
                                    ).fetchone()[0]
    assert {"retrieve", "register"} <= stages
    assert "track2-ensemble" in models
    # ... and the artifacts in the object store, through the server (nothing written locally).
    assert artifact_root.startswith("mlflow-artifacts:")
    keys = _keys(services, "track2-mlflow")
    assert any(k.endswith("metrics.json") for k in keys), keys[:20]
    assert any(k.endswith("MLmodel") for k in keys), keys[:20]
    assert not (world / "mlartifacts").exists() and not (world / "mlflow.db").exists()

    r = _run(py + ["promote"], world, env)
    assert r.returncode == 0 and r.stdout.startswith("noop:"), r.stdout + r.stderr[-2000:]
    r = _run(py + ["search", "This is a black BMW SUV.", "--top", "3"], world, env)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    lines = [line.strip() for line in r.stdout.splitlines()]
    assert lines[0].startswith("model: track2-ensemble version "), r.stdout  # the version that answered
    assert lines[1].startswith("vehicle:") and any(line.startswith("1. vehicle_") for line in lines), r.stdout

    # Without the password the same command is refused.
    r = _run(py + ["promote", "--dry-run"], world, services.pipeline_env(MLFLOW_TRACKING_PASSWORD="wrong"))
    assert r.returncode == 2 and "refused the credentials (401)" in r.stderr, r.stdout + r.stderr[-2000:]


# ------------------------------------------------------------------ DVC remote on the same endpoint


def _copy_repo(dest: Path) -> Path:
    """The working tree (tracked + untracked, not ignored) as a fresh git repository."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-qm", "copy")
    return dest


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=services", "-c", "user.email=services@test", *args], cwd=repo,
                   check=True, capture_output=True)


def test_dvc_push_clone_pull_is_up_to_date(services, smoke_release, tmp_path):
    repo = _copy_repo(tmp_path / "repo")
    # As a team keeps the real release: under DVC (cached, pushed), and the pipeline pointed at it.
    shutil.copytree(smoke_release, repo / "data" / "track2")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["base"].update(profile="smoke", release_dir="data/track2")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # A new team repository: no lock from this checkout's own runs (other profile, nothing pushed).
    (repo / "dvc.lock").unlink(missing_ok=True)
    # The stages log to a local store here: this test is about the data, the one above about tracking.
    env = services.pipeline_env(MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}", TRACK2_ROOT=str(repo))
    remote = f"s3://track2-dvc/{tmp_path.name}"

    def dvc(cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        r = _run([str(BIN / "dvc"), *args], cwd, env, timeout)
        assert r.returncode == 0, f"dvc {' '.join(args)}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        return r

    dvc(repo, "add", "-q", "data/track2")
    dvc(repo, "remote", "add", "-d", "team", remote)  # endpoint and keys come from AWS_* only
    config = (repo / ".dvc" / "config").read_text()
    assert "AWS" not in config and "127.0.0.1" not in config, config
    r = dvc(repo, "repro", "mapping")
    assert "synthesize" not in r.stdout and "'mapping'" in r.stdout, r.stdout[-2000:]
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "release under DVC, ingest and mapping run")
    push = dvc(repo, "push")
    prefix = remote.removeprefix("s3://track2-dvc/") + "/"
    pushed = _keys(services, "track2-dvc", prefix)
    n_release = sum(1 for p in (repo / "data" / "track2").rglob("*") if p.is_file())
    # Every file of the release and of the stages' outputs, plus a .dir listing per folder.
    assert len(pushed) > n_release, (len(pushed), n_release, push.stdout)

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True, capture_output=True)
    # Only mapping and what it depends on ran: pull those (after a full `dvc repro`, plain `dvc pull`).
    pull = dvc(clone, "pull", "--with-deps", "mapping")
    status = dvc(clone, "status", "--with-deps", "mapping")
    assert "up to date" in status.stdout.lower(), status.stdout
    again = dvc(clone, "repro", "mapping")
    assert "Running stage" not in again.stdout and "up to date" in again.stdout.lower(), again.stdout
    for rel in ("data/mapping/mapping.yaml", "data/prepared/labels.parquet"):
        assert (clone / rel).read_bytes() == (repo / rel).read_bytes(), rel
    print(f"\ndvc push {len(pushed)} objects ({n_release} release files): {push.seconds:.1f} s; "
          f"dvc pull into a fresh clone: {pull.seconds:.1f} s; "
          f"round trip {push.seconds + pull.seconds:.1f} s")


# ------------------------------------------------------------------ stop exactly what was started, restart


def test_stop_then_restart_keeps_runs_and_objects(services):
    pids = {name: json.loads((services.state / f"{name}.pid").read_text())["pid"]
            for name in ("s3", "mlflow")}
    postmaster = int((services.state / "postgres" / "data" / "postmaster.pid").read_text().split()[0])
    n_objects = len(_keys(services, "track2-mlflow")) + len(_keys(services, "track2-dvc"))
    with services.pg() as con:
        n_runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]

    r = _services(services.state, "stop")
    assert r.returncode == 0, r.stderr
    for pid in (*pids.values(), postmaster):
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text().lower(), f"pid {pid} still runs"
    for name, port in services.ports.items():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"{name} still listens on {port}"
    assert not list(services.state.glob("*.pid"))

    r = _services(services.state, "start", "--timeout", "300")
    assert r.returncode == 0, r.stderr[-3000:]
    warm = json.loads((services.state / "startup.json").read_text())
    print(f"\nservices start-up (restart, s): {warm}")
    assert _read_env(services.state / "env.sh") == services.env  # same ports, same credentials
    with services.pg() as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == n_runs
    assert len(_keys(services, "track2-mlflow")) + len(_keys(services, "track2-dvc")) == n_objects
    base = services.env["MLFLOW_TRACKING_URI"]
    assert _get(f"{base}/api/2.0/mlflow/experiments/search?max_results=1",
                services.env["MLFLOW_TRACKING_USERNAME"], services.env["MLFLOW_TRACKING_PASSWORD"]) == 200
