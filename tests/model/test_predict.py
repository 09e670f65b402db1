"""The ``predict`` command (issue 15): any image folder indexed by the trained members, in shards.

One module fixture trains the three domains with the stand-in backbone (as test_train_run.py),
tracked, so the subtask models are logged and registered, then registers the ensemble through the
register stage (alias challenger, promoted to production). The tests predict with those models:
shards in separate processes merged against one process, the train stage's own val/test
predictions, the registered production model, the served model ranking a predicted gallery, and
hostile input.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pipeline import schema
from pipeline.cli import app
from pipeline.rank import GalleryIndex
from tests.code.test_train_support import TINY, install_fake_backbones, make_prepared
from tests.model.test_train_run import run_train, tiny_params

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # as test_train_run.py: real training and MLflow logging

PRODUCTION = "models:/track2-ensemble@production"
#: The settings the tiny models were trained with, and small prediction batches (several per shard).
TRAIN = {"input_size": {"pedestrian": [16, 8], "vehicle": [12, 12], "router": [12, 12]},
         "trainable": {"pedestrian": 2, "vehicle": 1, "router": "linear"},
         "epochs": {"pedestrian": 2, "vehicle": 2, "router": 1}, "batch_size": 8, "lr": 0.01, "workers": 1,
         "threads": 1, "cache_batch_size": 8, "device": "cpu"}
#: Run the CLI in a fresh process with the stand-in backbone installed (it is not a real backbone).
BOOT = ("import sys, pipeline; from tests.code.test_train_support import fake_backbones_module as f; "
        "m = f(); sys.modules['pipeline.backbones'] = m; pipeline.backbones = m; "
        "from pipeline.cli import app; app(sys.argv[1:], prog_name='pipeline')")


def params_data() -> dict:
    from pipeline.config import merge, read_yaml

    data = merge(read_yaml(ROOT / "params.yaml"), {"base": {"experiment": "test-train"}, "train": TRAIN})
    data["retrieve"]["members"] = {TINY: 1.0}  # replaced, not merged with the real members
    return data


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Trained members (models/ + predictions/), a params file for them, the ensemble registered."""
    from pipeline.config import parse_params

    root = tmp_path_factory.mktemp("predict")
    mp = pytest.MonkeyPatch()
    install_fake_backbones(mp)
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mp.setenv("TRACK2_ROOT", str(root))
    mp.setenv("TQDM_DISABLE", "1")
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    make_prepared(root)
    train_params = tiny_params(root, **TRAIN)
    for domain in schema.TRAINING_DOMAINS:
        run_train(train_params, root, domain, TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(params_data(), sort_keys=False))
    params = parse_params(params_data())
    # A gallery to bundle: the test images, predicted; then the register stage as dvc.yaml runs it.
    test_dir = root / "test_images"
    test_dir.mkdir()
    for p in sorted((root / "images").glob("test_*")):
        shutil.copy(p, test_dir / p.name)
    _predict(params, test_dir, root / "models", root / "bundled")
    _register(root, params)
    yield root, params
    mp.undo()


def _predict(params, images: Path, model, out: Path, shard=None) -> dict:
    from pipeline import predict as pr

    return pr.run(params, pr.PredictIO(images, str(model), out), shard)


def _register(root: Path, params) -> None:
    from pipeline.mapping import Rule, save_mapping
    from pipeline.registry import RegisterIO, run
    from pipeline.stage import execute

    retrieval = root / "retrieval"
    retrieval.mkdir()
    shutil.copy(root / "bundled" / "gallery.npz", retrieval / "gallery_test.npz")
    figures = {"official_map10": 0.5, "standard_map10": 0.5, "hit1": 0.5, "hit10": 0.9, "n_queries": 4}
    (retrieval / "metrics.json").write_text(json.dumps({"val": {"all": figures}, "classifiers": {}}))
    (retrieval / "ranker.json").write_text(json.dumps({"distance": "paper", "top_k": 5, "relevance": "inclusion",
                                                       "members": {TINY: 1.0}}))
    save_mapping([Rule("female", "gender", "female"), Rule("male", "gender", "male"),
                  Rule("white", "color", "white"), Rule("black", "color", "black")],
                 root / "mapping.yaml")
    gate = root / "reports" / "validation" / "gate.json"
    io = RegisterIO(retrieval, root / "mapping.yaml", gate, root / "prepared" / "queries.parquet",
                    root / "reports" / "register.json")
    execute("register", run, params, io, data=(io.queries.parent,))  # as the CLI: data = the prepared tables
    from mlflow import MlflowClient

    client = MlflowClient()
    if "production" not in client.get_registered_model("track2-ensemble").aliases:
        # promote's rules are the registry's business: here the one version simply is production.
        client.set_registered_model_alias("track2-ensemble", "production",
                                          client.get_registered_model("track2-ensemble").aliases["challenger"])


