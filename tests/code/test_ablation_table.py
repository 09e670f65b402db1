"""The ablation machinery without DVC: rows -> `-S` values, exp show data -> figures -> report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline import ablation as A

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_every_row_and_step_names_known_rows_and_the_headline_rows_are_1_4_7():
    assert len(set(A.ROW_NAMES)) == len(A.ROWS)
    assert {r.name for r in A.ROWS if r.headline} == {"clip", "single", "ensemble"}
    for step in A.STEPS:
        assert {step.before, step.to} <= set(A.ROW_NAMES), step
    with pytest.raises(A.AblationError, match="unknown rows"):
        A.pick_rows(["single", "nope"])
    assert [r.name for r in A.pick_rows(["ensemble", "clip"])] == ["clip", "ensemble"]  # the table's order


def test_overrides_apply_with_dvcs_own_hydra_to_the_params_they_mean(params, tmp_path):
    """The expanded overrides, applied as `dvc exp run -S` applies them, give the row's params:
    a mapping is replaced (no crop left, one member), the seed is the training seed only."""
    from dvc.utils.hydra import apply_overrides

    from pipeline.config import load_params

    rows = {r.name: r for r in A.ROWS}
    first = params["train"]["backbones"][0]
    cases = {"no-crops": lambda p: set(p["train"]["crops"].values()) == {"full"} and p["train"]["backbones"] == [first],
             "single": lambda p: p["retrieve"]["members"] == {first: 1.0} and p["train"] == {**params["train"], "seed": 3},
             "full-ft": lambda p: set(p["train"]["trainable"].values()) == {"full"},
             "no-class-weights": lambda p: p["train"]["class_weight_power"] == 0.0,
             "clip": lambda p: p["baseline"]["seed"] == 3 and p["train"] == params["train"]}
    for name, check in cases.items():
        path = tmp_path / name / "params.yaml"
        path.parent.mkdir()
        shutil.copy(ROOT / "params.yaml", path)
        apply_overrides(str(path), A.overrides_for(rows[name], 3, params, "smoke"))
        got = yaml.safe_load(path.read_text())
        assert check(got), (name, got["train"], got["retrieve"])
        assert got["base"]["profile"] == "smoke" and got["base"]["seed"] == params["base"]["seed"]
        load_params(path)  # still valid params
    with pytest.raises(A.AblationError, match="empties a mapping"):  # DVC would write broken YAML
        A.expand("train.crops={}", params)
    with pytest.raises(A.AblationError, match="does not have"):
        A.expand("train.nope={a: 1}", params)


def test_plan_gives_headline_rows_every_seed_and_the_others_the_first():
    runs = [(r.name, s) for r, s in A.plan(A.pick_rows(["clip", "no-pseudo"]), [4, 7])]
    assert runs == [("clip", 4), ("clip", 7), ("no-pseudo", 4)]
    assert A.experiment_name(A.ROWS[0], 4) == "ablation-clip-s4"
    with pytest.raises(A.AblationError):
        A.plan(A.ROWS, [])
    assert A.parse_list("0, 1", int) == [0, 1]
    with pytest.raises(A.AblationError):
        A.parse_list("0,,1", int)


def test_mlflow_uri_is_made_absolute_only_when_unset(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert A.environment(tmp_path)["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert A.environment(tmp_path)["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"


def _exp(members: list[str], test_all: float, times: dict[str, float], baseline: float = 0.2) -> dict:
    split = lambda v: {d: {"official_map10": v, "standard_map10": v / 2} for d in A.DOMAINS}  # noqa: E731
    metrics = {"retrieve.json": {"val": split(test_all - 0.1), "test": split(test_all),
                                 "classifiers": {"pedestrian_mA": 0.6, "vehicle_mA": 0.7}},
               "baseline.json": {"val": split(baseline), "test": split(baseline), "time_s": 50.0, "cpu_s": 40.0}}
    for d in ("pedestrian", "vehicle", "router"):
        for m, t in times.items():
            metrics[f"train-{d}-{m}.json"] = {"time_s": t, "cpu_s": t / 2, "val_mA": 0.5}
    return {"params": {"retrieve": {"members": {m: 1.0 for m in members}}}, "metrics": metrics}


def test_figures_sum_the_train_time_of_the_ranked_members_only():
    rows = {r.name: r for r in A.ROWS}
    exp = _exp(["a"], 0.5, {"a": 10.0, "b": 100.0})
    f = A.figures_of(rows["single"], exp)
    assert f["test/all/official_map10"] == 0.5 and f["val/vehicle/standard_map10"] == pytest.approx(0.2)
    assert f["time_s"] == 30.0 and f["cpu_s"] == 15.0 and f["mA/vehicle"] == 0.7
    clip = A.figures_of(rows["clip"], exp)
    assert clip["test/all/official_map10"] == 0.2 and clip["time_s"] == 50.0 and "mA/vehicle" not in clip


def test_report_shows_mean_and_range_and_the_paragraph_follows_the_figures(tmp_path):
    raw = {"ablation-single-s0": _exp(["a"], 0.50, {"a": 10.0}), "ablation-single-s1": _exp(["a"], 0.52, {"a": 12.0}),
           "ablation-ensemble-s0": _exp(["a", "b"], 0.60, {"a": 10.0, "b": 20.0}),
           "ablation-ensemble-s1": _exp(["a", "b"], 0.62, {"a": 10.0, "b": 20.0}),
           "ablation-full-distance-s0": _exp(["a"], 0.505, {"a": 10.0})}
    result = A.gather(A.pick_rows(["single", "full-distance", "ensemble", "no-crops"]), [0, 1], raw)
    assert result.missing == {"no-crops": ["ablation-no-crops-s0"]}
    assert result.cells["single"]["test/all/official_map10"].text() == "0.510 [0.500, 0.520]"
    assert A.noise(result) == pytest.approx(0.02)
    steps = "\n".join(A.which_steps_help(result))
    assert "**ensemble of two backbones** (single → ensemble): 0.510 → 0.610 (+0.100), helps" in steps
    assert "keywords-only" in steps and "within the seeds' noise" in steps  # 0.505 -> 0.510
    assert "crops" not in steps.replace("keywords", "")  # no row without crops ran
    md, png = A.write_report(result, tmp_path, "python -m pipeline ablation")
    text = md.read_text()
    assert "| 4. decoupled + partial freezing (one backbone) | 2 | 0.510 [0.500, 0.520]" in text
    assert "0.820" in text and "ablation-no-crops-s0" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Different figures, a different verdict: nothing is written in advance.
    raw["ablation-ensemble-s0"] = _exp(["a", "b"], 0.49, {"a": 1.0, "b": 1.0})
    raw["ablation-ensemble-s1"] = _exp(["a", "b"], 0.50, {"a": 1.0, "b": 1.0})
    again = "\n".join(A.which_steps_help(A.gather(result.rows, [0, 1], raw)))
    assert "(single → ensemble): 0.510 → 0.495 (-0.015), within the seeds' noise" in again


def test_unfinished_experiments_are_not_collected(monkeypatch):
    """DVC shows a queued or running experiment with the workspace's metrics: collecting it
    would put the shipped model's figures in the row."""
    import json

    from pipeline import ablation

    def exp(name, state):
        return {"name": name, "executor": {"state": state},
                "revs": [{"name": name, "rev": name, "data": {"params": {"params.yaml": {"data": {}}},
                                                              "metrics": {"reports/metrics/retrieve.json": {"data": {"x": 1}}}}}]}

    shown = [{"experiments": [exp("ablation-a-s0", "success"), exp("ablation-b-s0", "running"),
                              exp("ablation-c-s0", "queued")]}]
    monkeypatch.setattr(ablation, "dvc", lambda *a, **k: json.dumps(shown))
    assert list(ablation.collect_raw(None, {})) == ["ablation-a-s0"]
    assert sorted(ablation.collect_raw(None, {}, finished_only=False)) == ["ablation-a-s0", "ablation-b-s0",
                                                                          "ablation-c-s0"]


def test_queue_keeps_finished_experiments_of_this_commit_unless_rerun(monkeypatch, tmp_path):
    """Adding a seed must not rerun the seeds already run; --rerun removes and queues them again."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"backbones": ["tf_efficientnet_lite0"]}}))
    done = {"ablation-clip-s0": {"params": {}, "metrics": {"baseline.json": {"x": 1}}, "rev": "r", "finished": True}}
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(A, "collect_raw", lambda root, env, finished_only=True: done)
    monkeypatch.setattr(A, "dvc", lambda root, env, *args, **kw: calls.append(args) or "")
    clip = next(r for r in A.ROWS if r.name == "clip")
    runs = [(clip, 0), (clip, 1)]
    assert A.queue(tmp_path, {}, runs, None) == ["ablation-clip-s1"]
    assert [c[:2] for c in calls] == [("exp", "run")] and "ablation-clip-s1" in calls[0]
    calls.clear()
    assert A.queue(tmp_path, {}, runs, None, rerun=True) == ["ablation-clip-s0", "ablation-clip-s1"]
    assert calls[0] == ("exp", "remove", "ablation-clip-s0") and [c[:2] for c in calls[1:]] == [("exp", "run")] * 2
