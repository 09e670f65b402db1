"""The dual-encoder baseline on a tiny world: a training step, saving, the stage, serving, the fallback.

The world is the retrieve tests' (tests/conftest.py ``retrieval_world``: solid-colour images,
noisy member predictions, a ten-rule mapping, test ground truth) plus a training split - its val
pairs again under new names - and a passed validation gate. Models are tiny (32x32 input, a
16-dimensional joint space, 2 epochs); MiniLM and the ImageNet trunk load from their wheels.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from pipeline.baseline.stage import BaselineIO  # noqa: E402

TINY = {"input_size": [32, 32], "epochs": 2, "batch_size": 8, "image_trainable": 1, "embed_dim": 16,
        "register_model": False, "grid_samples": 1, "text_batch_size": 32, "cache_batch_size": 32,
        "workers": 1, "threads": 1}


@pytest.fixture
def baseline_world(retrieval_world: Path) -> Path:
    """``retrieval_world`` with a training split (the val pairs, renamed) and a passed gate."""
    prepared = retrieval_world / "data" / "prepared"
    images = pd.read_parquet(prepared / "images.parquet")
    labels = pd.read_parquet(prepared / "labels.parquet")
    queries = pd.read_parquet(prepared / "queries.parquet")
    text = dict(zip(queries.loc[queries["split"] == "val", "image"], queries.loc[queries["split"] == "val", "text"]))
    labels["caption"] = labels["name"].map(text)
    labels["attribute"] = ""
    train = labels.copy()
    train["split"], train["name"] = "train", "tr_" + train["name"]
    for name in labels["name"]:
        shutil.copy(retrieval_world / "images" / name, retrieval_world / "images" / f"tr_{name}")
    timages = images[images["split"] == "val"].copy()
    timages["split"], timages["name"] = "train", "tr_" + timages["name"]
    timages["path"] = "images/" + timages["name"]
    pd.concat([timages, images], ignore_index=True).to_parquet(prepared / "images.parquet")
    for c in labels.columns:
        if str(labels[c].dtype) == "Int8":
            train[c] = train[c].astype("Int8")
    pd.concat([train, labels], ignore_index=True).to_parquet(prepared / "labels.parquet")
    gate = retrieval_world / "reports" / "validation" / "gate.json"
    gate.parent.mkdir(parents=True, exist_ok=True)
    gate.write_text(json.dumps({"status": "passed"}))
    return retrieval_world


def _params(overrides: dict | None = None):
    from pipeline.config import parse_params
    from tests.conftest import retrieval_params_data
    from pipeline.config import merge

    return parse_params(merge(retrieval_params_data(), {"baseline": {**TINY, **(overrides or {})}}))


def _io(world: Path) -> BaselineIO:
    d = world / "data"
    return BaselineIO(d / "prepared", world / "release", d / "mapping" / "mapping.yaml",
                      world / "reports" / "validation" / "gate.json", d / "baseline", world / "reports" / "bl.json")


def test_training_step_moves_only_the_trainable_parts(baseline_world):
    from pipeline.baseline.data import load_pairs
    from pipeline.baseline.fit import FitConfig, fit
    from pipeline.baseline.model import build_clip, split_image_tower, text_from_pooled
    from pipeline.baseline.stage import model_config
    from pipeline.baseline.text import encode_pooled, tokenizer
    from pipeline.mapping import load_mapping
    from pipeline.train.cache import build_features

    params = _params()
    cfg = model_config(params)
    clip = build_clip(cfg)
    prefix, tail = split_image_tower(clip, 1)
    pairs = load_pairs(baseline_world / "data" / "prepared", load_mapping(baseline_world / "data" / "mapping" / "mapping.yaml"))
    assert len(pairs) == 14 and pairs.stated.any(axis=1).all()
    source = build_features("memory", prefix, list(pairs.paths), {"full": (0.0, 1.0, 0.0, 1.0)}, cfg.input_size,
                            cfg.mean, cfg.std, workers=1, flip_rows=np.zeros(0, np.int64), keep_aspect=True)
    pooled = torch.from_numpy(encode_pooled(clip.text, tokenizer(64), list(pairs.captions)))
    before = {k: v.clone() for k, v in clip.state_dict().items()}
    history = fit(clip, tail, source, np.arange(len(pairs)), lambda b: text_from_pooled(clip, pooled[b]), pairs,
                  FitConfig(2, 8, 1e-2, 1e-4, 0.1, 0, False))
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    after = clip.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("text.proj") for k in changed) and any(k.startswith("visual.head") for k in changed)
    assert "logit_scale" in changed
    assert not any(k.startswith("text.transformer") for k in changed)  # MiniLM frozen
    # The frozen prefix (all trunk units but the last) never moves, BatchNorm statistics included.
    frozen = [k for k in before if k.startswith("visual.trunk.blocks.")]
    assert frozen and not any(k in changed for k in frozen)


def test_stage_scores_serves_and_backs_the_ensemble(baseline_world):
    from pipeline import registry, retrieve, serving
    from pipeline.baseline import serve
    from pipeline.baseline.encoder import Gallery, load_text_tower
    from pipeline.baseline.model import load_clip
    from pipeline.baseline.text import encode_pooled, tokenizer
    from tests.helpers import register_io, retrieve_io

    params = _params()
    io = _io(baseline_world)
    report = __import__("pipeline.baseline.stage", fromlist=["run"]).run(params, io)
    for split in ("val", "test"):
        assert set(report[split]) == {"all", "pedestrian", "vehicle"}
        assert 0.0 <= report[split]["all"]["official_map10"] <= 1.0 + 1e-5
    out = io.out
    for f in ("model/clip.pt", "model/vocab.json", "model/reference_text.npz", "model/fallback.json",
              "gallery_val.npz", "gallery_test.npz", "submission.json", "metrics.json", "plots/curves.csv",
              "plots/curves.png", "plots/domain_metrics.csv"):
        assert (out / f).exists(), f
    assert list((out / "grids").glob("*.png"))
    assert json.loads(io.metrics.read_text())["val"]["all"]["official_map10"] >= 0
    curves = pd.read_csv(out / "plots" / "curves.csv")
    assert curves["epoch"].tolist() == [1, 2] and "val_official_map10" in curves
    sub = json.loads((out / "submission.json").read_text())
    texts = pd.read_parquet(baseline_world / "data" / "prepared" / "queries.parquet").query("split == 'test'") \
        .sort_values("query_id")["text"].tolist()
    assert [r["text"] for r in sub["results"]] == texts and all(len(r["image_names"]) == 10 for r in sub["results"])

    # Saved weights: the whole model and the text tower alone give what the stage ranked with.
    clip, cfg = load_clip(out / "model" / "clip.pt")
    tower, scale, _ = load_text_tower(out / "model" / "clip.pt")
    tok = tokenizer(cfg.context_length)
    p1 = torch.from_numpy(encode_pooled(clip.text, tok, texts[:3]))
    p2 = torch.from_numpy(encode_pooled(tower, tok, texts[:3]))
    assert torch.allclose(clip.text.proj(p1), tower.proj(p2), atol=1e-5)
    assert scale == pytest.approx(float(clip.logit_scale.detach().exp()))
    g = Gallery.load(out / "gallery_test.npz")
    norms = np.linalg.norm(g.embeddings, axis=1)  # unit length (a solid-colour image may embed to 0)
    assert np.allclose(norms[norms > 0], 1, atol=1e-4) and (norms > 0).mean() > 0.5

    # The served baseline ranks like the submission; a caption of no words says "none".
    with __import__("tempfile").TemporaryDirectory() as tmp:
        artifacts = serve.write_artifacts(Path(tmp), out, 10, -1.0)
        answer = serve.answer(artifacts, [texts[0], "?!", ""])
    first = next(r for r in sub["results"] if r["text"] == texts[0])
    assert list(answer["image_names"].iloc[0]) == first["image_names"]
    assert answer["path"].tolist() == ["dual_encoder", "none", "none"]
    assert list(answer["image_names"].iloc[1]) == [] and list(answer["distances"].iloc[2]) == []

    # The ensemble served with the baseline as fallback (register --baseline, untracked).
    retrieve.run(params, retrieve_io(baseline_world))
    rio = register_io(baseline_world)
    rio = registry.RegisterIO(rio.retrieval, rio.mapping, rio.validation, rio.queries, rio.report, out)
    registry.run(params, rio)  # builds the bundle and answers its example
    from pipeline.baseline.combine import fallback_artifacts

    with __import__("tempfile").TemporaryDirectory() as tmp:
        d = baseline_world / "data"
        artifacts = serving.write_artifacts(Path(tmp), d / "retrieval" / "gallery_test.npz", d / "mapping" / "mapping.yaml",
                                            "paper", 10, fallback=fallback_artifacts(out))
        caps = ["This is a white Audi Sedan.", "a lady with a rucksack", "", "!!!", "\x00\x01"]
        served = serving.answer(artifacts, caps)
    assert served["path"].tolist()[0] == "decoupled" and served["domain"].iloc[0] == "vehicle"
    assert json.loads(served["attributes"].iloc[0]) == {"color": "white", "type": "Sedan", "brand": "Audi"}
    assert json.loads((out / "model" / "fallback.json").read_text())["reader"] == {
        "min_cosine": params.baseline.reader_min_cosine, "min_margin": params.baseline.reader_min_margin}
    assert served["path"].iloc[1] in ("dual_encoder", "fusion", "none")
    assert served["path"].tolist()[2:] == ["none", "none", "none"]
    assert all(len(x) == 0 for x in served["image_names"].iloc[2:])
    plain = serving.write_artifacts(Path(baseline_world / "plain"), d / "retrieval" / "gallery_test.npz",
                                    d / "mapping" / "mapping.yaml", "paper", 10)
    alone = serving.answer(plain, ["This is a white Audi Sedan.", "nothing known here"])
    assert alone["path"].tolist() == ["decoupled", "none"] and list(alone["image_names"].iloc[1]) == []


def test_stage_refuses_a_failed_gate(baseline_world):
    from pipeline.baseline.stage import run

    io = _io(baseline_world)
    io.gate.write_text(json.dumps({"status": "failed"}))
    with pytest.raises(ValueError, match="validation 'failed'"):
        run(_params(), io)


@pytest.mark.slow
def test_tracked_stage_registers_its_own_model(baseline_world, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from pipeline.baseline.stage import run
    from pipeline.stage import execute

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("TRACK2_ROOT", str(tmp_path))
    mlflow.set_tracking_uri(uri)
    report = execute("baseline", run, _params({"register_model": True}), _io(baseline_world), track=True)
    reg = report["registry"]
    client = MlflowClient(uri)
    aliases = client.get_registered_model("track2-clip-baseline").aliases
    assert str(aliases["challenger"]) == reg["version"] == str(aliases["production"])
    mv = client.get_model_version("track2-clip-baseline", reg["version"])
    assert mv.tags["validation"] == "passed" and "val.all.official_map10" in mv.tags
    run_ = client.get_run(mv.run_id)
    curve = client.get_metric_history(run_.info.run_id, "epoch_loss")
    assert [m.step for m in curve] == [1, 2]
    model = mlflow.pyfunc.load_model("models:/track2-clip-baseline@production")
    out = model.predict(pd.DataFrame({"caption": ["This is a white Audi Sedan."]}), params={"top_k": 3})
    assert out["path"].iloc[0] == "dual_encoder" and len(out["image_names"].iloc[0]) == 3
