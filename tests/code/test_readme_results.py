"""The README's results table says exactly what the recorded `make run` wrote (issue 10): the
block is rendered from docs/results/default_make_run.json, never typed by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("readme_results", ROOT / "scripts" / "readme_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_results_block_is_the_rendered_record():
    script = _script()
    readme = (ROOT / "README.md").read_text()
    expected = script.block(json.loads(script.RECORD.read_text()))
    assert expected in readme, "README results differ from docs/results/default_make_run.json: " \
                               "run `python scripts/readme_results.py render`"


def test_the_record_holds_every_headline_figure():
    record = json.loads((ROOT / "docs" / "results" / "default_make_run.json").read_text())
    assert record["profile"] == "default" and record["commit"] != "unknown"
    for split in ("val", "test"):
        for domain in ("all", "pedestrian", "vehicle"):
            m = record["decoupled"][split][domain]
            assert 0.0 <= m["official_map10"] <= 1.0 and m["n_queries"] > 0
            assert 0.0 <= record["baseline"][split][domain]["official_map10"] <= 1.0
