"""The train stage on 2 processes (DDP, gloo on CPU) gives the metrics and predictions of 1 process,
and rank 0 alone writes files and MLflow runs (issue 15).

The smoke release, ingested as in tests/model/test_train_run.py, trains the pedestrian domain on
tf_efficientnet_lite0 through the real command line: ``train.nproc: 2`` makes ``python -m
pipeline train`` re-launch itself as two ranks (pipeline/train/distributed.py). The compared
configuration is the one where DDP is exact up to the order of float sums: a linear tail (no
BatchNorm, which on CPU normalises over each rank's half of the batch) and no dropout (whose masks
fall differently on split batches). Measured on the 2-core dev machine: equal val accuracy and
mA for all 12 subtasks, max |probability difference| 6e-8; the test allows 1e-5.

Which process writes what is recorded by an audit hook (``sys.addaudithook`` in a
``sitecustomize`` on the ranks' PYTHONPATH): every file opened for writing, renamed, created or
removed under the run's folders, per rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.config import merge, parse_params, read_yaml
from pipeline.train.loop import STOP_ENV

ROOT = Path(__file__).resolve().parents[2]
BACKBONE = "tf_efficientnet_lite0"
DOMAIN = "pedestrian"
PROB_ATOL = 1e-5  # measured 6e-8: only the order of the gradient sums differs

pytestmark = pytest.mark.slow

AUDIT = textwrap.dedent("""
    # Test-only (tests/model/test_train_ddp.py): log this process's writes under WATCH.
    import atexit, os, sys
    WATCH = os.environ.get("DDP_AUDIT_WATCH")
    if WATCH:
        seen, busy = [], []
        def hook(event, args):
            if busy:
                return
            if event == "open":
                path, mode, flags = args
                write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT
                writing = (mode and any(c in str(mode) for c in "wax+")) or (
                    mode is None and isinstance(flags, int) and flags & write_flags)
                paths = [path] if writing else []
            elif event in ("os.rename", "os.mkdir", "os.remove", "shutil.rmtree", "os.rmdir"):
                paths = [args[0]] + ([args[1]] if event == "os.rename" else [])
            else:
                return
            for p in paths:
                if isinstance(p, (str, os.PathLike)) and os.path.abspath(os.fspath(p)).startswith(WATCH):
                    seen.append(f"{event} {os.fspath(p)}")
        def dump():
            busy.append(1)
            name = f"{os.environ.get('RANK', 'parent')}-{os.getpid()}.log"
            with open(os.path.join(os.environ["DDP_AUDIT_DIR"], name), "w") as f:
                f.write("\\n".join(seen))
        sys.addaudithook(hook)
        atexit.register(dump)
""")


@pytest.fixture()
def prepared(smoke_release, tmp_path) -> Path:
    """The smoke release's typed tables and a passed validation gate."""
    from pipeline.ingest import ingest_release

    ingest_release(smoke_release, tmp_path / "prepared", workers=1)
    (tmp_path / "gate.json").write_text(json.dumps({"status": "passed"}))
    return tmp_path / "prepared"