def _arrays(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "gallery.npz") as z:
        return {k: z[k] for k in z.files}


def _assert_same_gallery(a: Path, b: Path) -> None:
    x, y = _arrays(a), _arrays(b)
    assert x.keys() == y.keys()
    for k in x:
        assert np.array_equal(x[k], y[k]), f"gallery array {k} differs"
    for d in schema.TRAINING_DOMAINS:  # the merged member tables: the same bytes
        f = Path("predictions") / d / TINY / "gallery.parquet"
        assert (a / f).read_bytes() == (b / f).read_bytes(), f"{f} differs"


def test_three_shard_processes_merge_into_the_single_process_index(world, tmp_path):
    root, params = world
    single = _predict(params, root / "images", root / "models", tmp_path / "single")
    assert single["indexed"] == 92 and single["unreadable"] == 0 and single["shards"] == 1
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    env.pop("WORLD_SIZE", None)
    procs = [subprocess.Popen([sys.executable, "-c", BOOT, "predict", "--images", str(root / "images"),
                               "--model", str(root / "models"), "--out", str(tmp_path / "sharded"),
                               "--shard", f"{i}/3", "--params", str(root / "params.yaml")],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-2000:]
        assert stdout.startswith("shard "), stdout
    ranges = [json.loads((tmp_path / "sharded" / "shards" / f"shard-{i:05d}-of-00003" / "shard.json").read_text())["range"]
              for i in range(3)]
    assert ranges == [[0, 32], [32, 64], [64, 92]]  # contiguous whole batches of 8, sorted by name
    res = CliRunner().invoke(app, ["predict-merge", "--out", str(tmp_path / "sharded")])
    assert res.exit_code == 0, res.output
    assert "92 images indexed from 3 shards" in res.output
    _assert_same_gallery(tmp_path / "single", tmp_path / "sharded")
    index = GalleryIndex.load(tmp_path / "sharded" / "gallery.npz")
    assert sorted(index.names.tolist()) == sorted(p.name for p in (root / "images").iterdir())


def test_predicting_val_and_test_reproduces_the_train_stage_predictions(world, tmp_path):
    root, params = world
    _predict(params, root / "images", root / "models", tmp_path)
    images = pd.read_parquet(root / "prepared" / "images.parquet")
    file_of = {(r.split, r.name): Path(r.path).name for r in images.itertuples()}  # names != file names here
    for d in schema.TRAINING_DOMAINS:
        mine = pd.read_parquet(tmp_path / "predictions" / d / TINY / "gallery.parquet").set_index("name")
        for split in schema.EVAL_SPLITS:
            theirs = pd.read_parquet(root / "predictions" / d / TINY / f"{split}.parquet")
            got = mine.loc[[file_of[(split, n)] for n in theirs["name"]], theirs.columns[1:]]
            assert (got.dtypes == np.float32).all()
            # Same decoding, prefix, TTA and heads; only the batches differ (train: the domain's
            # rows in 64-image chunks; predict: the folder in batches of 8). On CPU that changes
            # no bit; other kernels (GPU, AMP) may, hence the tolerance.
            np.testing.assert_allclose(got.to_numpy(), theirs.iloc[:, 1:].to_numpy(), rtol=0, atol=1e-6)


def test_the_registered_production_model_predicts_what_its_models_folder_does(world, tmp_path):
    root, params = world
    from pipeline import predict as pr

    models = pr.load_models(PRODUCTION, params)
    assert models.resolved == "track2-ensemble version 1" and models.members == {TINY: 1.0}
    assert {(m.domain, len(m.subtasks)) for m in models.models} == {("pedestrian", 12), ("vehicle", 3), ("router", 1)}
    assert _predict(params, root / "images", PRODUCTION, tmp_path / "registered")["resolved"] == models.resolved
    _predict(params, root / "images", root / "models", tmp_path / "folder")
    x, y = _arrays(tmp_path / "registered"), _arrays(tmp_path / "folder")
    for k in x:  # the logged prefix + tail + head are the folder's weights
        assert np.array_equal(x[k], y[k]), k


def test_the_served_model_and_search_rank_a_predicted_gallery(world, tmp_path, monkeypatch):
    import mlflow

    root, params = world
    footage = tmp_path / "footage"  # a user's new camera: names the models never saw
    footage.mkdir()
    for p in sorted((root / "images").glob("train_*"))[::10]:
        shutil.copy(p, footage / f"cam1_{p.name}")
    _predict(params, footage, root / "models", tmp_path / "out")
    index = GalleryIndex.load(tmp_path / "out" / "gallery.npz")
    new = set(index.names.tolist())
    assert len(new) == 7
    # A caption of a domain the (tiny, barely trained) router sent some images to.
    caption = "A female pedestrian." if (index.domain == "pedestrian").any() else "This is a white car."

    model = mlflow.pyfunc.load_model(PRODUCTION, model_config={"gallery": str(tmp_path / "out" / "gallery.npz")})
    answer = model.predict(pd.DataFrame({"caption": [caption]}), params={"top_k": 3})
    assert len(answer["image_names"].iloc[0]) and set(answer["image_names"].iloc[0]) <= new
    bundled = mlflow.pyfunc.load_model(PRODUCTION).predict(pd.DataFrame({"caption": [caption]}))
    assert not set(bundled["image_names"].iloc[0]) & new  # without the option: the bundled gallery

    monkeypatch.chdir(root)
    res = CliRunner().invoke(app, ["search", caption, "--top", "2",
                                   "--gallery", str(tmp_path / "out" / "gallery.npz")])
    assert res.exit_code == 0, res.output
    ranked = [ln.split()[1] for ln in res.output.splitlines() if ln.strip()[:2] in ("1.", "2.")]
    assert len(ranked) == 2 and set(ranked) <= new
    res = CliRunner().invoke(app, ["search", "A female pedestrian.", "--gallery", str(tmp_path / "nope.npz")])
    assert res.exit_code == 2 and "gallery" in res.output and "not found" in res.output


def test_unreadable_images_are_skipped_and_counted(world, tmp_path, monkeypatch):
    root, _ = world
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in sorted((root / "images").glob("test_*"))[:5]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("camera 1, 5 May")
    monkeypatch.chdir(root)
    res = CliRunner().invoke(app, ["predict", "--images", str(folder), "--model", str(root / "models"),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "5 images indexed" in res.output and "1 unreadable images skipped" in res.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["unreadable"] == 1 and report["unreadable_images"][0]["name"] == "broken.jpg"
    assert report["ignored_files"] == 1 and report["files"] == 6
    assert "broken.jpg" not in GalleryIndex.load(tmp_path / "out" / "gallery.npz").names


def test_hostile_input_is_one_line_and_exit_2(world, tmp_path, monkeypatch):
    root, _ = world
    monkeypatch.chdir(root)
    empty = tmp_path / "empty"
    empty.mkdir()
    text_only = tmp_path / "text"
    text_only.mkdir()
    (text_only / "a.txt").write_text("x")
    good = ["--model", str(root / "models"), "--out", str(tmp_path / "out")]
    cases = [
        (["--images", str(empty), *good], "no images"),
        (["--images", str(text_only), *good], "no images"),
        (["--images", str(text_only / "a.txt"), *good], "not a folder"),
        (["--images", str(tmp_path / "missing"), *good], "not found"),
        (["--images", str(root / "images"), "--model", str(tmp_path / "no_models"), "--out", str(tmp_path / "o")],
         "models folder"),
        (["--images", str(root / "images"), *good, "--shard", "3/2"], "shard 3/2"),
        (["--images", str(root / "images"), *good, "--shard", "first"], "--shard must be i/n"),
    ]
    for args, message in cases:
        res = CliRunner().invoke(app, ["predict", *args])
        assert res.exit_code == 2, (args, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (args, res.output)
    assert not (tmp_path / "out").exists()  # refused before any work
    res = CliRunner().invoke(app, ["predict-merge", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "no shards" in res.output
    # One shard of three: the merge names the missing ones.
    res = CliRunner().invoke(app, ["predict", "--images", str(root / "images"), *good, "--shard", "1/3"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["predict-merge", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "shards [0, 2] of 3 are missing" in res.output
