"""Team services on loopback: PostgreSQL, an S3-compatible object store and an authenticated
MLflow tracking server whose runs live in PostgreSQL and whose artifacts live in the object store.

    python scripts/services.py start    # `make services`: start (or reuse) all three, print the env
    python scripts/services.py env      # print the env again
    python scripts/services.py status   # what runs, on which port, with which pid
    python scripts/services.py stop     # `make services-stop`: stop exactly what `start` started

Everything lives under ``--state-dir`` (default ``.services/`` in the repository, git-ignored):
``postgres/`` (the cluster, owned by the server's OS user), ``s3/`` (the object store's
snapshot), ``mlflow/`` (the auth app's config), ``*.log``, ``*.pid``, ``secrets.env`` and
``env.sh`` (both mode 0600), ``startup.json`` (the measured start-up times).

Credentials are never in git. Each is read from the environment when set there, otherwise
generated once (``secrets``) and kept in ``secrets.env``:

    TRACK2_PG_SUPERUSER_PASSWORD   the cluster's ``postgres`` superuser (initdb)
    TRACK2_PG_PASSWORD             the ``mlflow`` role that owns the ``mlflow`` and ``mlflow_auth`` databases
    TRACK2_S3_ACCESS_KEY_ID / TRACK2_S3_SECRET_ACCESS_KEY   the object store's only key pair
    MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD  MLflow's admin, bootstrapped on first start
    TRACK2_MLFLOW_USER / TRACK2_MLFLOW_PASSWORD    the (non-admin) account the pipeline uses
    MLFLOW_FLASK_SERVER_SECRET_KEY  the auth app's CSRF key

PostgreSQL refuses to run as root: as root the server runs as the OS user ``TRACK2_PG_OS_USER``
(default ``postgres``, which Debian's postgresql package creates); as any other user it runs as
that user. Its binaries are found through ``TRACK2_PG_BIN``, ``PATH`` or ``/usr/lib/postgresql/*/bin``.
No secret is put on a command line (``ps`` shows those): servers get them through their environment.
"""

from __future__ import annotations

import argparse
import base64
import glob
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STATE = ROOT / ".services"
DEFAULT_PORTS = {"pg": 15432, "s3": 19000, "mlflow": 15000}
MLFLOW_BUCKET, DVC_BUCKET = "track2-mlflow", "track2-dvc"
REGION = "us-east-1"
DB_ROLE, DB_NAME, AUTH_DB_NAME = "mlflow", "mlflow", "mlflow_auth"

#: name -> how a missing value is generated (an access key id must look like one: AKIA + 16).
SECRETS = {
    "TRACK2_PG_SUPERUSER_PASSWORD": lambda: secrets.token_urlsafe(24),
    "TRACK2_PG_PASSWORD": lambda: secrets.token_urlsafe(24),
    "TRACK2_S3_ACCESS_KEY_ID": lambda: "AKIA" + secrets.token_hex(8).upper(),
    "TRACK2_S3_SECRET_ACCESS_KEY": lambda: secrets.token_urlsafe(30),
    "MLFLOW_AUTH_ADMIN_USERNAME": lambda: "admin",
    "MLFLOW_AUTH_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(24),
    "TRACK2_MLFLOW_USER": lambda: "track2",
    "TRACK2_MLFLOW_PASSWORD": lambda: secrets.token_urlsafe(24),
    "MLFLOW_FLASK_SERVER_SECRET_KEY": lambda: secrets.token_hex(32),
}


class ServiceError(RuntimeError):
    """A service could not be started or reached; the message says which and where its log is."""


