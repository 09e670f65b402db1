"""Ingest a Track-2 release into typed Parquet tables (stage ``ingest``).

Reads the release layout of docs/architecture.md and writes under ``IngestIO.prepared`` the
tables of :mod:`pipeline.formats.tables`: ``images.parquet``, ``labels.parquet``,
``queries.parquet`` and ``quarantine.csv``. Images are referenced by path, never copied; width
and height come from the image header only.

Every line read is either kept or quarantined (file, line number, raw line, reason), so per file
``read = kept + quarantined``. How lines are read (BOM, CRLF, trailing blank lines, bad UTF-8),
what makes a label line well-formed and which duplicate image names are rejected:
:mod:`pipeline.formats.lines`. Ingest adds the checks against the files: a label line whose
image is missing or has no valid header is quarantined too, and so is a blank line inside a file.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.formats import (
    IMAGE_DIRS, IMAGE_SUFFIXES, LABEL_FILES, TEST_TEXT, LabelLine, check_label_lines, label_frame, read_lines,
    table_frame, write_table,
)
from pipeline.formats.lines import Reject
from pipeline.stage import write_atomic, write_metrics

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.config import Params

log = logging.getLogger(__name__)

__all__ = ["IngestError", "IngestIO", "image_sizes", "ingest_release", "run"]


class IngestError(ValueError):
    """The release cannot be ingested at all (a missing file or folder)."""


@dataclass(frozen=True)
class IngestIO:
    """The files of the ingest stage (named on its command line by dvc.yaml)."""

    release: Path   # in: the release folder (official layout)
    prepared: Path  # out: images/labels/queries.parquet + quarantine.csv
    report: Path    # out: the counts JSON (reports/ingest.json)
    metrics: Path | None = None  # out: the headline counts for DVC

    def artifacts(self) -> list[Path]:
        return [Path(self.prepared) / "quarantine.csv"]


def run(params: Params, io: IngestIO) -> dict[str, Any]:
    """The stage: :func:`ingest_release` with ``params.ingest``; write and return the report."""
    report = ingest_release(io.release, io.prepared, workers=params.ingest.workers)
    io.report.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(io.report, json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_metrics(io.metrics, {k: report[k] for k in ("lines_read", "lines_kept", "lines_quarantined",
                                                       "images_total")})
    return report


# --------------------------------------------------------------------------- label files

@dataclass
class LabelFile:
    """One label file of the release, read and checked against its image folder."""

    split: str
    rel: str  # path inside the release
    kept: list[LabelLine]  # well-formed lines whose image file exists
    bad: list[Reject]
    read: int
    trailing: int
    unlabelled: int  # image files that no well-formed line names


def scan_label_file(release: Path, split: str) -> LabelFile:
    """Read ``split``'s label file and reject the lines whose image file is missing."""
    rel = LABEL_FILES[split]
    lines, trailing = read_lines(release / rel)
    kept, bad = check_label_lines(lines)
    folder = release / IMAGE_DIRS[split]
    on_disk = set(_list_images(folder))
    present = [r for r in kept if r.name in on_disk]
    bad += [(r.line, r.raw, f"image file missing: {folder / r.name}") for r in kept if r.name not in on_disk]
    return LabelFile(split, rel, present, bad, len(lines), trailing, len(on_disk - {r.name for r in kept}))


# --------------------------------------------------------------------------- images

