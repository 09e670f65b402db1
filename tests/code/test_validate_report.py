"""The report: verdict, counts, offline Markdown/HTML, and the terminal summary."""

from __future__ import annotations

import json

from pipeline.validate.engine import Outcome
from pipeline.validate.report import format_examples, short_summary, summarise, write_report


def outcomes() -> list[Outcome]:
    return [
        Outcome("labels", "expect_x", "captions are not blank", "critical", False, "caption", 2, 10,
                examples=[{"caption": " ", "split": "train", "name": "000001.jpg"}, {"name": "000002.jpg"}]),
        Outcome("drift", "expect_y", "train->test drift of vehicle color mix <= 0.25", "warning", False, "value",
                1, 1, examples=[{"value": 0.612345, "feature": "vehicle color mix"}]),
        Outcome("images_table", "expect_z", "split is train, val or test", "critical", True, "split", 0, 10),
        Outcome("schema", "expect_w", "a broken one", "warning", False, error="boom | pipe"),
    ]


def test_summary_counts_and_status():
    s = summarise(outcomes(), {"rows": {"images": 10}})
    assert (s["status"], s["passed"], s["expectations"], s["failed_critical"], s["failed_warning"]) == \
        ("failed", 0, 4, 1, 2)
    assert s["suites"]["labels"] == {"expectations": 1, "failed_critical": 1, "failed_warning": 0}
    ok = summarise(outcomes()[1:], {})
    assert ok["status"] == "passed" and ok["passed"] == 1


def test_examples_read_well():
    text = format_examples(outcomes()[0].examples)
    assert text == "train 000001.jpg (caption= ); 000002.jpg"
    assert format_examples(outcomes()[1].examples) == "vehicle color mix 0.6123"


def test_report_files_offline(tmp_path):
    s = summarise(outcomes(), {"rows": {"images": 10}})
    drift_rows = [{"feature": "vehicle color mix", "statistic": "tvd", "train": "4", "test": "4", "value": 0.61,
                   "detail": "black 25% -> 75%"}]
    files = write_report(tmp_path, s, outcomes(), drift_rows, {"bad bit string": 3}, "drift.png")
    assert json.loads(files["summary.json"].read_text())["status"] == "failed"
    details = json.loads(files["details.json"].read_text())
    assert len(details["expectations"]) == 4 and details["quarantine_reasons"] == {"bad bit string": 3}
    md = files["summary.md"].read_text()
    assert md.startswith("# Data validation: FAILED")
    assert "| labels | captions are not blank | 2 of 10 | train 000001.jpg (caption= ); 000002.jpg |" in md
    assert "boom \\| pipe" in md and "![vehicle colour" in md and "| bad bit string | 3 |" in md
    html = files["summary.html"].read_text()
    assert "<h1 class='failed'>Data validation: FAILED</h1>" in html
    assert "http" not in html.replace("data_docs/index.html", "")  # no web fetches: reads offline
    assert "<img src='drift.png'" in html


def test_short_summary_names_critical_failures_only():
    text = short_summary(outcomes())
    assert "[labels] captions are not blank: 2 of 10" in text and "e.g. train 000001.jpg" in text
    assert "drift" not in text
