"""Register and promote with a temporary MLflow sqlite store; the pyfunc round trip; serving."""

from __future__ import annotations

import json
import urllib.request

import pytest

from pipeline import registry
from tests.helpers import register_io, retrieve_io, served_model


_counter = iter(range(10_000))


def _model(client, versions):
    """A registered model with one version per ``(validation, metric)``; returns its name."""
    name = f"m{next(_counter)}"
    client.create_registered_model(name)
    for validation, value in versions:
        tags = {"validation": validation}
        if value is not None:
            tags["val.all.official_map10"] = str(value)
        client.create_model_version(name, "file:///nowhere", tags=tags)
    return name


def _production(client, name):
    v = client.get_registered_model(name).aliases.get("production")
    return None if v is None else str(v)


def test_first_promotion_takes_the_best_validated(client):
    name = _model(client, [("passed", 0.5), ("passed", 0.6), ("failed", 0.9)])
    d = registry.promote(client, name)
    assert d.action == "promote" and _production(client, name) == "2"
    tags = client.get_model_version(name, "2").tags
    assert tags["promotion.decision"] == "promote" and "no production model yet" in tags["promotion.reason"]
    assert json.loads(tags["promotion.record"])["value"] == 0.6


def test_refuses_failed_validation_even_when_best(client):
    name = _model(client, [("failed", 0.9), ("missing", 0.95)])
    d = registry.promote(client, name)
    assert d.action == "noop" and _production(client, name) is None


def test_promote_by_margin_and_noop(client):
    name = _model(client, [("passed", 0.50)])
    registry.promote(client, name)
    assert _production(client, name) == "1"
    client.create_model_version(name, "file:///nowhere",
                                tags={"validation": "passed", "val.all.official_map10": "0.52"})
    d = registry.promote(client, name, margin=0.05)  # 0.52 does not beat 0.50 by 0.05
    assert d.action == "noop" and _production(client, name) == "1"
    assert client.get_model_version(name, "2").tags["promotion.decision"] == "noop"
    assert registry.promote(client, name, margin=0.05, dry_run=True).action == "noop"
    d = registry.promote(client, name, margin=0.01)
    assert d.action == "promote" and _production(client, name) == "2"
    tags = client.get_model_version(name, "2").tags
    record = json.loads(tags["promotion.record"])
    assert record["incumbent"] == "1" and record["incumbent_value"] == 0.5 and record["metric"] == "val.all.official_map10"
    assert record["value"] == 0.52 and "beats production" in tags["promotion.reason"]
    assert client.get_model_version(name, "1").tags["promotion.replaced_by"] == "2"
    # nothing better now: a no-op, production unchanged
    assert registry.promote(client, name, margin=0.0).action == "noop"
    assert _production(client, name) == "2"


def test_dry_run_changes_nothing(client):
    name = _model(client, [("passed", 0.7)])
    d = registry.promote(client, name, dry_run=True)
    assert d.action == "promote" and _production(client, name) is None
    assert "promotion.decision" not in client.get_model_version(name, "1").tags


def test_promote_other_metric(client):
    name = _model(client, [("passed", 0.7), ("passed", 0.6)])
    client.set_model_version_tag(name, "1", "val_hit1", "0.1")
    client.set_model_version_tag(name, "2", "val_hit1", "0.3")
    d = registry.promote(client, name, metric="val_hit1")  # the old spelling of val.all.hit1
    assert _production(client, name) == "2" and "val.all.hit1" in d.reason


def test_validation_status(tmp_path):
    f = tmp_path / "summary.json"
    assert registry.validation_status(f) == "missing"
    f.write_text(json.dumps({"success": False}))
    assert registry.validation_status(f) == "failed"
    f.write_text(json.dumps({"status": "passed"}))
    assert registry.validation_status(f) == "passed"
    f.write_text(json.dumps({"nothing": 1}))
    with pytest.raises(registry.RegistryError, match="cannot tell"):
        registry.validation_status(f)


