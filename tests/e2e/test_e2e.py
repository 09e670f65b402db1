"""End-to-end: `dvc repro` of the whole pipeline on the `smoke` profile in a temporary copy.

The copy gets its own git repository and MLflow database, so this proves the pipeline runs from
a clean state exactly as a new user's `make run` would. Every output root of `base` is moved
(`out/...`): the stages must find each other's files through dvc.yaml alone. `base.profile:
smoke` is the only setting changed; its thresholds come from the params' own profile blocks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.repos import R, SMOKE_OVERRIDES, copy_repo, override_params, pipeline_env



@pytest.mark.slow
def test_release_is_synthesized(smoke_repo):
    release = smoke_repo / "data" / "synthetic"
    assert (release / "train" / "train_label.txt").exists()
    assert (release / "test" / "test_text.txt").exists()
    n_test_images = len(list((release / "test" / "test_images").glob("*.jpg")))
    assert n_test_images == len((release / "test" / "test_text.txt").read_text().splitlines())


@pytest.mark.slow
def test_dvc_status_is_clean_after_repro(smoke_repo):
    out = subprocess.run(["dvc", "status"], cwd=smoke_repo, env=pipeline_env(smoke_repo),
                         capture_output=True, text=True, check=True).stdout
    assert "up to date" in out.lower(), out


@pytest.mark.slow
def test_contact_sheet_and_ground_truth(smoke_repo):
    assert (smoke_repo / R["reports_dir"] / "synthetic_contact_sheet.png").stat().st_size > 10_000
    gt = (smoke_repo / "data" / "synthetic" / "test" / "test_gt.txt").read_text().splitlines()
    texts = (smoke_repo / "data" / "synthetic" / "test" / "test_text.txt").read_text().splitlines()
    assert [line.split("$")[0] for line in gt] == texts


@pytest.mark.slow
def test_prepared_tables_and_mapping(smoke_repo):
    import pandas as pd

    prepared = smoke_repo / R["prepared_dir"]
    images = pd.read_parquet(prepared / "images.parquet")
    assert set(images["split"]) == {"train", "val", "test"}
    report = json.loads((smoke_repo / R["reports_dir"] / "ingest.json").read_text())
    assert report, "ingest wrote no counts"
    assert (smoke_repo / R["mapping_dir"] / "mapping.yaml").exists()
    summary = json.loads((smoke_repo / R["reports_dir"] / "validation" / "summary.json").read_text())
    assert summary["status"] == "passed"


@pytest.mark.slow
def test_nothing_is_written_under_the_default_roots(smoke_repo):
    """Moved roots are honoured by every stage: no stage hard-codes a default path."""
    for default in ("reports", "data/prepared", "data/mapping", "data/models", "data/predictions",
                    "data/retrieval", "data/checkpoints", "data/baseline"):
        leftovers = [p for p in (smoke_repo / default).rglob("*") if p.name != ".gitkeep"] \
            if (smoke_repo / default).exists() else []
        assert not leftovers, f"written under the default {default}: {leftovers[:3]}"


@pytest.mark.slow
def test_corrupted_release_stops_the_pipeline_at_validate(tmp_path, smoke_repo):
    """A bad release must stop `dvc repro` at validate, before any training time is spent."""
    from tests.data.test_validate_release import corrupt_release

    repo = copy_repo(tmp_path / "repo")
    shutil.copytree(smoke_repo / "data" / "synthetic", repo / "data" / "corrupt")
    corrupt_release(repo / "data" / "corrupt")
    override_params(repo, {"base": {**SMOKE_OVERRIDES["base"], "release_dir": "data/corrupt"}})
    result = subprocess.run(["dvc", "repro", "validate"], cwd=repo, env=pipeline_env(repo),
                            capture_output=True, text=True, timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode != 0, log[-3000:]
    assert "validate" in log and "critical" in log, log[-3000:]
    summary = repo / R["reports_dir"] / "validation" / "summary.json"
    assert summary.exists() and json.loads(summary.read_text())["status"] == "failed"
    assert not (repo / R["models_dir"]).exists()


@pytest.mark.slow
def test_training_outputs_every_member(smoke_repo):
    params = yaml.safe_load((smoke_repo / "params.yaml").read_text())
    for domain in ("pedestrian", "vehicle", "router"):
        for backbone in params["train"]["backbones"]:
            for split in ("val", "test"):
                assert (smoke_repo / R["predictions_dir"] / domain / backbone / f"{split}.parquet").exists()
            assert (smoke_repo / R["reports_dir"] / "train" / f"{domain}-{backbone}.json").exists()


@pytest.mark.slow
def test_submission_and_production_model(smoke_repo):
    texts = (smoke_repo / "data" / "synthetic" / "test" / "test_text.txt").read_text().splitlines()
    submission = json.loads((smoke_repo / R["retrieval_dir"] / "submission.json").read_text())
    assert [r["text"] for r in submission["results"]] == texts
    assert all(len(r["image_names"]) == 10 for r in submission["results"])
    metrics = json.loads((smoke_repo / R["retrieval_dir"] / "metrics.json").read_text())
    assert {"val", "test"} <= set(metrics)
    register = json.loads((smoke_repo / R["reports_dir"] / "register.json").read_text())
    # register read the moved validation summary (nothing exists at the default reports/)
    assert register["validation"] == "passed" and not (smoke_repo / "reports" / "validation").exists()
    assert register["aliases"]["production"] == register["version"]
    assert json.loads((smoke_repo / R["baseline_dir"] / "metrics.json").read_text())["val"]  # the baseline, moved too
