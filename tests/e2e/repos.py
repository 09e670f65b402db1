"""Repositories for the end-to-end tests: a copy of the working tree as a fresh git repo, its
params overridden, and the environment its stage commands run in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

#: Every output root moved away from its default; the release stays where synthesize writes it.
MOVED_ROOTS = {"prepared_dir": "out/prepared", "mapping_dir": "out/mapping", "models_dir": "out/models",
               "predictions_dir": "out/predictions", "retrieval_dir": "out/retrieval",
               "checkpoint_dir": "out/checkpoints", "reports_dir": "out/reports", "baseline_dir": "out/baseline"}
SMOKE_OVERRIDES: dict[str, dict] = {"base": {"profile": "smoke", **MOVED_ROOTS}}
R = {k: Path(v) for k, v in MOVED_ROOTS.items()}


def copy_repo(dest: Path) -> Path:
    """Copy the working tree (tracked + untracked, not ignored files) into ``dest`` as a fresh git repo."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    git = ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@test"]
    subprocess.run(git + ["init", "-q"], cwd=dest, check=True)
    subprocess.run(git + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-qm", "e2e"], cwd=dest, check=True)
    return dest


def committed_copy(repo: Path, dest: Path) -> Path:
    """``repo`` (a pipeline that has run) copied to ``dest`` and committed: DVC experiments need a
    baseline commit."""
    shutil.copytree(repo, dest, symlinks=True)
    git = ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@test"]
    subprocess.run(git + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-qm", "smoke baseline"], cwd=dest, check=True)
    return dest


def override_params(repo: Path, overrides: dict[str, dict]) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in overrides.items():
        params.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def pipeline_env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}", MLFLOW_DISABLE_TELEMETRY="true",
               DO_NOT_TRACK="true", DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", TRACK2_ROOT=str(repo))
    env.pop("PYTHONPATH", None)
    # Stage commands say `python` and `dvc`: make them this interpreter's, as `make` does.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env
