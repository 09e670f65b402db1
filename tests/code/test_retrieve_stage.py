"""The retrieve stage end to end on a tiny world, and the `score` command in both modes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline import retrieve
from pipeline.cli import app
from tests.helpers import retrieve_io


def test_stage_outputs(retrieval_world, retrieval_params):
    result = retrieve.run(retrieval_params, retrieve_io(retrieval_world))
    out = retrieval_world / "data" / "retrieval"
    queries = pd.read_parquet(retrieval_world / "data" / "prepared" / "queries.parquet")
    test_texts = queries[queries["split"] == "test"].sort_values("query_id")["text"].tolist()

    sub = json.loads((out / "submission.json").read_text())
    assert [r["text"] for r in sub["results"]] == test_texts  # official order
    assert all(len(r["image_names"]) == 10 and len(set(r["image_names"])) == 10 for r in sub["results"])
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(result))
    for split in ("val", "test"):
        assert set(result[split]) == {"all", "pedestrian", "vehicle"}
        # predictions are labels + noise: the right images come first
        assert result[split]["all"]["hit1"] == 1.0
    assert result["classifiers"]["router_accuracy"] == 1.0
    acc = pd.read_csv(out / "plots" / "group_accuracy_members.csv")
    assert set(acc["model"]) == {"m1", "m2", "ensemble"} and len(acc) == 3 * (12 + 3 + 1)
    ens = pd.read_csv(out / "plots" / "group_accuracy.csv")  # DVC plots data: the ensemble only
    assert len(ens) == 16 and "pedestrian/gender" in set(ens["subtask"])
    assert (out / "plots" / "domain_metrics.csv").exists() and (out / "plots" / "group_accuracy.png").exists()
    grids = sorted(p.name for p in (out / "grids").glob("*.png"))
    assert len(grids) == 4 and Image.open(out / "grids" / grids[0]).size[0] > 500
    assert json.loads((out / "ranker.json").read_text())["distance"] == retrieval_params.retrieve.distance


def test_missing_member_fails_clearly(retrieval_world, retrieval_params):
    shutil.rmtree(retrieval_world / "data" / "predictions" / "vehicle" / "m2")
    with pytest.raises(retrieve.RetrieveError, match="missing predictions .*vehicle/m2/val.parquet"):
        retrieve.run(retrieval_params, retrieve_io(retrieval_world))


def test_gallery_image_without_predictions_fails(retrieval_world, retrieval_params):
    images = pd.read_parquet(retrieval_world / "data" / "prepared" / "images.parquet")
    extra = images.iloc[[0]].assign(name="999999.jpg")
    pd.concat([images, extra]).to_parquet(retrieval_world / "data" / "prepared" / "images.parquet")
    with pytest.raises(retrieve.RetrieveError, match="1 val images have no predictions.*999999.jpg"):
        retrieve.run(retrieval_params, retrieve_io(retrieval_world))


# --------------------------------------------------------------------------- score CLI

LABELS = """\
000001.jpg$1,0,1,0,1,0,0,0,0,0,0,1,0,0,1,0,0,0,0,0,0$A female pedestrian with a backpack.
000002.jpg$0,0,1,0,1,0,0,0,0,0,0,1,0,0,1,0,0,0,0,0,0$A male pedestrian with a backpack.
000003.jpg$1,0,1,0,0,1,0,0,0,0,1,0,0,1,0,0,0,0,0,0,0$A female pedestrian with a shoulder bag.
abcdefghij.jpg$white Audi.$This is a white Audi.
klmnopqrst.jpg$Sedan.$This is a Sedan.
"""
NAMES = ["000001.jpg", "000002.jpg", "000003.jpg", "abcdefghij.jpg", "klmnopqrst.jpg"]


def _submission(path: Path, texts, lists):
    pad = [f"pad{i}" for i in range(10)]
    path.write_text(json.dumps({"results": [{"text": t, "image_names": (n + pad)[:10]}
                                            for t, n in zip(texts, lists)]}))
    return path


def _texts():
    return [line.split("$")[2] for line in LABELS.splitlines()]


def test_score_gt_mode(tmp_path):
    (tmp_path / "gt.txt").write_text("t1$a.jpg\nt2$b.jpg$c.jpg\n")
    sub = _submission(tmp_path / "s.json", ["t1", "t2"], [["a.jpg"], ["x", "c.jpg"]])
    res = CliRunner().invoke(app, ["score", "--submission", str(sub), "--gt", str(tmp_path / "gt.txt")])
    assert res.exit_code == 0, res.output
    last = res.output.strip().splitlines()[-1]
    assert float(last) == pytest.approx((1.0 + 0.5) / 2, abs=1e-5)  # the official figure alone


def test_score_order_mismatch_gives_no_score(tmp_path):
    (tmp_path / "gt.txt").write_text("t1$a.jpg\nt2$b.jpg\n")
    sub = _submission(tmp_path / "s.json", ["t2", "t1"], [["a.jpg"], ["b.jpg"]])
    res = CliRunner().invoke(app, ["score", "--submission", str(sub), "--gt", str(tmp_path / "gt.txt")])
    assert res.exit_code == 2
    assert "text 0 differs" in res.output and "no score" in res.output


def test_score_labels_mode_label_relevance(tmp_path):
    (tmp_path / "labels.txt").write_text(LABELS)
    # each query gets its own image first; label equality makes only that image relevant
    sub = _submission(tmp_path / "s.json", _texts(), [[n] + [m for m in NAMES if m != n] for n in NAMES])
    res = CliRunner().invoke(app, ["score", "--submission", str(sub),
                                   "--labels", str(tmp_path / "labels.txt"),
                                   "--relevance", "label"])
    assert res.exit_code == 0, res.output
    assert float(res.output.strip().splitlines()[-1]) == pytest.approx(1.0, abs=1e-5)
    assert "pedestrian" in res.output and "vehicle" in res.output


def test_score_labels_mode_inclusion_uses_the_mapping(tmp_path):
    from pipeline.mapping import Rule, save_mapping

    save_mapping([Rule("female", "gender", "female"), Rule("male", "gender", "male"),
                  Rule("backpack", "bag", "backpack"), Rule("white", "color", "white"),
                  Rule("audi", "brand", "Audi"), Rule("sedan", "type", "Sedan")], tmp_path / "m.yaml")
    (tmp_path / "labels.txt").write_text(LABELS)
    # query 0 "female ... backpack": only 000001 is female with a backpack; ranked at 2 -> AP 0.5
    lists = [["000003.jpg", "000001.jpg"], ["000002.jpg"], ["000003.jpg"],
             ["abcdefghij.jpg"], ["klmnopqrst.jpg"]]
    sub = _submission(tmp_path / "s.json", _texts(), lists)
    from pipeline.score import score

    res = score(sub, labels=tmp_path / "labels.txt", relevance="inclusion", mapping=tmp_path / "m.yaml")
    assert res["pedestrian"]["official_map10"] == pytest.approx((0.5 + 1 + 1) / 3, abs=1e-5)
    assert res["vehicle"]["official_map10"] == pytest.approx(1.0, abs=1e-5)
    # query 2 states female only (no rule for "shoulder"): 000001 and 000003 are both relevant
    assert res["pedestrian"]["standard_map10"] == pytest.approx((0.5 + 1 + 1 / 2) / 3, abs=1e-5)


def test_score_rejects_a_malformed_submission(tmp_path):
    (tmp_path / "gt.txt").write_text("t1$a.jpg\n")
    (tmp_path / "s.json").write_text(json.dumps({"results": [{"text": "t1", "image_names": ["a.jpg"]}]}))
    res = CliRunner().invoke(app, ["score", "--submission", str(tmp_path / "s.json"),
                                   "--gt", str(tmp_path / "gt.txt")])
    assert res.exit_code == 2 and "expected 10" in res.output
