"""Code tests of the stage contract: dvc.yaml and the code agree (pipeline/contract.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline import contract

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stages() -> list[contract.Stage]:
    return contract.stages(ROOT)


def test_every_stage_names_its_files_once_and_depends_on_the_code_it_runs():
    assert contract.problems(ROOT) == []


def test_architecture_doc_shows_the_current_contract():
    doc = ROOT / "docs" / "architecture.md"
    assert contract.render_into(doc, ROOT) == doc.read_text(), \
        "docs/architecture.md is stale: run `python -m pipeline contract --write`"


def test_stage_sections_hold_no_paths():
    """Paths live in dvc.yaml under the roots of `base`; a stage section holding one would copy it."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in params.items():
        if section == "base":
            continue
        for key, value in values.items():
            assert not (key.endswith(("_dir", "_path", "path", "report", "summary")) and key != "cache_dir"), \
                f"{section}.{key} looks like a path"
            if isinstance(value, str):
                assert not value.endswith((".yaml", ".json", ".parquet", ".npz")), f"{section}.{key} = {value!r}"


def test_every_root_of_base_is_used_by_dvc_yaml():
    import yaml

    base = yaml.safe_load((ROOT / "params.yaml").read_text())["base"]
    text = (ROOT / "dvc.yaml").read_text()
    roots = [k for k in base if k.endswith("_dir")]
    assert roots and all(f"${{base.{k}}}" in text for k in roots), [k for k in roots if f"${{base.{k}}}" not in text]


def test_the_check_catches_a_missing_code_dep(tmp_path):
    """The closure is real: drop a module from a stage's deps and the check names it."""
    import shutil
    import subprocess

    for rel in ("dvc.yaml", "params.yaml", "mapping_overrides.yaml"):
        shutil.copy(ROOT / rel, tmp_path / rel)
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / ".dvc", tmp_path / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    dvc = tmp_path / "dvc.yaml"
    text = dvc.read_text()
    start = text.index("  retrieve:")
    dvc.write_text(text[:start] + text[start:].replace("      - pipeline/rank.py\n", "", 1))
    found = contract.problems(tmp_path)
    assert any(p.startswith("retrieve: runs pipeline/rank.py") for p in found), found


@pytest.mark.parametrize("module", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "pipeline").rglob("*.py")))
def test_no_import_time_side_effects(module):
    """Modules hold definitions only: no calls at the top level except constants' construction."""
    tree = ast.parse((ROOT / module).read_text())
    if module in contract.CODELESS:
        return
    for node in tree.body:
        assert not isinstance(node, (ast.Expr,)) or isinstance(getattr(node, "value", None), ast.Constant), \
            f"{module}:{node.lineno}: a statement runs at import time"