def log(msg: str) -> None:
    print(f"services: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ state, secrets, pid files


@dataclass
class State:
    root: Path
    ports: dict[str, int]

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def private(self, name: str, text: str) -> Path:
        """Write a file only its owner can read (secrets, the env file)."""
        p = self.path(name)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(p, 0o600)
        return p


def make_state(root: Path, ports: dict[str, int] | None = None) -> State:
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    # Others may traverse (the PostgreSQL user must reach postgres/), not list or read.
    os.chmod(root, 0o711)
    saved = root / "ports.json"
    chosen = dict(DEFAULT_PORTS)
    for name in chosen:
        env = os.environ.get(f"TRACK2_{name.upper()}_PORT")
        if env:
            chosen[name] = int(env)
    if ports:
        chosen.update({k: v for k, v in ports.items() if v})
    return State(root, chosen if ports or not saved.exists() else {**chosen, **json.loads(saved.read_text())})


def load_secrets(state: State) -> dict[str, str]:
    """Environment first, then ``secrets.env``, else generated; the result is kept in ``secrets.env``."""
    stored: dict[str, str] = {}
    f = state.path("secrets.env")
    if f.exists():
        for line in f.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                stored[k] = v
    values = {k: os.environ.get(k) or stored.get(k) or gen() for k, gen in SECRETS.items()}
    if values != stored:
        state.private("secrets.env", "# generated by scripts/services.py; never commit\n"
                      + "".join(f"{k}={v}\n" for k, v in values.items()))
    return values


def proc_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/<pid>/stat): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def write_pid(state: State, name: str, proc: subprocess.Popen) -> None:
    state.path(f"{name}.pid").write_text(json.dumps({"pid": proc.pid, "started": proc_start_time(proc.pid)}))


def read_pid(state: State, name: str) -> int | None:
    """The pid recorded for ``name`` if that very process still runs (same start time), else None."""
    f = state.path(f"{name}.pid")
    if not f.exists():
        return None
    rec = json.loads(f.read_text())
    alive = proc_start_time(rec["pid"])
    return rec["pid"] if alive is not None and alive == rec["started"] else None


def stop_group(state: State, name: str, timeout: float = 20.0) -> bool:
    """SIGTERM the process group ``start`` created for ``name`` (the leader's pid); SIGKILL after
    ``timeout`` seconds."""
    pid = read_pid(state, name)
    state.path(f"{name}.pid").unlink(missing_ok=True) if pid is None else None
    if pid is None:
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc_start_time(pid) is not None:
        _reap(pid)
        time.sleep(0.1)
    if proc_start_time(pid) is not None:
        log(f"{name} did not stop in {timeout:.0f} s: SIGKILL")
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap(pid)
    state.path(f"{name}.pid").unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)  # our own child (the tests start and stop in one process)
    except ChildProcessError:
        pass


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR, as the servers set it: a port left in TIME_WAIT by our last stop is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_port(port: int, proc: subprocess.Popen | None, deadline: float, what: str, logfile: Path) -> None:
    while True:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{what} exited with {proc.returncode}:\n{tail(logfile)}")
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} did not listen on 127.0.0.1:{port} in time:\n{tail(logfile)}")
        time.sleep(0.2)


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"(no log at {path})"


