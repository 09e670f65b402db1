"""End-to-end runs of the train stage on a tiny prepared set with the stand-in backbone.

Each run uses its own MLflow SQLite store in a temp folder (MLFLOW_TRACKING_URI) and its own
output folders, so nothing touches the repository's mlflow.db or data/.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import schema
from pipeline.config import load_params
from pipeline.train.loop import Interrupted, STOP_ENV
from tests.code.test_train_support import TINY, install_fake_backbones, make_prepared

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def tiny_params(root, **train):
    section = {
        "input_size": {"pedestrian": [16, 8], "vehicle": [12, 12], "router": [12, 12]},
        "trainable": {"pedestrian": 2, "vehicle": 1, "router": "linear"},
        "epochs": {"pedestrian": 2, "vehicle": 2, "router": 1},
        "batch_size": 8, "lr": 0.01, "workers": 1,
        "pseudo_thresholds": {"color": 0.0, "type": 0.0, "brand": 0.0},  # fills every missing label
        **train,
    }
    return load_params(ROOT / "params.yaml", {"base": {"experiment": "test-train"}, "train": section})


def run_train(params, root: Path, domain: str, backbone: str, out: str = "", track: bool = True) -> dict:
    """The train stage as `dvc repro` runs it (one MLflow run around it), outputs under ``root``."""
    from pipeline.stage import execute
    from pipeline.train.stage import TrainIO, run

    gate = root / "reports" / "validation" / "gate.json"
    if not gate.exists():
        gate.parent.mkdir(parents=True, exist_ok=True)
        gate.write_text(json.dumps({"status": "passed"}))
    io = TrainIO(domain, backbone, root / "prepared", gate, root / f"{out}models" / domain / backbone,
                 root / f"{out}predictions" / domain / backbone, root / "reports" / "train" / f"{domain}-{backbone}.json",
                 root / "ckpt" / domain / backbone)
    return execute(f"train-{domain}-{backbone}", run, params, io, track=track, section="train", data=(io.prepared,))


@pytest.fixture()
def env(tmp_path, monkeypatch):
    install_fake_backbones(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("TRACK2_ROOT", str(tmp_path))  # artifacts under tmp_path/mlartifacts
    monkeypatch.delenv(STOP_ENV, raising=False)
    make_prepared(tmp_path)
    return tmp_path


def test_vehicle_run_writes_models_predictions_report_and_mlflow(env):
    from mlflow import MlflowClient


    params = tiny_params(env)
    report = run_train(params, env, "vehicle", TINY)

    images = pd.read_parquet(env / "prepared" / "images.parquet")
    cols = schema.prob_columns(schema.VEHICLE_GROUPS)
    for split in ("val", "test"):
        pred = pd.read_parquet(env / "predictions" / "vehicle" / TINY / f"{split}.parquet")
        assert list(pred.columns) == ["name", *cols]
        assert sorted(pred["name"]) == sorted(images.loc[images["split"] == split, "name"])
        for g in schema.VEHICLE_GROUPS:
            np.testing.assert_allclose(pred[schema.prob_columns([g])].sum(axis=1), 1.0, rtol=1e-5)
    for g in schema.VEHICLE_GROUPS:
        saved = torch.load(env / "models" / "vehicle" / TINY / f"{g.name}.pt", weights_only=False)
        assert saved["groups"] == [g.name] and saved["backbone"] == TINY

    on_disk = json.loads((env / "reports" / "train" / f"vehicle-{TINY}.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert set(on_disk["subtasks"]) == {"color", "type", "brand"}
    for m in on_disk["subtasks"].values():
        assert {"val_acc", "val_mA", "majority_acc", "majority_mA", "n_train"} <= set(m)
    # 24 training vehicles: 8 carry only a type, 16 only colour + brand; threshold 0 fills all
    assert on_disk["pseudo_labels_added"] == {"color": 8, "type": 16, "brand": 8}

    uri = f"sqlite:///{env / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parent = client.get_run(report["mlflow_run_id"])
    assert parent.data.tags["stage"] == f"train-vehicle-{TINY}"
    assert {"git_commit", "dvc_exp_name", "data_hash"} <= set(parent.data.tags)
    children = client.search_runs([parent.info.experiment_id],
                                   f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    # Vehicles train twice (the second round on pseudo-labels): a child run per subtask and round.
    first = [r for r in children if "round" not in r.data.tags]
    final = [r for r in children if r.data.tags.get("round") == "pseudo-labels"]
    assert len(children) == 6
    assert sorted(r.data.tags["subtask"] for r in first) == sorted(r.data.tags["subtask"] for r in final) \
        == ["brand", "color", "type"]
    child = next(r for r in final if r.data.tags["subtask"] == "color")
    assert len(client.get_metric_history(child.info.run_id, "loss")) == 2
    assert len(client.get_metric_history(child.info.run_id, "val_mA")) == 2
    arts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert "confusion_color.png" in arts
    for g in ("color", "type", "brand"):
        versions = client.search_model_versions(f"name = 'track2-vehicle-{g}-{TINY}'")
        assert len(versions) == 1

    import mlflow.pytorch
    model = mlflow.pytorch.load_model(f"models:/track2-vehicle-color-{TINY}/1")
    out = model(torch.zeros(2, 3, 12, 12))
    assert out.shape == (2, len(schema.VEHICLE_COLORS))
    torch.testing.assert_close(out.sum(1), torch.ones(2))


def test_pedestrian_and_router_runs_cover_every_group(env):

    params = tiny_params(env, log_models=False)
    for domain, groups in (("pedestrian", schema.PEDESTRIAN_GROUPS), ("router", (schema.ROUTER_GROUP,))):
        report = run_train(params, env, domain, TINY)
        assert set(report["subtasks"]) == {g.name for g in groups}
        pred = pd.read_parquet(env / "predictions" / domain / TINY / "val.parquet")
        assert list(pred.columns) == ["name", *schema.prob_columns(groups)]
        assert len(pred) == 16


def test_multitask_ablation_trains_one_net_with_every_head(env):

    report = run_train(tiny_params(env, multitask=True, log_models=False), env, "pedestrian", TINY)
    assert set(report["subtasks"]) == {g.name for g in schema.PEDESTRIAN_GROUPS}
    assert (env / "models" / "pedestrian" / TINY / "multitask.pt").exists()


@pytest.mark.parametrize("domain", ["vehicle"])
def test_resume_after_interruption_equals_an_uninterrupted_run(env, monkeypatch, domain):

    def outputs(out):
        weights = {f.name: torch.load(f, weights_only=False)["state_dict"]
                   for f in sorted((env / f"{out}models" / domain / TINY).glob("*.pt"))}
        preds = pd.read_parquet(env / f"{out}predictions" / domain / TINY / "test.parquet")
        return weights, preds

    params = tiny_params(env, log_models=False)
    run_train(params, env, domain, TINY, out="a_")
    w_a, p_a = outputs("a_")

    # Output folders are not part of the checkpoint fingerprint: only what changes training is.
    monkeypatch.setenv(STOP_ENV, "3")
    with pytest.raises(Interrupted):
        run_train(params, env, domain, TINY, out="b_")
    assert not (env / "b_predictions" / domain / TINY / "test.parquet").exists()
    assert any((env / "ckpt" / domain / TINY).rglob("*.pt"))
    monkeypatch.delenv(STOP_ENV)
    run_train(params, env, domain, TINY, out="b_")
    w_b, p_b = outputs("b_")

    assert w_a.keys() == w_b.keys()
    for name in w_a:
        for k in w_a[name]:
            assert torch.equal(w_a[name][k], w_b[name][k]), f"{name}: {k} differs after resume"
    pd.testing.assert_frame_equal(p_a, p_b)
    assert not any((env / "ckpt" / domain / TINY).rglob("*.pt"))  # cleaned up after success


def test_smoke_release_with_a_real_backbone(smoke_release, tmp_path, monkeypatch):
    """The `smoke` synthetic release, ingested, trained for one epoch on tf_efficientnet_lite0."""
    from mlflow import MlflowClient

    from pipeline.ingest import ingest_release

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("TRACK2_ROOT", str(tmp_path))
    monkeypatch.delenv(STOP_ENV, raising=False)
    ingest_release(smoke_release, tmp_path / "prepared", workers=1)
    params = tiny_params(tmp_path, input_size={"pedestrian": [32, 16], "vehicle": [32, 32], "router": [32, 32]},
                         trainable={"pedestrian": 1, "vehicle": 1, "router": "linear"},
                         epochs={"pedestrian": 1, "vehicle": 1, "router": 1}, batch_size=32,
                         pseudo_thresholds={"color": 0.9, "type": 0.9, "brand": 0.9})
    images = pd.read_parquet(tmp_path / "prepared" / "images.parquet")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not the URI an earlier test left set
    for domain, groups in (("pedestrian", schema.PEDESTRIAN_GROUPS), ("vehicle", schema.VEHICLE_GROUPS),
                           ("router", (schema.ROUTER_GROUP,))):
        report = run_train(params, tmp_path, domain, "tf_efficientnet_lite0")
        assert set(report["subtasks"]) == {g.name for g in groups}
        for split in ("val", "test"):
            pred = pd.read_parquet(tmp_path / "predictions" / domain / "tf_efficientnet_lite0" / f"{split}.parquet")
            assert list(pred.columns) == ["name", *schema.prob_columns(groups)]
            assert sorted(pred["name"]) == sorted(images.loc[images["split"] == split, "name"])
        for g in groups:
            assert client.search_model_versions(f"name = 'track2-{domain}-{g.name}-tf_efficientnet_lite0'")
