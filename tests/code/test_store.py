"""Code test: a copied repository's MLflow store writes and reads its own artifacts (pipeline/store.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.store import follow_repository


def _log_run(root: Path, text: str) -> str:
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("e")
    exp_id = exp.experiment_id if exp else client.create_experiment("e", (root / "mlartifacts").as_uri())
    run = client.create_run(exp_id)
    (root / "note.txt").write_text(text)
    client.log_artifact(run.info.run_id, str(root / "note.txt"))
    client.set_terminated(run.info.run_id)
    mlflow.set_tracking_uri(uri)
    return run.info.run_id


def test_a_copied_repository_keeps_its_artifacts(tmp_path):
    from mlflow import MlflowClient

    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    first = _log_run(original, "before the copy")
    shutil.copytree(original, copy)

    assert follow_repository(f"sqlite:///{copy / 'mlflow.db'}", copy) > 0
    client = MlflowClient(tracking_uri=f"sqlite:///{copy / 'mlflow.db'}")
    assert client.get_run(first).info.artifact_uri.startswith((copy / "mlartifacts").as_uri())
    second = _log_run(copy, "in the copy")
    assert client.get_run(second).info.artifact_uri.startswith((copy / "mlartifacts").as_uri())
    assert len(list((copy / "mlartifacts").rglob("note.txt"))) == 2
    assert len(list((original / "mlartifacts").rglob("note.txt"))) == 1  # the original is untouched
    assert follow_repository(f"sqlite:///{copy / 'mlflow.db'}", copy) == 0  # already in place


def test_a_store_outside_the_repository_is_left_alone(tmp_path):
    repo, elsewhere = tmp_path / "repo", tmp_path / "shared"
    repo.mkdir(), elsewhere.mkdir()
    _log_run(elsewhere, "shared store")
    assert follow_repository(f"sqlite:///{elsewhere / 'mlflow.db'}", repo) == 0
    assert follow_repository("http://127.0.0.1:5000", repo) == 0
