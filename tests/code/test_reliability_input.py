"""Hostile or odd input gets one clear line before any work (issue 11): captions that are not
text, undecodable bytes, a bad k, served requests (HTTP 400, no stack trace), unwritable outputs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline import serving
from pipeline.cli import app
from tests.helpers import retrieve_io, served_model

ROOT = Path(__file__).resolve().parents[2]
ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "DVC_NO_ANALYTICS": "1",
       "HF_HUB_OFFLINE": "1"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ the checks themselves

@pytest.mark.parametrize("value, message", [
    (None, "caption is null; expected text"),
    (float("nan"), "caption is null; expected text"),
    (42, "caption is a int ('42'); expected text"),
    (["a"], "caption is a list"),
    ("a \udcff caption", "caption is not valid UTF-8 text: character 3 is '\\udcff'"),
    ("\ud800", "not valid UTF-8"),
])
def test_check_caption_refuses(value, message):
    with pytest.raises(serving.InputError, match=None) as e:
        serving.check_caption(value)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("value", ["", "A male pedestrian.", "ünïcödé ok 車"])
def test_check_caption_accepts_text(value):
    assert serving.check_caption(value) == value


@pytest.mark.parametrize("value", [-5, 0, True, 2.5, "3", None])
def test_check_top_k_refuses(value):
    with pytest.raises(serving.InputError, match=r"top_k must be a whole number >= 1"):
        serving.check_top_k(value)


def test_check_top_k_accepts():
    import numpy as np

    assert serving.check_top_k(3) == 3 and serving.check_top_k(np.int64(4)) == 4 and serving.check_top_k(5.0) == 5


# ------------------------------------------------------------------ the model

@pytest.fixture
def built(retrieval_world, retrieval_params, tmp_path):
    """The served model's artifacts, built from the tiny retrieval world."""
    from pipeline import retrieve

    retrieve.run(retrieval_params, retrieve_io(retrieval_world))
    out = retrieval_world / "data" / "retrieval"
    ranker = json.loads((out / "ranker.json").read_text())
    return serving.write_artifacts(tmp_path / "model-config", out / "gallery_test.npz",
                                   retrieval_world / "data" / "mapping" / "mapping.yaml",
                                   ranker["distance"], ranker["top_k"])


def _model(artifacts):
    model = serving.EnsembleRetriever()
    ctx = type("Ctx", (), {"artifacts": artifacts})()
    model.load_context(ctx)
    return model, ctx


@pytest.mark.parametrize("frame, params, message", [
    (pd.DataFrame({"caption": [None]}), None, "caption is null"),
    (pd.DataFrame({"caption": [42]}), None, "caption is a int"),
    (pd.DataFrame({"caption": pd.Series(["ok", "bad \udcff"], dtype=object)}), None, "caption 1 is not valid UTF-8"),
    (pd.DataFrame({"text": ["A male pedestrian."]}), None, "expected a 'caption' column"),
    (pd.DataFrame({"caption": ["A male pedestrian."]}), {"top_k": -5}, "top_k must be a whole number >= 1"),
])
def test_model_refuses_bad_requests_as_invalid_parameter(built, frame, params, message):
    from mlflow.exceptions import MlflowException

    model, ctx = _model(built)
    with pytest.raises(MlflowException) as e:
        model.predict(ctx, frame, params=params)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE" and message in e.value.message
    assert e.value.get_http_status_code() == 400


def test_model_k_above_the_gallery_returns_the_gallery(built):
    model, ctx = _model(built)
    out = model.predict(ctx, pd.DataFrame({"caption": ["A male pedestrian."]}), params={"top_k": 10**9})
    assert 0 < len(out["image_names"].iloc[0]) <= 21  # the world's 21 test images