def params_file(path: Path, nproc: int) -> Path:
    """params.yaml with the small, DDP-exact pedestrian run (as test_train_run's smoke test)."""
    raw = merge(read_yaml(ROOT / "params.yaml"), {"base": {"experiment": "test-ddp"}, "train": {
        "input_size": {"pedestrian": [32, 16], "vehicle": [32, 32], "router": [32, 32]},
        "trainable": {"pedestrian": "linear", "vehicle": 1, "router": "linear"},
        "epochs": {"pedestrian": 2, "vehicle": 1, "router": 1}, "batch_size": 32, "workers": 1,
        "head_dropout": 0.0, "log_models": False, "nproc": nproc}})
    parse_params(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def train_cli(root: Path, out: Path, nproc: int, track: bool, audit: Path) -> subprocess.CompletedProcess:
    """``python -m pipeline train`` as dvc.yaml runs it, outputs under ``out``."""
    audit.mkdir(parents=True, exist_ok=True)
    (audit / "sitecustomize.py").write_text(AUDIT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(audit), str(ROOT)]),
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "TRACK2_ROOT": str(root),
           "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_WAIT_POLICY": "PASSIVE",
           "DDP_AUDIT_WATCH": str(root), "DDP_AUDIT_DIR": str(audit)}
    for key in (STOP_ENV, "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "pipeline", "train", "--domain", DOMAIN, "--backbone", BACKBONE,
           "--prepared", str(root / "prepared"), "--gate", str(root / "gate.json"),
           "--models", str(out / "models"), "--predictions", str(out / "predictions"),
           "--report", str(out / "report.json"), "--checkpoints", str(out / "ckpt"),
           "--metrics", str(out / "metrics.json"),
           "--params", str(params_file(root / f"params-{nproc}.yaml", nproc)),
           "--track" if track else "--no-track"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def train_here(root: Path, out: Path) -> dict:
    """The one-process reference, in this process (untracked): a process start-up less."""
    from pipeline.config import load_params
    from pipeline.stage import execute
    from pipeline.train.stage import TrainIO, run

    params = load_params(params_file(root / "params-1.yaml", 1))
    io = TrainIO(DOMAIN, BACKBONE, root / "prepared", root / "gate.json", out / "models", out / "predictions",
                 out / "report.json", out / "ckpt")
    return execute(f"train-{DOMAIN}-{BACKBONE}", run, params, io, track=False)


def writes(audit: Path) -> dict[str, list[str]]:
    """``{rank: [event path, ...]}`` from the audit logs (``parent``: the launching process)."""
    out: dict[str, list[str]] = {}
    for f in audit.glob("*.log"):
        out.setdefault(f.name.split("-")[0], []).extend(x for x in f.read_text().splitlines() if x)
    return out


def test_two_ranks_match_one_process_and_only_rank_0_writes(prepared, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv(STOP_ENV, raising=False)
    root = tmp_path
    train_here(root, root / "one")
    train_cli(root, root / "two", 2, track=True, audit=root / "audit-2")

    one, two = (json.loads((root / d / "report.json").read_text()) for d in ("one", "two"))
    assert (one["ranks"], two["ranks"]) == (1, 2)
    assert set(one["subtasks"]) == set(two["subtasks"]) and len(one["subtasks"]) == 12
    for g, m in one["subtasks"].items():
        for key in ("val_acc", "val_mA", "n_val", "n_train", "majority_acc"):
            assert two["subtasks"][g][key] == m[key], f"{g}: {key} {two['subtasks'][g][key]} != {m[key]}"
    for split in ("val", "test"):
        a, b = (pd.read_parquet(root / d / "predictions" / f"{split}.parquet") for d in ("one", "two"))
        assert list(a.columns) == list(b.columns) and a["name"].tolist() == b["name"].tolist()
        np.testing.assert_allclose(b.drop(columns="name").to_numpy(), a.drop(columns="name").to_numpy(),
                                   rtol=0, atol=PROB_ATOL)
    assert sorted(p.name for p in (root / "two" / "models").iterdir()) == \
        sorted(p.name for p in (root / "one" / "models").iterdir())

    # Rank 0 wrote the outputs (and the MLflow store); rank 1 and the launcher wrote nothing.
    w = writes(root / "audit-2")
    assert {"0", "1", "parent"} <= set(w), w.keys()
    assert w["1"] == [] and w["parent"] == [], {k: v[:5] for k, v in w.items()}
    assert any(str(root / "two" / "report.json") in x for x in w["0"])
    assert not (root / "two" / "ckpt").exists() or not any((root / "two" / "ckpt").rglob("*.pt"))

    # One stage run and one child run per subtask, all from rank 0 and all finished.
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("test-ddp").experiment_id])
    stage = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(stage) == 1 and stage[0].info.run_id == two["mlflow_run_id"]
    assert len(runs) == 1 + 12
    assert {r.info.status for r in runs} == {"FINISHED"}