def test_version_tags_are_compact_and_named_as_dvc_names_them():
    metrics = {"val": {"all": {"official_map10": 0.5, "n_queries": 3}, "vehicle": {"hit1": 0.25}},
               "classifiers": {"router_accuracy": 1.0}}
    tags = registry.version_tags(metrics, {"relevance": "inclusion", "top_k": 10}, "val.all.official_map10",
                                 {"git_commit": "abc"})
    assert set(tags) == {"metrics", "metric_definition", "lineage", "val.all.official_map10"}
    assert json.loads(tags["metrics"]) == {"val.all.official_map10": 0.5, "val.vehicle.hit1": 0.25,
                                           "classifiers.router_accuracy": 1.0}
    assert tags["val.all.official_map10"] == "0.500000"


def _version(client, name, value, definition=None, validation="passed"):
    tags = {"validation": validation, "metrics": json.dumps({"val.all.official_map10": value, "val.all.hit1": value})}
    if definition is not None:
        tags["metric_definition"] = json.dumps(definition)
    client.create_model_version(name, "file:///nowhere", tags=tags)


def test_promote_refuses_an_unknown_metric_and_changes_nothing(client):
    name = f"m{next(_counter)}"
    client.create_registered_model(name)
    _version(client, name, 0.5)
    for bad in ("val.all.nonsense", "validation", "nonsense"):
        with pytest.raises(registry.UnknownMetric, match="val.all.hit1, val.all.official_map10"):
            registry.promote(client, name, bad)
    assert _production(client, name) is None
    assert registry.known_metrics(client.search_model_versions(f"name='{name}'")) == \
        ["val.all.hit1", "val.all.official_map10"]
    assert registry.promote(client, name, "val.all.hit1").action == "promote"


def test_versions_registered_before_the_metrics_tag_compare_under_todays_names(client):
    name = f"m{next(_counter)}"
    client.create_registered_model(name)
    client.create_model_version(name, "file:///nowhere", tags={  # the old tag layout
        "validation": "passed", "val_official_map10": "0.50", "val_pedestrian_hit1": "0.4",
        "val_router_accuracy": "1.0"})
    assert registry.promote(client, name).candidate == "1"
    assert registry.known_metrics(client.search_model_versions(f"name='{name}'")) == \
        ["classifiers.router_accuracy", "val.all.official_map10", "val.pedestrian.hit1"]
    _version(client, name, 0.49)   # today's layout, a lower figure: production stays
    assert registry.promote(client, name).action == "noop" and _production(client, name) == "1"
    _version(client, name, 0.51)
    assert registry.promote(client, name).candidate == "3"


def test_promote_compares_only_figures_of_the_same_definition(client):
    name = f"m{next(_counter)}"
    client.create_registered_model(name)
    inclusion, label = {"relevance": "inclusion", "top_k": 10}, {"relevance": "label", "top_k": 10}
    _version(client, name, 0.50, inclusion)
    assert registry.promote(client, name).candidate == "1"
    _version(client, name, 0.90, label)       # a higher figure, but judged another way
    _version(client, name, 0.55, {"relevance": "inclusion", "top_k": 5})
    d = registry.promote(client, name)
    assert d.action == "noop" and _production(client, name) == "1"
    assert "relevance=label, top_k=10, not relevance=inclusion, top_k=10" in d.refused["2"]
    assert "top_k=5" in d.refused["3"]
    _version(client, name, 0.60, inclusion)
    d = registry.promote(client, name)
    assert d.action == "promote" and d.candidate == "4" and _production(client, name) == "4"


# --------------------------------------------------------------------------- the real model

def _register(world, params, store, validation="passed"):
    from pipeline import retrieve

    retrieve.run(params, retrieve_io(world))
    summary = world / "reports" / "validation" / "gate.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps({"success": validation == "passed"}))
    from pipeline.stage import execute

    return execute("register", registry.run, params, register_io(world))["version"]


