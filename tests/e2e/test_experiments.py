"""End-to-end: experiments compare in DVC and MLflow (issue 10's acceptance run).

On a copy of the smoke pipeline (committed, so experiments have a baseline): two workspace
experiments and one queued experiment change retrieve params. Then `dvc exp show --json` has the
headline metrics of all three, `dvc metrics diff` gives numbers, the queued run restored every
upstream stage from DVC's run cache (no training in its log), and each experiment's MLflow runs
carry its name, its baseline commit and the prepared tables as dataset inputs.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.repos import R, committed_copy, pipeline_env

pytestmark = pytest.mark.slow


def dvc(repo: Path, *args: str, timeout: int = 900) -> str:
    result = subprocess.run(["dvc", *args], cwd=repo, env=pipeline_env(repo), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def experiments(smoke_repo, tmp_path_factory) -> dict:
    """The smoke repo copied and committed, then three experiments: two in the workspace, one queued."""
    repo = committed_copy(smoke_repo, tmp_path_factory.mktemp("exp") / "repo")
    baseline = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
    dvc(repo, "exp", "run", "-n", "published", "-S", "retrieve.distance=published")
    dvc(repo, "exp", "run", "-n", "full", "-S", "retrieve.distance=full")
    dvc(repo, "exp", "run", "--queue", "-n", "queued-label", "-S", "retrieve.relevance=label")
    started = time.perf_counter()
    dvc(repo, "queue", "start")
    while time.perf_counter() - started < 900:
        status = dvc(repo, "queue", "status")
        if "queued-label" in status and ("Success" in status or "Failed" in status):
            break
        time.sleep(5)
    queue_s = time.perf_counter() - started
    subprocess.run(["dvc", "queue", "stop"], cwd=repo, env=pipeline_env(repo), capture_output=True, timeout=60)
    return {"repo": repo, "baseline": baseline, "queue_status": status, "queue_s": queue_s,
            "queue_log": dvc(repo, "queue", "logs", "queued-label")}


def test_exp_show_has_the_metrics_of_every_experiment(experiments):
    rows = json.loads(dvc(experiments["repo"], "exp", "show", "--json"))
    found = {}
    for commit in rows:
        for exp in (commit.get("experiments") or []):
            for rev in exp.get("revs", []):
                name = rev.get("name")
                data = (rev.get("data") or {})
                metrics = data.get("metrics") or {}
                found[name] = metrics
    assert {"published", "full", "queued-label"} <= set(found), (found.keys(), experiments["queue_status"])
    for name in ("published", "full", "queued-label"):
        retrieve = next(v["data"] for k, v in found[name].items() if k.endswith("metrics/retrieve.json"))
        assert isinstance(retrieve["val"]["all"]["official_map10"], float), name
    distances = {n: next(v["data"] for k, v in found[n].items() if k.endswith("retrieve.json"))["val"]["all"]
                 ["official_map10"] for n in ("published", "full")}
    assert distances["published"] != distances["full"]  # they really ranked differently


def test_metrics_diff_gives_numbers(experiments):
    out = json.loads(dvc(experiments["repo"], "metrics", "diff", "HEAD", "published", "--json"))
    retrieve = next(v for k, v in out.items() if k.endswith("metrics/retrieve.json"))
    change = retrieve["val.all.official_map10"]
    assert isinstance(change["old"], float) and isinstance(change["new"], float)


def test_the_queued_retrieve_experiment_trained_nothing(experiments):
    log = experiments["queue_log"]
    assert "Success" in experiments["queue_status"], experiments["queue_status"]
    assert "Running stage 'train@" not in log, log[-3000:]
    assert "Running stage 'retrieve'" in log and "Running stage 'register'" in log, log[-3000:]


def test_each_experiments_mlflow_runs_carry_its_name_commit_and_inputs(experiments):
    from mlflow import MlflowClient

    repo = experiments["repo"]
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("track2-retrieval")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    for name in ("published", "full", "queued-label"):
        runs = client.search_runs([exp.experiment_id], f"tags.`dvc.exp_name` = '{name}'")
        stages = {r.data.tags["stage"] for r in runs}
        assert {"retrieve", "register"} <= stages, (name, stages)
        retrieve = next(r for r in runs if r.data.tags["stage"] == "retrieve")
        assert retrieve.data.tags["dvc.baseline_rev"] == experiments["baseline"]
        assert name in retrieve.info.run_name
        inputs = {d.dataset.name for d in retrieve.inputs.dataset_inputs}
        assert {"images", "labels", "queries"} <= inputs
        digests = {d.dataset.digest for d in retrieve.inputs.dataset_inputs}
        assert all(digests), "dataset digests come from dvc.lock"
        assert "val.all.official_map10" in retrieve.data.metrics
    # The artifacts of the copy's runs live under the copy, not under the repository it came from.
    some = client.search_runs([exp.experiment_id], max_results=1)[0]
    assert some.info.artifact_uri.startswith((repo / "mlartifacts").as_uri())


def test_headline_metrics_files_hold_numbers_only(smoke_repo):
    for path in (smoke_repo / R["reports_dir"] / "metrics").glob("*.json"):
        def leaves(d):
            for v in d.values():
                yield from leaves(v) if isinstance(v, dict) else [v]
        values = list(leaves(json.loads(path.read_text())))
        assert values and all(isinstance(v, (int, float)) for v in values), path
    from pipeline import contract

    declared = {o for s in contract.stages(smoke_repo) for o in s.outs if "/metrics/" in o}
    written = {p.relative_to(smoke_repo).as_posix() for p in (smoke_repo / R["reports_dir"] / "metrics").glob("*.json")}
    assert written == declared and len(declared) >= 4 + 6  # a file per stage, the train matrix's six
