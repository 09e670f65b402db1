"""The ``validate`` stage: Great Expectations suites that gate the pipeline before training.

:func:`validate` checks the prepared tables, the image files, the caption mapping and the
train/test drift, writes the report into ``out_dir`` and returns a :class:`ValidationResult`;
:func:`run` is the stage entry (pipeline/stage.py). Any critical failure makes the summary's
``status`` "failed" (the CLI then exits 1, so ``dvc repro`` stops); warnings are only logged.

Suites (``pipeline/validate/<module>.py``): ``schema``, ``images_table``, ``labels``, ``queries``,
``test_order``, ``class_counts``, ``quarantine`` (tables), ``release_files``, ``image_files`` (images),
``mapping_rules``, ``mapping_coverage``, ``mapping_quality`` (mapping_checks), ``drift`` (drift).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import Params, ValidateParams
from pipeline.validate.engine import Outcome, Suite

log = logging.getLogger(__name__)

__all__ = ["ValidationResult", "ValidateIO", "validate", "run", "read_prepared", "data_suites"]


@dataclass
class ValidationResult:
    summary: dict[str, Any]
    outcomes: list[Outcome]
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.summary["status"] == "passed"


def read_prepared(prepared_dir: Path) -> dict[str, pd.DataFrame]:
    """The ingest outputs; a missing one raises ``FileNotFoundError`` naming it, a quarantine
    without its columns ``ValueError`` (the Parquet columns are the schema suite's check)."""
    from pipeline.formats import read_table

    return {name: read_table(prepared_dir, name) for name in ("images", "labels", "queries", "quarantine")}


def data_suites(tbl: dict[str, pd.DataFrame], checks: pd.DataFrame, test_lines: list[str],
                files: pd.DataFrame, vp: ValidateParams) -> tuple[list[Suite], pd.DataFrame, dict]:
    """Every suite but the mapping's, from the prepared tables, the image measurements, the lines
    of ``test_text.txt`` and the release's image files; also the drift table and mixes."""
    from pipeline.validate import drift, images, tables

    img, lab, qry = (tables.conform(tbl[t], t) for t in ("images", "labels", "queries"))
    drift_rows, mixes = drift.drift_table(lab, qry)
    suites = [
        tables.schema_suite(tbl),
        tables.images_suite(img, lab),
        tables.labels_suite(lab, img, vp.min_caption_chars, vp.max_caption_chars),
        tables.queries_suite(qry, img, vp.min_caption_chars, vp.max_caption_chars),
        tables.query_order_suite(qry, test_lines),
        tables.class_counts_suite(lab, vp.min_class_examples),
        tables.quarantine_suite(tbl["quarantine"], lab, qry, img, vp.max_quarantine_fraction),
        images.release_files_suite(files),
        images.images_suite(checks, (vp.min_width, vp.min_height), (vp.max_width, vp.max_height),
                            vp.min_pixel_std),
        drift.drift_suite(drift_rows, vp.max_drift_tvd, vp.max_caption_length_change),
    ]
    return suites, drift_rows, mixes


def validate(prepared_dir: Path, release_dir: Path, out_dir: Path, vp: ValidateParams,
             mapping: Path | None = None, mapping_report: Path | None = None, seed: int = 0,
             root: Path | None = None) -> ValidationResult:
    """Run every suite and write the report; skip the mapping suites when ``mapping`` is None.

    Image paths in the images table are relative to ``root`` (default: the working directory).
    """
    from pipeline.validate import drift, images, mapping_checks, tables

    tbl = read_prepared(prepared_dir)
    test_text = Path(release_dir) / "test" / "test_text.txt"
    if not test_text.exists():
        raise FileNotFoundError(f"{test_text} not found: is base.release_dir a Track-2 release?")
    if mapping is not None:
        for path in (mapping, mapping_report):
            if path is None or not Path(path).exists():
                raise FileNotFoundError(f"{path} not found: run the mapping stage first")

    started = time.perf_counter()
    checks = images.image_checks(tables.conform(tbl["images"], "images"), vp.decode_fraction, seed,
                                 vp.workers, root)
    seconds = time.perf_counter() - started
    workers = vp.workers or os.cpu_count() or 1
    log.info("checked %d image files in %.1f s (%.0f/s, %d workers)", len(checks), seconds,
             len(checks) / max(seconds, 1e-9), workers)

    on_disk = images.release_files(Path(release_dir), tables.conform(tbl["images"], "images"))
    suites, drift_rows, mixes = data_suites(tbl, checks, tables.read_test_texts(test_text), on_disk, vp)
    if mapping is not None:
        suites += mapping_checks.mapping_suites(Path(mapping), Path(mapping_report), vp.min_mapping_precision,
                                                vp.min_mapping_stated_recall, vp.min_rules_per_value)
    img, lab, qry = (tbl[t] for t in ("images", "labels", "queries"))

    from pipeline.validate.engine import run_suites
    from pipeline.validate.report import summarise, write_report

    out_dir = Path(out_dir)
    docs = out_dir / "data_docs"
    shutil.rmtree(docs, ignore_errors=True)  # stale pages of an earlier run would mislead
    outcomes = run_suites(suites, docs_dir=docs, suites_dir=out_dir / "suites")
    drift_png = drift.plot_drift(mixes, out_dir / "drift.png")
    checks.drop(columns=["md5"]).to_parquet(out_dir / "image_checks.parquet", index=False)
    quarantine = tbl["quarantine"]
    reasons = quarantine["reason"].value_counts().to_dict()
    extra = {
        "rows": {"images": len(img), "labels": len(lab), "queries": len(qry), "quarantined": len(quarantine)},
        "images": {"checked": len(checks), "decoded": int(checks["decoded"].sum()), "seconds": round(seconds, 3),
                   "per_second": round(len(checks) / max(seconds, 1e-9), 1), "workers": workers},
        "drift": {r["feature"]: (None if pd.isna(r["value"]) else round(float(r["value"]), 4))
                  for r in drift_rows.to_dict("records")},
        "quarantine": {"lines": len(quarantine), "reasons": {str(k): int(v) for k, v in reasons.items()},
                       "max_fraction": vp.max_quarantine_fraction},
    }
    summary = summarise(outcomes, extra)
    drift_records = [{**r, "value": None if pd.isna(r["value"]) else float(r["value"])}
                     for r in drift_rows.to_dict("records")]
    files = write_report(out_dir, summary, outcomes, drift_records, {str(k): int(v) for k, v in reasons.items()},
                         drift_png.name, quarantine_lines=quarantine)
    for o in outcomes:
        if o.failed_warning:
            log.warning("[%s] %s: %s", o.suite, o.description, o.unexpected_count
                        if o.unexpected_count is not None else o.observed)
    for r in drift_records:
        log.info("drift %-26s %s -> %s  %s=%s", r["feature"], r["train"], r["test"], r["statistic"],
                 "n/a" if r["value"] is None else f"{r['value']:.3f}")
    log.info("validation %s: %d critical failures, %d warnings (report: %s)", summary["status"].upper(),
             summary["failed_critical"], summary["failed_warning"], files["summary.md"])
    return ValidationResult(summary, outcomes, out_dir, {**files, "drift.png": drift_png})


@dataclass(frozen=True)
class ValidateIO:
    prepared: Path        # in: ingest's tables
    release: Path         # in: the release (image files, test_text.txt)
    mapping: Path         # in: the mined mapping
    mapping_report: Path  # in: the mapping's quality on val
    out: Path             # out: the report folder; its gate.json is what training depends on
    metrics: Path | None = None  # out: the headline counts for DVC

    def artifacts(self) -> list[tuple[Path, str]]:
        # Data Docs' static/ folder is 5 MB of the same logos and scripts every run: leave it out.
        files = [p for p in sorted(self.out.rglob("*")) if p.is_file()
                 and p.relative_to(self.out).parts[:2] != ("data_docs", "static")]
        return [(p, str(Path("validation") / p.relative_to(self.out).parent)) for p in files]


def run(params: Params, io: ValidateIO) -> dict[str, Any]:
    """The stage: every suite with ``params.validate``'s thresholds; returns the summary, whose
    ``status`` says whether training may start (the failures are logged, the report written)."""
    from pipeline.stage import write_atomic, write_metrics
    from pipeline.validate.report import short_summary

    result = validate(io.prepared, io.release, io.out, params.validate, mapping=io.mapping,
                      mapping_report=io.mapping_report, seed=params.base.seed)
    if not result.passed:
        log.error("critical expectations failed:\n%s", short_summary(result.outcomes))
    counts = {k: result.summary[k] for k in ("expectations", "failed_critical", "failed_warning")}
    # The gate later stages depend on: deterministic (no timings), so an unchanged release
    # leaves training's deps unchanged and DVC's run cache restores it in a queued experiment.
    write_atomic(io.out / "gate.json", json.dumps({"status": result.summary["status"], **counts}, indent=2) + "\n")
    write_metrics(io.metrics, {**counts, "quarantined_lines": result.summary["rows"]["quarantined"]})
    return result.summary
