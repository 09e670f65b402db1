"""End-to-end: the ablation machinery (issue 14) on the smoke profile, two rows, one seed.

On a committed copy of the smoke pipeline, ``python -m pipeline ablation`` queues rows 4 (one
backbone of the trained ensemble) and 5 (the same with the full-vector distance) as DVC
experiments, runs the queue and writes the table. Both rows change only retrieve params, so
neither trains (DVC's run cache restores the members); their MLflow runs carry the experiment
names; ``--reuse`` collects the same figures again without queueing anything.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.repos import committed_copy, pipeline_env

pytestmark = pytest.mark.slow

ROWS = ("single", "full-distance")
NAMES = ("ablation-single-s0", "ablation-full-distance-s0")
LABELS = ("4. decoupled + partial freezing (one backbone)", "5. row 4, full-vector distance")


def ablation(repo: Path, *extra: str, timeout: int = 900) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "pipeline", "ablation", "--rows", ",".join(ROWS), "--seeds", "0",
           "--profile", "smoke", "--out", "ablation", *extra]
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=repo, env=pipeline_env(repo), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd[2:])} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result, time.perf_counter() - started


@pytest.fixture(scope="module")
def ran(smoke_repo, tmp_path_factory) -> dict:
    """The smoke repo copied and committed (experiments need a baseline commit), then the two rows."""
    repo = committed_copy(smoke_repo, tmp_path_factory.mktemp("ablation") / "repo")
    result, seconds = ablation(repo)
    print(f"ablation of {ROWS} (one seed) on the smoke profile: {seconds:.0f} s")
    return {"repo": repo, "result": result, "seconds": seconds,
            "md": (repo / "ablation" / "ablation.md").read_text(),
            "json": json.loads((repo / "ablation" / "ablation.json").read_text())}


def table_rows(md: str, heading: str) -> dict[str, list[str]]:
    """``{row label: cells}`` of the table under ``heading``."""
    section = md.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| row ")]
    return {r[0]: r[1:] for r in rows}


def test_the_table_has_the_two_rows_with_numbers(ran):
    for heading in ("## Test mAP@10", "## Val mAP@10", "## Classifier mA and training time"):
        rows = table_rows(ran["md"], heading)
        assert sorted(rows) == sorted(LABELS), (heading, rows)
        for label, cells in rows.items():
            assert cells[0] == "1", (heading, label, cells)  # one seed found
            assert all(re.fullmatch(r"\d+(\.\d+)?", c) for c in cells[1:]), (heading, label, cells)
    assert "## Which steps help here" in ran["md"] and "**keywords-only distance" in ran["md"]
    assert (ran["repo"] / "ablation" / "ablation.png").read_bytes()[:4] == b"\x89PNG"


def test_the_figures_are_the_experiments_own(ran):
    rows = {r["name"]: r for r in ran["json"]["rows"]}
    assert [rows[n]["experiments"] for n in ROWS] == [[n] for n in NAMES]
    single, full = (rows[n]["figures"] for n in ROWS)
    for figures in (single, full):
        assert figures["time_s"][0] > 0 and figures["cpu_s"][0] > 0  # the members' cached train stages
        assert 0 <= figures["test/all/official_map10"][0] <= 1
    official = [k for k in single if k.endswith("official_map10")]
    assert any(single[k] != full[k] for k in official), "the two distances ranked identically"
    assert single["time_s"] == full["time_s"]  # the same cached members


def test_retrieve_only_rows_reuse_the_trained_members(ran):
    assert ran["json"]["trained_here"] == {n: [] for n in NAMES}, ran["json"]["trained_here"]
    for name in NAMES:
        log = subprocess.run(["dvc", "queue", "logs", name], cwd=ran["repo"], env=pipeline_env(ran["repo"]),
                             capture_output=True, text=True, timeout=120).stdout
        assert "Running stage 'retrieve'" in log and "Running stage 'train@" not in log, log[-2000:]


def test_each_experiments_mlflow_runs_carry_its_name(ran):
    from mlflow import MlflowClient

    repo = ran["repo"]
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("track2-retrieval")
    for name in NAMES:
        runs = client.search_runs([exp.experiment_id], f"tags.`dvc.exp_name` = '{name}'")
        assert {"retrieve", "register"} <= {r.data.tags["stage"] for r in runs}, name
        retrieve = next(r for r in runs if r.data.tags["stage"] == "retrieve")
        assert name in retrieve.info.run_name
        row = next(r for r in ran["json"]["rows"] if name in r["experiments"])
        assert retrieve.data.metrics["test.all.official_map10"] == pytest.approx(  # the file keeps 6 digits
            row["figures"]["test/all/official_map10"][0], abs=1e-5)


def test_reuse_collects_the_same_figures_without_queueing(ran):
    repo = ran["repo"]
    result, seconds = ablation(repo, "--reuse", timeout=300)
    again = json.loads((repo / "ablation" / "ablation.json").read_text())
    assert [r["figures"] for r in again["rows"]] == [r["figures"] for r in ran["json"]["rows"]]
    status = subprocess.run(["dvc", "queue", "status"], cwd=repo, env=pipeline_env(repo), capture_output=True,
                            text=True, timeout=120).stdout
    assert sum(name in status for name in NAMES) == 2 and "Queued" not in status, status


def test_a_second_run_keeps_the_experiments_already_run_on_this_commit(ran):
    repo = ran["repo"]
    result, _ = ablation(repo, timeout=300)
    assert "keeping experiments already run on this commit" in result.stderr + result.stdout
    status = subprocess.run(["dvc", "queue", "status"], cwd=repo, env=pipeline_env(repo), capture_output=True,
                            text=True, timeout=120).stdout
    assert [sum(name in line for line in status.splitlines()) for name in NAMES] == [1, 1], status
