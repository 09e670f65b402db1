"""Code test: `dvc exp run -S key=value` changes exactly one line of params.yaml.

DVC rewrites the file through ruamel (dvc.utils.hydra.apply_overrides); params.yaml is kept in
the layout it writes (block lists and maps, its quoting), so an experiment's params diff is the
one line it set, comments stay where they are.
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from leaves(v, f"{prefix}{k}.")
        elif not isinstance(v, list):
            yield f"{prefix}{k}", v


def changed_lines(before: str, after: str) -> list[str]:
    return [ln for ln in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]


def other_value(value):
    if isinstance(value, bool):
        return str(not value).lower()
    if isinstance(value, (int, float)):
        return str(value + 1)
    return "changed"


@pytest.mark.parametrize("key,value", sorted(leaves(yaml.safe_load((ROOT / "params.yaml").read_text()))))
def test_setting_one_param_changes_one_line(tmp_path, key, value):
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    before = path.read_text()
    apply_overrides(str(path), [f"{key}={other_value(value)}"])
    diff = changed_lines(before, path.read_text())
    assert len(diff) == 2 and diff[0].startswith("-") and diff[1].startswith("+"), "\n".join(diff)


def test_a_no_op_rewrite_leaves_the_file_as_it_is(tmp_path):
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    seed = yaml.safe_load(path.read_text())["base"]["seed"]
    apply_overrides(str(path), [f"base.seed={seed}"])
    assert path.read_text() == (ROOT / "params.yaml").read_text()
