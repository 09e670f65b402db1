"""A dropped line is never silent (issue 11): the validate report's first lines and the stage's
output say how many lines ingest quarantined and why, against the threshold; the HTML lists them;
``validate.max_quarantine_fraction: 0`` makes one dropped line a critical failure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from pipeline.validate.engine import run_suites
from pipeline.validate.report import quarantine_line, summarise, write_report
from tests.data.test_validate_tables import good_tables, suites_of

ROOT = Path(__file__).resolve().parents[2]


def _quarantine(n: int = 1) -> pd.DataFrame:
    return pd.DataFrame({"file": ["train/train_label.txt"] * n, "line": list(range(7, 7 + n)),
                         "raw": ["000007.jpg$1,0,1$A <b>broken</b> line"] * n,
                         "reason": ["expected 21 label bits, got 3"] * n})


def _summary(outcomes, lines: pd.DataFrame, max_fraction: float) -> dict:
    reasons = {str(k): int(v) for k, v in lines["reason"].value_counts().items()}
    return summarise(outcomes, {"rows": {"quarantined": len(lines)},
                                "quarantine": {"lines": len(lines), "reasons": reasons, "max_fraction": max_fraction}})


def _outcomes(max_fraction: float, n: int = 1):
    t = good_tables()
    t["quarantine"] = _quarantine(n)
    suites = [s for s in suites_of(t, max_fraction=max_fraction) if s.name == "quarantine"]
    return run_suites(suites)


def test_report_says_first_how_many_lines_were_dropped_and_lists_them(tmp_path):
    lines = _quarantine(1)
    outcomes = _outcomes(0.5)  # the tiny tables: 1 of their few train lines is under half
    s = _summary(outcomes, lines, 0.5)
    assert s["status"] == "passed"  # within the threshold: a warning, not a failure
    files = write_report(tmp_path, s, outcomes, [], s["quarantine"]["reasons"], None, quarantine_lines=lines)
    md = files["summary.md"].read_text().splitlines()
    head = "\n".join(md[:6])
    assert ("Quarantined by ingest: 1 line dropped (expected 21 label bits, got 3: 1) - within the threshold "
            "validate.max_quarantine_fraction = 50.00% of a file's lines; set it to 0 to fail on any dropped line") in head
    html = files["summary.html"].read_text()
    assert "<td>train/train_label.txt</td><td>7</td><td>expected 21 label bits, got 3</td>" in html
    assert "A &lt;b&gt;broken&lt;/b&gt; line" in html  # the raw line, escaped


def test_strict_threshold_zero_fails_on_one_dropped_line(tmp_path):
    lines = _quarantine(1)
    outcomes = _outcomes(0.0)
    s = _summary(outcomes, lines, 0.0)
    assert s["status"] == "failed"
    assert [o.description for o in outcomes if o.failed_critical] == ["at most 0.0% of a file's lines quarantined"]
    assert "ABOVE the threshold validate.max_quarantine_fraction = 0.00%" in quarantine_line(s, outcomes)


def test_no_quarantine_says_so():
    s = _summary(_outcomes(0.01, n=0), _quarantine(0), 0.01)
    assert quarantine_line(s) == "Quarantined by ingest: no line (validate.max_quarantine_fraction = 1.00% of a file's lines)."


def test_long_quarantines_are_capped_in_the_report(tmp_path):
    lines = _quarantine(250)
    s = _summary([], lines, 0.5)
    files = write_report(tmp_path, s, [], [], s["quarantine"]["reasons"], None, quarantine_lines=lines)
    html = files["summary.html"].read_text()
    assert html.count("<td>train/train_label.txt</td>") == 200 and "and 50 more lines: see quarantine.csv" in html


def test_validate_stage_output_starts_with_the_quarantine_line(monkeypatch, tmp_path):
    import pipeline.validate as v

    lines = _quarantine(2)
    summary = _summary(_outcomes(0.5, n=2), lines, 0.5)
    monkeypatch.setattr(v, "run", lambda params, io: summary)
    res = CliRunner().invoke(app_(), ["validate", "--prepared", str(tmp_path), "--release", str(tmp_path),
                                      "--mapping", str(tmp_path / "m.yaml"), "--mapping-report", str(tmp_path / "m.json"),
                                      "--out", str(tmp_path / "out"), "--no-track", "--params", str(ROOT / "params.yaml")])
    assert res.exit_code == 0, res.output
    out = res.output.splitlines()
    assert out[0].startswith("Quarantined by ingest: 2 lines dropped (expected 21 label bits, got 3: 2)")
    assert out[1].startswith("validation passed")


def app_():
    from pipeline.cli import app

    return app