def spawn(state: State, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start ``cmd`` in its own session (so stop can signal its whole group), logging to ``name.log``."""
    logf = open(state.path(f"{name}.log"), "ab")
    proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=state.root)
    logf.close()
    write_pid(state, name, proc)
    return proc


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "MLFLOW_", "PG", "TRACK2_"))}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", PYTHONDONTWRITEBYTECODE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


# ------------------------------------------------------------------ PostgreSQL


def pg_bin_dir() -> Path:
    """Where ``initdb`` / ``pg_ctl`` are: ``TRACK2_PG_BIN``, ``PATH``, or the newest
    /usr/lib/postgresql/*/bin."""
    if os.environ.get("TRACK2_PG_BIN"):
        d = Path(os.environ["TRACK2_PG_BIN"])
        if (d / "pg_ctl").exists():
            return d
        raise ServiceError(f"TRACK2_PG_BIN={d} has no pg_ctl")
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                  if Path(p).parent.name.isdigit() else 0)
    for d in reversed(dirs):
        if (Path(d) / "pg_ctl").exists() and (Path(d) / "initdb").exists():
            return Path(d)
    raise ServiceError("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's "
                       "postgresql-15 (apt-get install postgresql-15) or set TRACK2_PG_BIN")


def pg_os_user() -> pwd.struct_passwd | None:
    """The OS user the server runs as when we are root (it refuses root); None when we are not root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("TRACK2_PG_OS_USER", "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ServiceError(f"running as root and there is no OS user {name!r} for PostgreSQL to run as "
                           "(Debian's postgresql package creates `postgres`; or set TRACK2_PG_OS_USER)"
                           ) from None


def run_pg(cmd: list[str], state: State, user: pwd.struct_passwd | None, timeout: float) -> None:
    kw = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[]) if user else {}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    r = subprocess.run(cmd, cwd=state.path("postgres"), env=env, capture_output=True, text=True,
                       timeout=timeout, **kw)
    if r.returncode != 0:
        raise ServiceError(f"{' '.join(cmd[:2])} failed ({r.returncode}):\n"
                           f"{r.stdout[-2000:]}{r.stderr[-2000:]}\n"
                           f"{tail(state.path('postgres', 'server.log'))}")


def pg_running(state: State) -> int | None:
    """The postmaster's pid from the cluster's own postmaster.pid, if it runs."""
    f = state.path("postgres", "data", "postmaster.pid")
    try:
        pid = int(f.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if proc_start_time(pid) is not None else None


def start_postgres(state: State, sec: dict[str, str], timeout: float) -> None:
    bindir, user = pg_bin_dir(), pg_os_user()
    pgdir, data = state.path("postgres"), state.path("postgres", "data")
    pgdir.mkdir(exist_ok=True)
    if user:
        os.chown(pgdir, user.pw_uid, user.pw_gid)
    os.chmod(pgdir, 0o700)
    if user and subprocess.run(["test", "-w", str(pgdir)], user=user.pw_uid, group=user.pw_gid,
                               extra_groups=[]).returncode != 0:
        raise ServiceError(f"the OS user {user.pw_name!r} cannot reach {pgdir}: put --state-dir under "
                           "folders others may traverse (mode o+x)")
    if not (data / "PG_VERSION").exists():
        pwfile = pgdir / "pwfile"
        pwfile.write_text(sec["TRACK2_PG_SUPERUSER_PASSWORD"] + "\n")
        os.chmod(pwfile, 0o600)
        if user:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        try:
            run_pg([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
                    "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"], state, user, timeout)
        finally:
            pwfile.unlink(missing_ok=True)
        with open(data / "postgresql.conf", "a") as f:
            # TCP on loopback only, no Unix socket; passwords (scram) for every connection (pg_hba).
            f.write("\n# scripts/services.py\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")
    port = state.ports["pg"]
    if not port_free(port):
        raise ServiceError(f"port {port} (PostgreSQL) is taken: set TRACK2_PG_PORT or --pg-port")
    run_pg([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(pgdir / "server.log"), "-o", f"-p {port}",
            "-w", "-t", str(int(timeout)), "start"], state, user, timeout + 10)
    ensure_databases(state, sec)


def ensure_databases(state: State, sec: dict[str, str]) -> None:
    """The ``mlflow`` role and its two databases (runs + registry, and the auth app's users)."""
    import psycopg
    from psycopg import sql

    try:
        c = psycopg.connect(host="127.0.0.1", port=state.ports["pg"], user="postgres", dbname="postgres",
                            password=sec["TRACK2_PG_SUPERUSER_PASSWORD"], autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as e:
        raise ServiceError(f"cannot connect to PostgreSQL as its superuser (was TRACK2_PG_SUPERUSER_PASSWORD "
                           f"changed since the cluster was made?): {str(e).strip()}") from None
    ident = sql.Identifier
    with c:
        pw = sql.Literal(sec["TRACK2_PG_PASSWORD"])
        if c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DB_ROLE,)).fetchone():
            c.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(ident(DB_ROLE), pw))
        else:
            c.execute(sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(ident(DB_ROLE), pw))
        for db in (DB_NAME, AUTH_DB_NAME):
            if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone():
                c.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(ident(db), ident(DB_ROLE)))


def stop_postgres(state: State, timeout: float = 60) -> bool:
    if pg_running(state) is None:
        return False
    run_pg([str(pg_bin_dir() / "pg_ctl"), "-D", str(state.path("postgres", "data")), "-m", "fast", "-w",
            "-t", str(int(timeout)), "stop"], state, pg_os_user(), timeout + 10)
    return True


# ------------------------------------------------------------------ the object store


def s3_client(state: State, sec: dict[str, str]):
    import boto3

    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{state.ports['s3']}", region_name=REGION,
                        aws_access_key_id=sec["TRACK2_S3_ACCESS_KEY_ID"],
                        aws_secret_access_key=sec["TRACK2_S3_SECRET_ACCESS_KEY"])


def start_s3(state: State, sec: dict[str, str], timeout: float) -> None:
    port = state.ports["s3"]
    if not port_free(port):
        raise ServiceError(f"port {port} (object store) is taken: set TRACK2_S3_PORT or --s3-port")
    env = {**base_env(), "AWS_ACCESS_KEY_ID": sec["TRACK2_S3_ACCESS_KEY_ID"],
           "AWS_SECRET_ACCESS_KEY": sec["TRACK2_S3_SECRET_ACCESS_KEY"]}
    proc = spawn(state, "s3", [sys.executable, str(ROOT / "scripts" / "s3_server.py"), "--host", "127.0.0.1",
                               "--port", str(port), "--data-dir", str(state.path("s3"))], env)
    wait_port(port, proc, time.monotonic() + timeout, "the object store", state.path("s3.log"))
    client = s3_client(state, sec)
    have = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in (MLFLOW_BUCKET, DVC_BUCKET):
        if bucket not in have:
            client.create_bucket(Bucket=bucket)


# ------------------------------------------------------------------ MLflow


def mlflow_url(state: State) -> str:
    return f"http://127.0.0.1:{state.ports['mlflow']}"


def pg_uri(state: State, db: str) -> str:
    # No password in the URI (it would show in `ps`): the server gets PGPASSWORD, which libpq reads.
    return f"postgresql+psycopg://{DB_ROLE}@127.0.0.1:{state.ports['pg']}/{db}"


def http(method: str, url: str, user: str | None = None, password: str | None = None,
         body: dict | None = None, timeout: float = 30) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"} if body else {})
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def start_mlflow(state: State, sec: dict[str, str], timeout: float) -> None:
    port = state.ports["mlflow"]
    if not port_free(port):
        raise ServiceError(f"port {port} (MLflow) is taken: set TRACK2_MLFLOW_PORT or --mlflow-port")
    state.path("mlflow").mkdir(exist_ok=True)
    config = state.path("mlflow", "basic_auth.ini")
    # MLflow's own config file, less the admin password (the server reads it from the environment).
    # auth_cache_ttl_seconds: a checked password is trusted for 60 s instead of re-hashed (PBKDF2,
    # ~0.5 s of CPU here) on every request; a model upload is ~100 requests. With one worker a
    # password change or deletion through the API takes effect at once (MLflow's basic_auth.ini).
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = {pg_uri(state, AUTH_DB_NAME)}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                      "auth_cache_ttl_seconds = 60\n")
    env = {**base_env(),
           "PGPASSWORD": sec["TRACK2_PG_PASSWORD"],
           "AWS_ACCESS_KEY_ID": sec["TRACK2_S3_ACCESS_KEY_ID"],
           "AWS_SECRET_ACCESS_KEY": sec["TRACK2_S3_SECRET_ACCESS_KEY"],
           "AWS_DEFAULT_REGION": REGION,
           "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{state.ports['s3']}",
           "MLFLOW_AUTH_CONFIG_PATH": str(config),
           "MLFLOW_AUTH_ADMIN_USERNAME": sec["MLFLOW_AUTH_ADMIN_USERNAME"],
           "MLFLOW_AUTH_ADMIN_PASSWORD": sec["MLFLOW_AUTH_ADMIN_PASSWORD"],
           "MLFLOW_FLASK_SERVER_SECRET_KEY": sec["MLFLOW_FLASK_SERVER_SECRET_KEY"],
           # The job runner (huey consumers, for GenAI scorers) is not used by this pipeline: 6
           # fewer processes, and a faster start.
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = spawn(state, "mlflow", [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port),
                                   "--backend-store-uri", pg_uri(state, DB_NAME),
                                   "--artifacts-destination", f"s3://{MLFLOW_BUCKET}/artifacts",
                                   "--app-name", "basic-auth", "--workers", "1"], env)
    deadline = time.monotonic() + timeout
    wait_port(port, proc, deadline, "the MLflow server", state.path("mlflow.log"))
    admin = (sec["MLFLOW_AUTH_ADMIN_USERNAME"], sec["MLFLOW_AUTH_ADMIN_PASSWORD"])
    search = f"{mlflow_url(state)}/api/2.0/mlflow/experiments/search?max_results=1"
    # Listening is not serving yet: wait until an authenticated call answers.
    code, text = call_until(deadline, proc, state, "GET", search, *admin)
    if code != 200:
        raise ServiceError(f"the MLflow server refused its admin ({code}): {text[:300]}")
    ensure_team_user(state, sec, deadline, proc)


def call_until(deadline: float, proc: subprocess.Popen, state: State, *args, **kw) -> tuple[int, str]:
    """:func:`http`, retried while the server is up but not answering (busy machine), until ``deadline``."""
    while True:
        try:
            code, text = http(*args, **kw)
            if code < 500:
                return code, text
        except OSError as e:
            code, text = None, str(e)
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ServiceError(f"the MLflow server did not answer ({code}: {text[:200]}):\n"
                               f"{tail(state.path('mlflow.log'))}")
        time.sleep(0.5)


def ensure_team_user(state: State, sec: dict[str, str], deadline: float, proc: subprocess.Popen) -> None:
    """The pipeline's account: created by the admin once; not an admin itself."""
    user, pw = sec["TRACK2_MLFLOW_USER"], sec["TRACK2_MLFLOW_PASSWORD"]
    base = mlflow_url(state)
    if call_until(deadline, proc, state, "GET", f"{base}/api/2.0/mlflow/experiments/search?max_results=1",
                  user, pw)[0] == 200:
        return
    code, text = call_until(deadline, proc, state, "POST", f"{base}/api/2.0/mlflow/users/create",
                            sec["MLFLOW_AUTH_ADMIN_USERNAME"], sec["MLFLOW_AUTH_ADMIN_PASSWORD"],
                            {"username": user, "password": pw})
    if code != 200:
        raise ServiceError(f"cannot create the MLflow user {user!r} ({code}): {text[:300]}")


# ------------------------------------------------------------------ start / stop / env


def client_env(state: State, sec: dict[str, str]) -> dict[str, str]:
    """What the pipeline (MLflow client, DVC, boto3) needs to use the services."""
    endpoint = f"http://127.0.0.1:{state.ports['s3']}"
    return {"MLFLOW_TRACKING_URI": mlflow_url(state),
            "MLFLOW_TRACKING_USERNAME": sec["TRACK2_MLFLOW_USER"],
            "MLFLOW_TRACKING_PASSWORD": sec["TRACK2_MLFLOW_PASSWORD"],
            "AWS_ACCESS_KEY_ID": sec["TRACK2_S3_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": sec["TRACK2_S3_SECRET_ACCESS_KEY"],
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": endpoint,
            "MLFLOW_S3_ENDPOINT_URL": endpoint,
            "TRACK2_DVC_REMOTE_URL": f"s3://{DVC_BUCKET}/track2-retrieval"}


def env_text(state: State, sec: dict[str, str]) -> str:
    lines = [f"export {k}={shlex.quote(v)}" for k, v in client_env(state, sec).items()]
    return ("# the team services (scripts/services.py); `source` this file or `eval` the output\n"
            + "\n".join(lines) + "\n"
            + "# DVC remote: dvc remote add -d team $TRACK2_DVC_REMOTE_URL "
              "(credentials and endpoint come from AWS_*)\n")


def start(state: State, timeout: float) -> dict[str, float]:
    sec = load_secrets(state)
    state.path("ports.json").write_text(json.dumps(state.ports))
    times: dict[str, float] = {}
    started: list[str] = []  # what this call started (and the one it was starting when it failed)
    try:
        for name, running, fn in (("postgres", pg_running(state), start_postgres),
                                  ("s3", read_pid(state, "s3"), start_s3),
                                  ("mlflow", read_pid(state, "mlflow"), start_mlflow)):
            if running:
                log(f"{name} already runs (pid {running})")
                continue
            t0 = time.monotonic()
            started.append(name)
            fn(state, sec, timeout)
            times[name] = round(time.monotonic() - t0, 2)
            log(f"{name} up in {times[name]:.1f} s")
    except BaseException:
        log(f"start failed: stopping what this call started ({', '.join(started)})")
        stop(state, only=started, quiet=True)
        raise
    state.private("env.sh", env_text(state, sec))
    if times:
        state.path("startup.json").write_text(json.dumps({**times, "total": round(sum(times.values()), 2)}))
    return times


def stop(state: State, only: list[str] | None = None, quiet: bool = False) -> list[str]:
    """Stop MLflow, the object store, then PostgreSQL: each only if it is the one ``start`` recorded."""
    names = ["mlflow", "s3", "postgres"] if only is None else only
    stopped = []
    for name in ("mlflow", "s3", "postgres"):
        if name not in names:
            continue
        if name == "postgres":
            ok = stop_postgres(state)
        else:
            ok = stop_group(state, name)
        if ok:
            stopped.append(name)
            if not quiet:
                log(f"{name} stopped")
    return stopped


def status(state: State) -> dict[str, int | None]:
    return {"postgres": pg_running(state), "s3": read_pid(state, "s3"), "mlflow": read_pid(state, "mlflow")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["start", "stop", "status", "env"])
    ap.add_argument("--state-dir", type=Path,
                    default=Path(os.environ.get("TRACK2_SERVICES_DIR", DEFAULT_STATE)))
    ap.add_argument("--pg-port", type=int)
    ap.add_argument("--s3-port", type=int)
    ap.add_argument("--mlflow-port", type=int)
    ap.add_argument("--timeout", type=float, default=120.0, help="Seconds each service has to come up.")
    a = ap.parse_args(argv)
    state = make_state(a.state_dir, {"pg": a.pg_port, "s3": a.s3_port, "mlflow": a.mlflow_port}
                       if any((a.pg_port, a.s3_port, a.mlflow_port)) else None)
    try:
        if a.command == "start":
            t0 = time.monotonic()
            start(state, a.timeout)
            log(f"ready in {time.monotonic() - t0:.1f} s; the environment is in {state.path('env.sh')}")
            print(state.path("env.sh").read_text(), end="")
        elif a.command == "stop":
            if not stop(state):
                log("nothing to stop")
        elif a.command == "status":
            for name, pid in status(state).items():
                port = state.ports["pg" if name == "postgres" else name]
                print(f"{name:9s} {'running, pid ' + str(pid) if pid else 'stopped'}  127.0.0.1:{port}")
        elif a.command == "env":
            if not state.path("env.sh").exists():
                log("not started yet: run `make services`")
                return 1
            print(state.path("env.sh").read_text(), end="")
    except ServiceError as e:
        log(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
