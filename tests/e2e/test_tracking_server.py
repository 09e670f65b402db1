"""Against a real ``mlflow server`` (SQLite backend, loopback port) that the tests start, stop and
restart (issue 11): commands fail fast and clearly while it is down, a process killed between the
registry calls (SIGKILL at a fault point) leaves a registry the next run repairs, and concurrent
``promote`` commands end in one alias state with the winning record intact.

Every server and command is a child process with a deadline; the server is stopped in a
``finally`` even when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "DVC_NO_ANALYTICS": "1",
       "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
       "PYTHONPATH": str(ROOT)}  # this checkout's package, whatever clone the environment was installed from
#: A model version source the server accepts without a run (nothing is loaded from it).
SOURCE = "s3://track2-test/nowhere"
#: What "fails fast" means here: the 10 s default budget plus the interpreter's start and imports.
FAST_S = 25.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mlflow server`` on 127.0.0.1 with a SQLite store in ``root``; start / stop / restart."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "-h", "127.0.0.1", "-p", str(self.port),
             "-w", "1"], env={**os.environ, **ENV}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    pytest.fail("mlflow server did not start:\n" + (self.root / "server.log").read_text()[-3000:])
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)
        self.proc = None
        # the port is free again once nothing answers
        deadline = time.time() + 20
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.2)


@pytest.fixture
def server(tmp_path):
    """A server of the test's own (the test stops and restarts it)."""
    s = Server(tmp_path / "server")
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One server for the tests that only use it (each under its own model name): a start costs
    20-60 s on the shared 2-core machine."""
    s = Server(tmp_path_factory.mktemp("shared-server"))
    s.start()
    try:
        yield s
    finally:
        s.stop()


def named_params(folder: Path, name: str, source: Path = ROOT / "params.yaml") -> None:
    """``folder/params.yaml``: ``source`` with ``register.model_name`` set to ``name``."""
    data = yaml.safe_load(source.read_text())
    data["register"]["model_name"] = name
    (folder / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def cli(args: list[str], uri: str, cwd: Path, timeout: float = 300, **env: str) -> tuple[int, str, float]:
    """``python -m pipeline ARGS`` against ``uri``: (exit code, stderr + stdout, seconds)."""
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, **ENV, "MLFLOW_TRACKING_URI": uri,
                                               "TRACK2_ROOT": str(cwd), **env})
    return res.returncode, res.stderr + res.stdout, time.monotonic() - started


def one_error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def world(retrieval_world, retrieval_params):
    """The tiny retrieval world with retrieve's outputs, a passed validation and its params.yaml."""
    from pipeline import retrieve
    from tests.conftest import retrieval_params_data
    from tests.helpers import retrieve_io

    retrieve.run(retrieval_params, retrieve_io(retrieval_world))
    summary = retrieval_world / "reports" / "validation" / "summary.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps({"success": True}))
    (retrieval_world / "params.yaml").write_text(yaml.safe_dump(retrieval_params_data()))
    return retrieval_world


REGISTER = ["register", "--retrieval", "data/retrieval", "--mapping", "data/mapping/mapping.yaml",
            "--validation", "reports/validation/summary.json", "--queries", "data/prepared/queries.parquet",
            "--report", "reports/register.json"]
TRAIN = ["train", "--domain", "pedestrian", "--backbone", "mobilenetv2_100", "--prepared", "data/prepared",
         "--gate", "reports/validation/summary.json", "--models", "out/models", "--predictions", "out/pred",
         "--report", "out/train.json", "--checkpoints", "out/ckpt"]


# ------------------------------------------------------------------ down: fail fast and clearly

