"""The end-to-end fixture: one `dvc repro` of the smoke profile per test session, shared by the
end-to-end modules (each copies it before changing anything)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.repos import SMOKE_OVERRIDES, copy_repo, override_params, pipeline_env


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory) -> Path:
    repo = copy_repo(tmp_path_factory.mktemp("e2e"))
    override_params(repo, SMOKE_OVERRIDES)
    result = subprocess.run(["dvc", "repro"], cwd=repo, env=pipeline_env(repo), capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, f"dvc repro failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return repo


