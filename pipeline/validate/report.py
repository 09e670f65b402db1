"""The validation report: ``summary.json`` (DVC metrics), ``details.json``, and the same content as
static Markdown and HTML that read well offline (GE Data Docs fetch their styles from the web).

The document is built once as a list of blocks and rendered twice, so the two views never differ.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.validate.engine import Outcome

Block = tuple  # ("h1" | "h2" | "p", text) | ("table", headers, rows) | ("img", path, alt)


_ID_KEYS = ("table", "column", "file", "line", "feature", "group", "value", "split", "query_id", "name")


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def format_examples(examples: list[Any], limit: int = 5) -> str:
    """A short, readable list of example rows: ``train 000123.jpg (decode_ok=False, error=...)``."""
    out = []
    for e in examples[:limit]:
        if isinstance(e, dict):
            ids = " ".join(("line " if k == "line" else "") + _short(e[k]) for k in _ID_KEYS if e.get(k) is not None)
            rest = ", ".join(f"{k}={_short(v) if v != '' else repr(v)}" for k, v in e.items()
                             if k not in _ID_KEYS and v is not None)
            text = f"{ids} ({rest})" if ids and rest else ids or rest
        else:
            text = _short(e)
        out.append(text if len(text) <= 120 else text[:117] + "...")
    return "; ".join(out)


def summarise(outcomes: list[Outcome], extra: dict[str, Any]) -> dict[str, Any]:
    """The compact summary (DVC metrics): status, counts, per-suite failures, plus ``extra``."""
    critical = [o for o in outcomes if o.failed_critical]
    warnings = [o for o in outcomes if o.failed_warning]
    suites: dict[str, dict[str, int]] = {}
    for o in outcomes:
        s = suites.setdefault(o.suite, {"expectations": 0, "failed_critical": 0, "failed_warning": 0})
        s["expectations"] += 1
        s["failed_critical"] += o.failed_critical
        s["failed_warning"] += o.failed_warning
    return {"status": "failed" if critical else "passed", "passed": int(not critical),
            "expectations": len(outcomes), "failed_critical": len(critical), "failed_warning": len(warnings),
            "suites": suites, **extra}


#: Quarantined lines listed in the report (all of them are in quarantine.csv).
MAX_LISTED_LINES = 200


def quarantine_line(summary: dict[str, Any], outcomes: list[Outcome] | None = None) -> str:
    """One line: how many lines ingest dropped and why, against the threshold (first in the
    report and in the stage's output, so a dropped line is never silent)."""
    q = summary.get("quarantine")
    if not q:
        return ""
    limit = f"validate.max_quarantine_fraction = {q['max_fraction']:.2%} of a file's lines"
    if not q["lines"]:
        return f"Quarantined by ingest: no line ({limit})."
    over = [o for o in (outcomes or []) if o.suite == "quarantine" and o.failed_critical] or \
        summary.get("suites", {}).get("quarantine", {}).get("failed_critical", 0)
    verdict = "ABOVE the threshold" if over else "within the threshold"
    why = ", ".join(f"{reason}: {n}" for reason, n in q["reasons"].items())
    strict = "" if over or q["max_fraction"] == 0 else "; set it to 0 to fail on any dropped line"
    return (f"Quarantined by ingest: {q['lines']} line{'s' if q['lines'] != 1 else ''} dropped ({why}) - "
            f"{verdict} {limit}{strict}. They are listed below and in quarantine.csv.")


def _quarantine_rows(lines: Any) -> list[list[str]]:
    rows = []
    for r in lines.head(MAX_LISTED_LINES).itertuples(index=False):
        raw = str(r.raw)
        rows.append([str(r.file), str(r.line), str(r.reason), raw if len(raw) <= 160 else raw[:157] + "..."])
    return rows


def _count(o: Outcome) -> str:
    if o.error:
        return "error"
    if o.unexpected_count is None:
        return "-" if o.observed is None else f"observed {o.observed}"
    return f"{o.unexpected_count} of {o.element_count}"


def _failure_rows(outcomes: list[Outcome]) -> list[list[str]]:
    return [[o.suite, o.description, _count(o), o.error or format_examples(o.examples)] for o in outcomes]


def document(summary: dict[str, Any], outcomes: list[Outcome], drift_rows: list[dict[str, Any]],
             quarantine_reasons: dict[str, int], drift_png: str | None,
             quarantine_lines: Any = None) -> list[Block]:
    """The report as blocks: verdict, the quarantine count, failures, warnings, drift, the
    quarantined lines, every expectation."""
    status = summary["status"].upper()
    blocks: list[Block] = [
        ("h1", f"Data validation: {status}"),
        ("p", f"{summary['expectations']} expectations in {len(summary['suites'])} suites: "
              f"{summary['failed_critical']} critical failures, {summary['failed_warning']} warnings."),
    ]
    if quarantine_line(summary, outcomes):
        blocks.append(("p", quarantine_line(summary, outcomes)))
    facts = [[k, str(v)] for k, v in summary.get("rows", {}).items()]
    images = summary.get("images", {})
    if images:
        facts.append(["images checked / fully decoded",
                      f"{images['checked']} / {images['decoded']} in {images['seconds']:.1f} s "
                      f"({images['per_second']:.0f}/s, {images['workers']} workers)"])
    if facts:
        blocks += [("table", ["table", "rows"], facts)]
    headers = ["suite", "expectation", "unexpected rows", "examples"]
    critical = [o for o in outcomes if o.failed_critical]
    warnings = [o for o in outcomes if o.failed_warning]
    blocks += [("h2", "Critical failures")]
    blocks += [("table", headers, _failure_rows(critical))] if critical else [("p", "None.")]
    blocks += [("h2", "Warnings")]
    blocks += [("table", headers, _failure_rows(warnings))] if warnings else [("p", "None.")]
    if drift_rows:
        blocks += [("h2", "Drift between training and test (warning only)"),
                   ("table", ["feature", "statistic", "train", "test", "value", "detail"],
                    [[r["feature"], r["statistic"], r["train"], r["test"],
                      "n/a" if r["value"] is None else f"{r['value']:.3f}", r["detail"]] for r in drift_rows])]
        if drift_png:
            blocks.append(("img", drift_png, "vehicle colour and type mix, train vs test"))
    blocks += [("h2", "Quarantined lines (by ingest)")]
    blocks += ([("table", ["reason", "lines"], [[r, str(n)] for r, n in quarantine_reasons.items()])]
               if quarantine_reasons else [("p", "None.")])
    if quarantine_lines is not None and len(quarantine_lines):
        blocks += [("table", ["file", "line", "reason", "the line as read"], _quarantine_rows(quarantine_lines))]
        if len(quarantine_lines) > MAX_LISTED_LINES:
            blocks += [("p", f"... and {len(quarantine_lines) - MAX_LISTED_LINES} more lines: see quarantine.csv.")]
    blocks += [("h2", "All expectations")]
    blocks += [("table", ["suite", "severity", "result", "expectation", "unexpected rows"],
                [[o.suite, o.severity, "pass" if o.success else "FAIL", o.description, _count(o)]
                 for o in outcomes])]
    blocks += [("p", "Great Expectations Data Docs (full detail, needs the network for styles): "
                     "data_docs/index.html")]
    return blocks


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b[0] == "h1":
            out.append(f"# {b[1]}\n")
        elif b[0] == "h2":
            out.append(f"## {b[1]}\n")
        elif b[0] == "p":
            out.append(f"{b[1]}\n")
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1]})\n")
        else:
            _, headers, rows = b
            lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines) + "\n")
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3} h1.passed{color:#1a7f37} h1.failed{color:#c62828}
td.FAIL{color:#c62828;font-weight:bold} td.pass{color:#1a7f37} img{max-width:100%}"""


def to_html(blocks: list[Block]) -> str:
    e = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>Data validation</title>"
           f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if b[0] == "h1":
            cls = "failed" if "FAILED" in b[1] else "passed"
            out.append(f"<h1 class='{cls}'>{e(b[1])}</h1>")
        elif b[0] == "h2":
            out.append(f"<h2>{e(b[1])}</h2>")
        elif b[0] == "p":
            out.append(f"<p>{e(b[1])}</p>")
        elif b[0] == "img":
            out.append(f"<p><img src='{e(b[1])}' alt='{e(b[2])}'></p>")
        else:
            _, headers, rows = b
            out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in headers) + "</tr>")
            out += ["<tr>" + "".join(f"<td class='{e(str(c))}'>{e(str(c))}</td>" if c in ("pass", "FAIL")
                                     else f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows]
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(out_dir: Path, summary: dict[str, Any], outcomes: list[Outcome],
                 drift_rows: list[dict[str, Any]], quarantine_reasons: dict[str, int],
                 drift_png: str | None, quarantine_lines: Any = None) -> dict[str, Path]:
    """Write summary.json, details.json, summary.md and summary.html into ``out_dir``
    (``quarantine_lines``: ingest's quarantine table, listed in the report)."""
    from pipeline.stage import write_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in ("summary.json", "details.json", "summary.md", "summary.html")}
    details = {"summary": summary, "drift": drift_rows, "quarantine_reasons": quarantine_reasons,
               "expectations": [asdict(o) for o in outcomes]}
    write_atomic(paths["details.json"], json.dumps(details, indent=2, default=str) + "\n")
    blocks = document(summary, outcomes, drift_rows, quarantine_reasons, drift_png, quarantine_lines)
    write_atomic(paths["summary.md"], to_markdown(blocks))
    write_atomic(paths["summary.html"], to_html(blocks))
    write_atomic(paths["summary.json"], json.dumps(summary, indent=2) + "\n")  # last: what others read
    return paths


def short_summary(outcomes: list[Outcome], limit: int = 3) -> str:
    """A few lines for the terminal: each critical failure with its count and examples."""
    lines = []
    for o in (o for o in outcomes if o.failed_critical):
        lines.append(f"  [{o.suite}] {o.description}: {_count(o)}")
        shown = o.error or format_examples(o.examples, limit)
        if shown:
            lines.append(f"      e.g. {shown}")
    return "\n".join(lines)