@pytest.mark.slow
def test_commands_fail_fast_and_clearly_while_the_server_is_down(world):
    """Nothing listens on the port: register, promote, search and train (its logging starts with
    the stage's run) each give one line naming the server, exit 2, within the budget."""
    uri = f"http://127.0.0.1:{free_port()}"
    for args in (REGISTER, ["promote"], ["promote", "--dry-run"], ["search", "A male pedestrian."], TRAIN):
        code, out, seconds = cli(args, uri, world, timeout=120)
        line = one_error_line(out)
        assert code == 2, out
        assert f"tracking server {uri} is unreachable (connection refused)" in line, line
        assert seconds < FAST_S, (args, seconds)
    # The budget is configurable: a hung server (accepts, never answers) gives up after it.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        code, out, seconds = cli(["promote"], f"http://127.0.0.1:{hung.getsockname()[1]}", world,
                                 timeout=120, TRACK2_TRACKING_TIMEOUT="3")
    line = one_error_line(out)
    assert code == 2 and "timed out" in line and "TRACK2_TRACKING_TIMEOUT=3" in line, line
    assert seconds < 3 + FAST_S - 10


@pytest.mark.slow
def test_register_promote_then_server_stopped_and_restarted(world, server):
    code, out, _ = cli(REGISTER, server.uri, world)
    assert code == 0, out
    c = client(server.uri)
    mv = c.get_model_version_by_alias("track2-ensemble", "production")
    assert mv.tags["registration"] == "complete" and mv.tags["promotion.state"] == "applied"
    run = c.get_run(mv.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics  # the stage's logging went to the server

    server.stop()
    for args in (["promote"], REGISTER):
        code, out, seconds = cli(args, server.uri, world, timeout=120)
        assert code == 2 and "is unreachable" in one_error_line(out) and seconds < FAST_S, (args, out, seconds)

    server.start()  # same store and port: nothing was lost, and nothing half-done
    code, out, _ = cli(["promote"], server.uri, world)
    assert code == 0 and out.strip().splitlines()[-1].startswith("noop: production (version 1) is already"), out
    code, out, _ = cli(["promote", "--history"], server.uri, world)
    assert code == 0 and [line.split()[1] for line in out.strip().splitlines()] == ["promote", "noop"], out


# ------------------------------------------------------------------ killed between the registry calls

def _consistent(c, name: str) -> dict:
    """The invariants after any crash and the next run: no promotable incomplete version, every
    alias on a complete version, production's record applied and matching the alias."""
    from pipeline import registry

    versions = {str(v.version): v for v in c.search_model_versions(f"name='{name}'")}
    aliases = {k: str(v) for k, v in c.get_registered_model(name).aliases.items()}
    for alias, ver in aliases.items():
        assert versions[ver].tags.get("registration") in (None, "complete"), (alias, ver, versions[ver].tags)
    if "production" in aliases:
        t = versions[aliases["production"]].tags
        assert t["promotion.decision"] == "promote" and t["promotion.state"] == "applied", t
        assert registry.refusal(versions[aliases["production"]], "val.all.official_map10") is None
    assert not [v for v in versions.values() if v.tags.get("promotion.state") == "pending"]
    return aliases


@pytest.mark.slow
@pytest.mark.parametrize("point, expected", [("register:after-create", "abandoned"),
                                             ("register:after-alias", "complete")])
def test_register_killed_between_registry_calls(world, shared_server, point, expected):
    server, name = shared_server, f"killed-{point.replace(':', '-')}"
    named_params(world, name, world / "params.yaml")
    c = client(server.uri)
    code, out, _ = cli(REGISTER, server.uri, world, TRACK2_FAULT_AT=point)
    assert code == -signal.SIGKILL, out
    left = c.get_model_version(name, "1")
    assert left.tags["registration"] == "incomplete" and left.tags["validation"] == "passed"
    assert c.get_run(left.run_id).info.status == "RUNNING"  # as a kill -9 leaves it
    from pipeline import registry

    assert registry.refusal(left, "val.all.official_map10").startswith("registration incomplete")
    # The next registry command (here a promote) repairs first: the leftover that holds
    # challenger lacked only its last tag and is completed (then promotable); the other is
    # abandoned and never promoted. The dead run is ended KILLED either way.
    code, out, _ = cli(["promote"], server.uri, world)
    assert code == 0, out
    assert c.get_run(left.run_id).info.status == "KILLED"
    assert c.get_model_version(name, "1").tags["registration"] == expected
    aliases = _consistent(c, name)
    assert aliases.get("production") == ("1" if expected == "complete" else None)

    code, out, _ = cli(REGISTER, server.uri, world)  # and the pipeline carries on
    assert code == 0, out
    aliases = _consistent(c, name)
    assert aliases["challenger"] == "2"
    # version 2 has the same figures: it does not beat a completed version 1 by the margin
    assert aliases["production"] == ("1" if expected == "complete" else "2")
    decisions = [e["decision"] for e in registry.history(c, name)]
    assert decisions[0] == "repair" and len(decisions) == 3, decisions


@pytest.mark.slow
@pytest.mark.parametrize("point", ["promote:after-record", "promote:after-alias"])
def test_promote_killed_between_registry_calls(tmp_path, shared_server, point):
    server, name = shared_server, f"killed-{point.replace(':', '-')}"
    c = client(server.uri)
    c.create_registered_model(name)
    for value in ("0.5", "0.6"):
        c.create_model_version(name, SOURCE, tags={"validation": "passed", "val.all.official_map10": value,
                                                              "registration": "complete"})
    c.set_registered_model_alias(name, "production", "1")
    named_params(tmp_path, name)
    code, out, _ = cli(["promote"], server.uri, tmp_path, TRACK2_FAULT_AT=point)
    assert code == -signal.SIGKILL, out
    assert c.get_model_version(name, "2").tags["promotion.state"] == "pending"
    assert str(c.get_registered_model(name).aliases["production"]) == ("2" if point.endswith("alias") else "1")

    code, out, _ = cli(["promote"], server.uri, tmp_path)
    assert code == 0, out
    assert _consistent(c, name)["production"] == "2"
    assert c.get_model_version(name, "1").tags["promotion.replaced_by"] == "2"
    from pipeline import registry

    decisions = [e["decision"] for e in registry.history(c, name)]
    assert decisions == (["repair", "noop"] if point.endswith("alias") else ["repair", "promote"]), decisions


# ------------------------------------------------------------------ concurrent promotes

@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 5])
def test_concurrent_promotes_end_consistent_with_the_winning_record(tmp_path, shared_server, n):
    from pipeline import registry

    server, name = shared_server, f"concurrent-{n}"
    c = client(server.uri)
    c.create_registered_model(name)
    for validation, value in (("passed", "0.5"), ("passed", "0.6"), ("failed", "0.9"), ("passed", "0.55")):
        c.create_model_version(name, SOURCE, tags={"validation": validation, "val.all.official_map10": value,
                                                              "registration": "complete"})
    c.set_registered_model_alias(name, "production", "1")
    named_params(tmp_path, name)
    env = {**os.environ, **ENV, "MLFLOW_TRACKING_URI": server.uri, "TRACK2_ROOT": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline", "promote"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(n)]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * n, "\n---\n".join(outs)
    aliases = _consistent(c, name)
    assert aliases["production"] == "2"
    winner = c.get_model_version(name, "2").tags
    assert winner["promotion.decision"] == "promote" and json.loads(winner["promotion.record"])["incumbent"] == "1"
    assert "beats production (version 1)" in winner["promotion.reason"]
    assert c.get_model_version(name, "1").tags["promotion.replaced_by"] == "2"
    assert c.get_model_version(name, "3").tags["promotion.decision"] == "refused"
    h = registry.history(c, name)
    assert len(h) == n and len({e["key"] for e in h}) == n  # every decision kept, none overwritten
    assert all(e["production"] == "2" for e in h)
    assert {e["decision"] for e in h} <= {"promote", "noop"} and "promote" in {e["decision"] for e in h}
    assert all(e["candidate"] == "2" for e in h)