@pytest.mark.slow
def test_register_round_trip_and_tags(retrieval_world, retrieval_params, store, client):
    import mlflow

    version = _register(retrieval_world, retrieval_params, store)
    mv = client.get_model_version("track2-ensemble", version)
    assert mv.tags["validation"] == "passed" and float(mv.tags["val.all.official_map10"]) > 0.9
    lineage, ranker = json.loads(mv.tags["lineage"]), json.loads(mv.tags["ranker"])
    assert lineage["git_commit"] and lineage["data_hash"] and ranker["distance"] == retrieval_params.retrieve.distance
    assert json.loads(mv.tags["metric_definition"]) == {"relevance": retrieval_params.retrieve.relevance,
                                                        "top_k": retrieval_params.retrieve.top_k}
    assert len(mv.tags) <= 14, sorted(mv.tags)  # compact: details live in the JSON tags
    aliases = client.get_registered_model("track2-ensemble").aliases
    assert str(aliases["challenger"]) == str(version)
    assert str(aliases["production"]) == str(version)  # register.promote is true by default

    model = mlflow.pyfunc.load_model("models:/track2-ensemble@production")
    assert model.metadata.signature is not None
    import pandas as pd

    captions = pd.DataFrame({"caption": ["This is a white Audi Sedan.",
                                         "A male pedestrian with a backpack bag."]})
    out = model.predict(captions, params={"top_k": 3})
    assert out["domain"].tolist() == ["vehicle", "pedestrian"]
    assert len(out["image_names"].iloc[0]) == 3 and out["image_names"].iloc[0][0].startswith("vehicle_")
    sub = json.loads((retrieval_world / "data" / "retrieval" / "submission.json").read_text())
    first = next(r for r in sub["results"] if r["text"] == "This is a white Audi Sedan.")
    assert list(out["image_names"].iloc[0]) == first["image_names"][:3]  # served = submitted ranking
    d = out["distances"].iloc[0]
    assert list(d) == sorted(d)


@pytest.mark.slow
def test_search_and_promote_commands(retrieval_world, retrieval_params, store, monkeypatch):
    import yaml
    from PIL import Image
    from typer.testing import CliRunner

    from pipeline.cli import app

    _register(retrieval_world, retrieval_params, store)
    monkeypatch.chdir(retrieval_world)
    from tests.conftest import retrieval_params_data

    (retrieval_world / "params.yaml").write_text(yaml.safe_dump(retrieval_params_data()))
    res = CliRunner().invoke(app, ["search", "This is a black BMW SUV.", "--top", "3", "--grid", "g.png"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    ranked = [ln.strip() for ln in lines if ln.strip()[:3] == "1. "]
    assert lines[0] == "model: track2-ensemble version 1 (@production)"  # which version answered
    assert lines[1].startswith("vehicle:") and ranked and ranked[0].startswith("1. vehicle_")
    assert any(ln.startswith("[decoupled]") for ln in lines)  # which path answered
    assert Image.open(retrieval_world / "g.png").size[0] > 200
    res = CliRunner().invoke(app, ["promote", "--dry-run", "--margin", "0.5"])
    assert res.exit_code == 0 and res.output.startswith("noop:"), res.output
    res = CliRunner().invoke(app, ["promote", "--metric", "val.all.nonsense"])  # not a known name
    assert res.exit_code == 2 and "unknown metric 'val.all.nonsense'" in res.output
    assert "val.all.official_map10" in res.output
    res = CliRunner().invoke(app, ["promote", "--list-metrics"])
    assert res.exit_code == 0 and "val.all.official_map10" in res.output.splitlines()
    res = CliRunner().invoke(app, ["search", "A male pedestrian.", "--alias", "nope"])
    assert res.exit_code == 2 and "cannot load models:/track2-ensemble@nope" in res.output


@pytest.mark.slow
def test_mlflow_models_serve_answers_captions(retrieval_world, retrieval_params, store):
    from pipeline.registry import PRODUCTION

    from mlflow import MlflowClient

    if "track2-ensemble" not in {m.name for m in MlflowClient(store).search_registered_models()}:
        _register(retrieval_world, retrieval_params, store)
    with served_model(f"models:/track2-ensemble@{PRODUCTION}",
                      {"MLFLOW_TRACKING_URI": store, "MLFLOW_DISABLE_TELEMETRY": "true"}, start_s=90) as port:
        body = json.dumps({"dataframe_split": {"columns": ["caption"],
                                               "data": [["This is a black BMW SUV."],
                                                        ["A female pedestrian with a backpack bag."]]}})
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(req, timeout=30).read())["predictions"]
        assert [a["domain"] for a in answer] == ["vehicle", "pedestrian"]
        assert len(answer[0]["image_names"]) == 10 or len(answer[0]["image_names"]) == 9  # 9 test vehicles
        assert answer[1]["image_names"][0].endswith(".jpg")