@pytest.mark.slow
def test_served_model_answers_bad_requests_with_400_and_no_stack_trace(built, retrieval_world, tmp_path):
    """``mlflow models serve`` of the saved ensemble (no tracking server): bad requests get 400,
    a message naming the problem, no stack trace and no server path; a good one still answers."""
    path = tmp_path / "served"
    serving.save_ensemble(path, built, ["A male pedestrian.", "This is a white Audi Sedan."],
                          code_paths=[str(ROOT / "pipeline")])
    with served_model(str(path), ENV, cwd=retrieval_world) as port:
        def post(rows, params=None):
            body = {"dataframe_split": {"columns": ["caption"], "data": rows}}
            if params is not None:
                body["params"] = params
            req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        for rows, params, message in ([[["A male pedestrian."]], {"top_k": -5}, "top_k must be a whole number >= 1"],
                                      [[[None]], None, "caption is null"],
                                      [[[42]], None, "caption"]):
            status, answer = post(rows, params)
            assert status == 400, (rows, params, answer)
            assert message in answer["message"], answer
            assert "stack_trace" not in answer and "Traceback" not in answer["message"]
            assert str(ROOT) not in answer["message"] and "site-packages" not in answer["message"]
        status, answer = post([["A male pedestrian."]], {"top_k": 2})
        assert status == 200 and len(answer["predictions"][0]["image_names"]) == 2


# ------------------------------------------------------------------ search on the command line

def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["search", "A male \udcff pedestrian."], "caption is not valid UTF-8 text"),
    (["search", "A male pedestrian.", "--top", "-1"], "--top must be a whole number >= 1, got -1"),
    (["search", "A male pedestrian.", "--top", "0"], "--top must be a whole number >= 1, got 0"),
])
def test_search_refuses_bad_input_before_loading_anything(args, message, monkeypatch):
    # A tracking server that is not there: the refusal must come before any attempt to reach it.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert message in _one_error_line(res.output)
    assert time.monotonic() - started < 5


def test_search_with_undecodable_argv_bytes_in_a_real_process():
    """Bytes that are not UTF-8 on the real command line (Python gives surrogates for them)."""
    env = {**os.environ, **ENV, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_closed_port()}"}
    res = subprocess.run([sys.executable, "-m", "pipeline", "search", b"A female \xff\xfe pedestrian."],
                         capture_output=True, env=env, cwd=ROOT, timeout=60)
    assert res.returncode == 2
    err = res.stderr.decode("utf-8", "replace")
    assert "caption is not valid UTF-8 text" in _one_error_line(err)


# ------------------------------------------------------------------ stage outputs

def test_output_below_a_file_is_refused_before_work(tmp_path):
    blocker = tmp_path / "reports"
    blocker.write_text("a file where a folder should be")
    res = CliRunner().invoke(app, ["ingest", "--release", str(tmp_path / "no-release"), "--prepared",
                                   str(tmp_path / "prepared"), "--report", str(blocker / "ingest.json"),
                                   "--no-track", "--params", str(ROOT / "params.yaml")])
    assert res.exit_code == 2
    line = _one_error_line(res.output)
    assert f"cannot write {blocker / 'ingest.json'}: {blocker} is a file, not a folder" in line
    assert not (tmp_path / "prepared").exists()  # nothing was done


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: permission bits for a normal user; for root
    (which ignores them) a folder under /sys, where even root gets EPERM."""
    if os.geteuid() != 0:
        d = tmp_path / "locked"
        d.mkdir()
        d.chmod(0o500)
        return d / "sub"
    d = Path("/sys/track2-reliability-test")
    try:
        d.mkdir()
    except PermissionError:
        return d
    d.rmdir()
    pytest.skip("no folder refuses writes to root here")


def test_unwritable_output_folder_is_refused_before_work(tmp_path):
    locked = _unwritable_folder(tmp_path)
    try:
        res = CliRunner().invoke(app, ["mapping", "--labels", str(tmp_path / "labels.parquet"),
                                       "--mapping", str(tmp_path / "m" / "mapping.yaml"),
                                       "--report", str(locked / "mapping.json"), "--plot", str(tmp_path / "m.png"),
                                       "--no-track", "--params", str(ROOT / "params.yaml")])
    finally:
        if os.geteuid() != 0:
            locked.parent.chmod(0o700)
    assert res.exit_code == 2
    line = _one_error_line(res.output)
    assert f"cannot write {locked / 'mapping.json'}" in line and "is not writable" in line
    assert not (tmp_path / "m").exists()


def test_search_grid_into_a_file_blocked_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    res = CliRunner().invoke(app, ["search", "A male pedestrian.", "--grid", str(tmp_path / "f" / "g.png")])
    assert res.exit_code == 2 and "is a file, not a folder" in _one_error_line(res.output)
