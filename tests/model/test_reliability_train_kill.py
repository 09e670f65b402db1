"""``kill -9`` of a training stage mid-run, then a rerun (issue 11): it resumes from the last
checkpoint, ends with exactly the weights and predictions of an uninterrupted run, and the killed
MLflow run does not stay RUNNING (the rerun's start ends it KILLED).

The killed run is a real child process (the tiny prepared set and the stand-in backbone of
tests/model/test_train_run.py) sent SIGKILL as soon as its first checkpoint is on disk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.code.test_train_support import TINY, make_prepared
from tests.model.test_train_run import run_train, tiny_params

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "vehicle"
EPOCHS = {"pedestrian": 2, "vehicle": 6, "router": 1}  # long enough to be killed mid-run

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    import pytest
    from tests.code.test_train_support import install_fake_backbones
    from tests.model.test_train_run import run_train, tiny_params
    root = Path(sys.argv[1])
    install_fake_backbones(pytest.MonkeyPatch())
    params = tiny_params(root, log_models=False, epochs={epochs!r})
    run_train(params, root, {domain!r}, {tiny!r}, out="b_")
""").format(epochs=EPOCHS, domain=DOMAIN, tiny=TINY)


def _outputs(root: Path, out: str):
    weights = {f.name: torch.load(f, weights_only=False)["state_dict"]
               for f in sorted((root / f"{out}models" / DOMAIN / TINY).glob("*.pt"))}
    return weights, pd.read_parquet(root / f"{out}predictions" / DOMAIN / TINY / "test.parquet")


def test_kill_9_mid_training_then_rerun_resumes_to_the_same_result(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from pipeline.train.loop import STOP_ENV
    from tests.code.test_train_support import install_fake_backbones

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("TRACK2_ROOT", str(tmp_path))
    monkeypatch.delenv(STOP_ENV, raising=False)
    install_fake_backbones(monkeypatch)
    make_prepared(tmp_path)
    params = tiny_params(tmp_path, log_models=False, epochs=EPOCHS)
    run_train(params, tmp_path, DOMAIN, TINY, out="a_")  # the uninterrupted reference
    w_a, p_a = _outputs(tmp_path, "a_")

    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": uri, "TRACK2_ROOT": str(tmp_path),
           "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_WAIT_POLICY": "PASSIVE"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    ckpt = tmp_path / "ckpt" / DOMAIN / TINY
    try:
        deadline = time.time() + 300
        while not any(ckpt.rglob("*.pt")):
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        assert child.poll() is None, "the child finished before it could be killed"
        os.killpg(child.pid, signal.SIGKILL)  # a real kill -9: no handler runs
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert not (tmp_path / "b_predictions" / DOMAIN / TINY / "test.parquet").exists()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("test-train")
    killed = [r for r in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")]
    assert killed, "the killed stage's run should be left RUNNING by a SIGKILL"

    run_train(params, tmp_path, DOMAIN, TINY, out="b_")  # the rerun resumes from the checkpoint
    w_b, p_b = _outputs(tmp_path, "b_")
    assert w_a.keys() == w_b.keys()
    for name in w_a:
        for k in w_a[name]:
            assert torch.equal(w_a[name][k], w_b[name][k]), f"{name}: {k} differs after kill -9 and resume"
    pd.testing.assert_frame_equal(p_a, p_b)
    for r in killed:
        run = client.get_run(r.info.run_id)
        assert run.info.status == "KILLED" and "died without ending it" in run.data.tags["track2.ended_by"]
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")


def test_sigterm_mid_training_ends_the_run_killed_at_once(tmp_path):
    """SIGTERM (what `kill`, a scheduler or a CI timeout sends) is handled: the stage's run is
    ended KILLED by the dying process itself, which exits 128 + 15."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    make_prepared(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": uri, "TRACK2_ROOT": str(tmp_path),
           "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("TRACK2_TRAIN_STOP_AFTER_EPOCHS", None)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not any((tmp_path / "ckpt").rglob("*.pt")):
            assert child.poll() is None and time.time() < deadline, child.stderr.read().decode()[-3000:]
            time.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
    assert child.returncode == 128 + signal.SIGTERM, child.stderr.read().decode()[-3000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("test-train")
    runs = client.search_runs([exp.experiment_id])
    stage = [r for r in runs if r.info.run_name == f"train-{DOMAIN}-{TINY}"]
    assert stage and stage[0].info.status == "KILLED"
    assert not [r for r in runs if r.info.status == "RUNNING"]