def image_size(path: str) -> tuple[int, int] | None:
    """(width, height) from the image header (no decoding), or None when unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - any unreadable file is reported, not raised
        return None


def image_sizes(paths: list[str], workers: int = 2, parallel_from: int = 2000) -> list[tuple[int, int] | None]:
    """Header sizes of many images, on ``workers`` processes for big releases."""
    from tqdm import tqdm

    if workers <= 1 or len(paths) < parallel_from:
        return [image_size(p) for p in tqdm(paths, desc="image headers", unit="img", mininterval=2,
                                            disable=len(paths) < parallel_from)]
    from multiprocessing import get_all_start_methods, get_context

    # fork where there is one: the workers need only PIL, and nothing is re-imported.
    method = "fork" if "fork" in get_all_start_methods() else "spawn"
    with get_context(method).Pool(workers) as pool:
        return list(tqdm(pool.imap(image_size, paths, chunksize=512), total=len(paths),
                         desc="image headers", unit="img", mininterval=2))


def _list_images(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))


# --------------------------------------------------------------------------- the tables

@dataclass
class Rows:
    """What the release contributes to each table, gathered file by file in release order."""

    images: list[tuple[str, str, str, str | None, tuple[int, int]]] = field(default_factory=list)
    labels: list[pd.DataFrame] = field(default_factory=list)
    queries: list[tuple[int, str, str, str | None]] = field(default_factory=list)
    quarantine: list[tuple[str, int, str, str]] = field(default_factory=list)
    files: dict[str, dict[str, int]] = field(default_factory=dict)  # per release file: line counts


def check_release(release: Path) -> None:
    """Raise :class:`IngestError` naming every missing file or folder of the layout."""
    if not release.is_dir():
        raise IngestError(f"release folder {release} not found (set base.release_dir in params.yaml)")
    needed = [release / f for f in (*LABEL_FILES.values(), TEST_TEXT)] + [release / d for d in IMAGE_DIRS.values()]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise IngestError(f"release {release} is incomplete; missing: {', '.join(missing)}")


def add_label_file(rows: Rows, release: Path, lf: LabelFile, size_of: dict[str, tuple[int, int] | None]) -> None:
    """Rows of one label file: its images, labels and captions (as queries); lines whose image
    has no valid header are quarantined."""
    good, bad = [], list(lf.bad)
    for r in lf.kept:
        path = str(release / IMAGE_DIRS[lf.split] / r.name)
        if size_of[path] is None:
            bad.append((r.line, r.raw, f"unreadable image (no valid header): {path}"))
            continue
        good.append(r)
        rows.images.append((r.name, path, lf.split, r.domain, size_of[path]))
        rows.queries.append((r.line - 1, lf.split, r.caption, r.name))
    rows.labels.append(label_frame(good, lf.split))
    rows.quarantine += [(lf.rel, n, raw, reason) for n, raw, reason in sorted(bad)]
    rows.files[lf.rel] = {"read": lf.read, "trailing_blank": lf.trailing, "kept": len(good), "quarantined": len(bad)}


def add_test_texts(rows: Rows, release: Path) -> None:
    """The test captions as queries (``query_id`` = position in the file); empty or undecodable
    lines are quarantined."""
    lines, trailing = read_lines(release / TEST_TEXT)
    kept = bad = 0
    for number, text, raw in lines:
        reason = "invalid UTF-8" if text is None else ("empty caption" if not text.strip() else None)
        if reason:
            rows.quarantine.append((TEST_TEXT, number, raw, reason))
            bad += 1
        else:
            rows.queries.append((number - 1, "test", text.strip(), None))
            kept += 1
    rows.files[TEST_TEXT] = {"read": len(lines), "kept": kept, "quarantined": bad, "trailing_blank": trailing}


def add_test_images(rows: Rows, folder: Path, names: list[str], size_of: dict[str, tuple[int, int] | None]) -> int:
    """The test gallery (domain unknown: the router decides); returns how many were unreadable."""
    unreadable = [n for n in names if size_of[str(folder / n)] is None]
    rows.quarantine += [(str(folder / n), 0, "", "unreadable image (no valid header)") for n in unreadable]
    rows.images += [(n, str(folder / n), "test", None, size_of[str(folder / n)])
                    for n in names if size_of[str(folder / n)] is not None]
    return len(unreadable)


def build_tables(rows: Rows) -> dict[str, pd.DataFrame]:
    """The four prepared tables, as :data:`pipeline.formats.tables.TABLES` defines them."""
    import pandas as pd

    images, queries, quarantine = rows.images, rows.queries, rows.quarantine
    return {
        "images": table_frame("images", {
            "name": [r[0] for r in images], "path": [r[1] for r in images], "split": [r[2] for r in images],
            "domain": [r[3] for r in images], "width": [r[4][0] for r in images],
            "height": [r[4][1] for r in images]}),
        "labels": pd.concat(rows.labels, ignore_index=True),
        "queries": table_frame("queries", {
            "query_id": [q[0] for q in queries], "split": [q[1] for q in queries],
            "text": [q[2] for q in queries], "image": [q[3] for q in queries]}),
        "quarantine": table_frame("quarantine", {
            "file": [q[0] for q in quarantine], "line": [q[1] for q in quarantine],
            "raw": [q[2] for q in quarantine], "reason": [q[3] for q in quarantine]}),
    }


# --------------------------------------------------------------------------- the report

def reconcile(files: dict[str, dict[str, int]]) -> None:
    """Check ``read = kept + quarantined`` per file (the invariant the report promises) and log it."""
    for rel, c in files.items():
        if c["read"] != c["kept"] + c["quarantined"]:
            raise RuntimeError(f"{rel}: lines do not reconcile: {c}")
        log.info("%s: read %d = kept %d + quarantined %d (%d trailing blank lines)",
                 rel, c["read"], c["kept"], c["quarantined"], c["trailing_blank"])


def summarise(release: Path, rows: Rows, tables: dict[str, pd.DataFrame], unreadable: int,
              unlabelled: dict[str, int]) -> dict[str, Any]:
    """The ingest report: line counts per file, quarantine reasons, images and queries per split."""
    files, images, queries = rows.files, tables["images"], tables["queries"]
    return {
        "release": str(release),
        "files": files,
        "lines_read": sum(c["read"] for c in files.values()),
        "lines_kept": sum(c["kept"] for c in files.values()),
        "lines_quarantined": sum(c["quarantined"] for c in files.values()),
        "quarantine_reasons": dict(sorted(Counter(_reason_kind(q[3]) for q in rows.quarantine).items())),
        "images": {f"{s}_{d}": int(n) for (s, d), n in
                   images.fillna({"domain": "unrouted"}).groupby(["split", "domain"]).size().items()},
        "images_total": len(images),
        "test_images_unreadable": unreadable,
        "images_without_label": unlabelled,
        # Names are unique within a split; the same name in two splits is two different files.
        "names_in_several_splits": int(images["name"].duplicated().sum()),
        "queries": {s: int((queries["split"] == s).sum()) for s in ("val", "test")},
    }


def _reason_kind(reason: str) -> str:
    """The reason without its details, for counting ("bad bit string: ..." -> "bad bit string")."""
    for sep in (":", " ("):
        reason = reason.split(sep)[0]
    return reason.strip()


# --------------------------------------------------------------------------- the whole release

def ingest_release(release_dir: str | Path, out_dir: str | Path, workers: int = 2) -> dict[str, Any]:
    """Read the release at ``release_dir``, write the prepared tables under ``out_dir`` and return
    the counts. Raises :class:`IngestError` naming the first missing file or folder."""
    release, out = Path(release_dir), Path(out_dir)
    check_release(release)
    label_files = [scan_label_file(release, split) for split in LABEL_FILES]
    test_folder = release / IMAGE_DIRS["test"]
    test_names = _list_images(test_folder)
    paths = [str(release / IMAGE_DIRS[lf.split] / r.name) for lf in label_files for r in lf.kept]
    paths += [str(test_folder / n) for n in test_names]
    size_of = dict(zip(paths, image_sizes(paths, workers=workers)))

    rows = Rows()
    for lf in label_files:
        add_label_file(rows, release, lf, size_of)
    add_test_texts(rows, release)
    unreadable = add_test_images(rows, test_folder, test_names, size_of)
    tables = build_tables(rows)
    for name, frame in tables.items():
        write_table(out, name, frame)

    reconcile(rows.files)
    report = summarise(release, rows, tables, unreadable, {lf.split: lf.unlabelled for lf in label_files})
    if report["lines_quarantined"]:
        log.warning("%d lines quarantined -> %s (%s)", report["lines_quarantined"], out / "quarantine.csv",
                    ", ".join(f"{k}: {v}" for k, v in report["quarantine_reasons"].items()))
    return report
