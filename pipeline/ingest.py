"""Ingest a Track-2 release into typed Parquet tables (stage ``ingest``).

Reads the release layout of docs/architecture.md and writes under ``base.prepared_dir``:
``images.parquet``, ``labels.parquet``, ``queries.parquet`` and ``quarantine.csv``. Images are
referenced by path, never copied; width and height come from the image header only.

Every line read is either kept or quarantined (file, line number, raw line, reason), so per file
``read = kept + quarantined``. Lines are read as bytes: a UTF-8 BOM at the start of a file and a
CR before the newline are dropped; trailing blank lines are not data and are only counted
(``trailing_blank``); a blank line inside a file is quarantined.

Duplicate image names within one label file: when every copy is the same line, the first is kept
and the repeats quarantined ("duplicate line"); when the copies disagree nothing tells which is
right, so all of them are quarantined ("conflicting duplicate").
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import schema

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
LABEL_FILES = {"train": "train/train_label.txt", "val": "val/val_label.txt"}
IMAGE_DIRS = {"train": "train/train_images", "val": "val/val_images", "test": "test/test_images"}
TEST_TEXT = "test/test_text.txt"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
QUARANTINE_COLUMNS = ["file", "line", "raw", "reason"]


class IngestError(RuntimeError):
    """The release cannot be ingested at all (a missing file or folder)."""


@dataclass
class LabelLine:
    """One well-formed label line: image name, raw attribute field, caption and parsed label."""

    line: int
    raw: str
    name: str
    attribute: str
    caption: str
    domain: str
    bits: np.ndarray | None = None  # pedestrians: (21,) int8
    vehicle: dict[str, str] = field(default_factory=dict)  # vehicles: color/brand/type present


def read_lines(path: Path) -> tuple[list[tuple[int, str | None, str]], int]:
    """Lines of a text file as ``(line_number, text or None if not UTF-8, raw for the record)``.

    Drops a leading UTF-8 BOM, the CR of CRLF endings and trailing blank lines; returns the lines
    and the number of trailing blank lines dropped.
    """
    data = path.read_bytes()
    if not data:
        return [], 0
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    parts = data.split(b"\n")
    out = []
    for i, b in enumerate(parts, start=1):
        if b.endswith(b"\r"):
            b = b[:-1]
        try:
            out.append((i, b.decode("utf-8"), ""))
        except UnicodeDecodeError:
            out.append((i, None, b.decode("utf-8", errors="backslashreplace")))
    trailing = 0
    while out and out[-1][1] is not None and not out[-1][1].strip():
        out.pop()
        trailing += 1
    # split() yields one empty piece after a final newline; that is the normal end, not a blank line.
    if data.endswith(b"\n") and trailing:
        trailing -= 1
    return [(i, t, t if t is not None else r) for i, t, r in out], trailing


def parse_label_line(text: str) -> LabelLine | str:
    """Parse one ``image$attribute$caption`` line; return a :class:`LabelLine` or the reason it is bad."""
    if not text.strip():
        return "blank line"
    fields = text.split("$")
    if len(fields) != 3:
        if len(fields) > 3 and fields[0].strip() and _attribute_ok(fields[1]):
            return f"a '$' inside the caption ({len(fields)} '$'-separated fields, expected 3)"
        return f"wrong field count: {len(fields)} '$'-separated fields, expected 3"
    name, attribute, caption = (f.strip() for f in fields)
    if not name:
        return "empty image name"
    if "/" in name or "\\" in name or not name.lower().endswith(IMAGE_SUFFIXES):
        return f"bad image name {name!r}"
    if not caption:
        return "empty caption"
    if _looks_like_bits(attribute):
        try:
            bits = schema.parse_bits(attribute)
        except ValueError as e:
            return f"bad bit string: {e}"
        problems = schema.constraint_violations(bits)
        if problems:
            return "bits break constraints: " + "; ".join(problems)
        return LabelLine(0, text, name, attribute, caption, "pedestrian", bits=bits)
    try:
        vehicle = schema.parse_vehicle_phrase(attribute)
    except ValueError as e:
        return f"bad vehicle label: {e}"
    return LabelLine(0, text, name, attribute, caption, "vehicle", vehicle=vehicle)


def _looks_like_bits(attribute: str) -> bool:
    a = attribute.strip()
    return bool(a) and (a[0].isdigit() or "," in a)


def _attribute_ok(attribute: str) -> bool:
    return not isinstance(parse_label_line(f"x.jpg${attribute}$x"), str)


def check_label_lines(lines: list[tuple[int, str | None, str]]) -> tuple[list[LabelLine], list[tuple[int, str, str]]]:
    """Split a label file's lines into kept lines and ``(line, raw, reason)`` rejects."""
    kept: list[LabelLine] = []
    bad: list[tuple[int, str, str]] = []
    for number, text, raw in lines:
        if text is None:
            bad.append((number, raw, "invalid UTF-8"))
            continue
        res = parse_label_line(text)
        if isinstance(res, str):
            bad.append((number, raw, res))
        else:
            res.line = number
            kept.append(res)
    by_name: dict[str, list[LabelLine]] = {}
    for rec in kept:
        by_name.setdefault(rec.name, []).append(rec)
    dropped: set[int] = set()
    for name, recs in by_name.items():
        if len(recs) == 1:
            continue
        first = recs[0]
        if all(r.raw.strip() == first.raw.strip() for r in recs):
            for r in recs[1:]:
                bad.append((r.line, r.raw, f"duplicate line (image {name} first at line {first.line})"))
                dropped.add(r.line)
        else:
            others = ", ".join(str(r.line) for r in recs)
            for r in recs:
                bad.append((r.line, r.raw, f"conflicting duplicate of image {name} (lines {others})"))
                dropped.add(r.line)
    kept = [r for r in kept if r.line not in dropped]
    bad.sort()
    return kept, bad


def read_label_file(path: str | Path) -> tuple[list[LabelLine], list[tuple[int, str, str]], int]:
    """Kept lines, rejects and trailing blank count of one label file (no image checks)."""
    path = Path(path)
    if not path.exists():
        raise IngestError(f"label file {path} not found")
    lines, trailing = read_lines(path)
    kept, bad = check_label_lines(lines)
    return kept, bad, trailing


def label_frame(records: list[LabelLine], split: str):
    """``labels.parquet`` rows for kept label lines (see docs/architecture.md)."""
    import pandas as pd

    n = len(records)
    ped = [r.domain == "pedestrian" for r in records]
    bits = np.zeros((n, schema.N_BITS), np.int8)
    for i, r in enumerate(records):
        if r.bits is not None:
            bits[i] = r.bits
    groups = schema.bits_matrix_to_groups(bits) if n else np.zeros((0, len(schema.PEDESTRIAN_GROUPS)), np.int8)
    mask = ~np.asarray(ped, bool)
    cols: dict[str, Any] = {
        "name": pd.array([r.name for r in records], dtype="string"),
        "split": pd.array([split] * n, dtype="string"),
        "domain": pd.array([r.domain for r in records], dtype="string"),
        "attribute": pd.array([r.attribute for r in records], dtype="string"),
        "caption": pd.array([r.caption for r in records], dtype="string"),
    }
    for j, bit in enumerate(schema.PEDESTRIAN_BITS):
        cols[bit] = pd.arrays.IntegerArray(bits[:, j].copy(), mask.copy())
    for j, g in enumerate(schema.PEDESTRIAN_GROUPS):
        cols[g.name] = pd.arrays.IntegerArray(groups[:, j].astype(np.int8), mask.copy())
    for g in ("color", "type", "brand"):
        cols[g] = pd.array([r.vehicle.get(g) for r in records], dtype="string")
    return pd.DataFrame(cols)


def labels_from_files(paths: list[str | Path]):
    """A ``labels.parquet``-shaped frame of the kept lines of label files (used by mine-mapping)."""
    import pandas as pd

    frames = []
    for p in paths:
        kept, bad, _ = read_label_file(p)
        if bad:
            log.warning("%s: %d malformed lines skipped (first: line %d, %s)", p, len(bad), bad[0][0], bad[0][2])
        frames.append(label_frame(kept, Path(p).stem.split("_")[0]))
    return pd.concat(frames, ignore_index=True)


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


def ingest(release_dir: str | Path, out_dir: str | Path, report_path: str | Path | None = None,
           workers: int = 2) -> dict[str, Any]:
    """Read the release at ``release_dir`` and write the prepared tables under ``out_dir``.

    Returns the report (also written to ``report_path`` as JSON). Raises :class:`IngestError`
    naming the first missing file or folder.
    """
    import pandas as pd

    release = Path(release_dir)
    out = Path(out_dir)
    if not release.is_dir():
        raise IngestError(f"release folder {release} not found (base.release_dir in params.yaml)")
    needed = [release / f for f in (*LABEL_FILES.values(), TEST_TEXT)] + [release / d for d in IMAGE_DIRS.values()]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise IngestError(f"release {release} is incomplete; missing: {', '.join(missing)}")

    quarantine: list[tuple[str, int, str, str]] = []
    files: dict[str, dict[str, int]] = {}
    present: dict[str, list[LabelLine]] = {}
    bad_lines: dict[str, list[tuple[int, str, str]]] = {}
    unlabelled: dict[str, int] = {}
    for split, rel in LABEL_FILES.items():
        lines, trailing = read_lines(release / rel)
        kept, bad = check_label_lines(lines)
        folder = release / IMAGE_DIRS[split]
        on_disk = set(_list_images(folder))
        present[split] = [r for r in kept if r.name in on_disk]
        bad += [(r.line, r.raw, f"image file missing: {folder / r.name}") for r in kept if r.name not in on_disk]
        bad_lines[split] = bad
        files[rel] = {"read": len(lines), "trailing_blank": trailing}
        unlabelled[split] = len(on_disk - {r.name for r in kept})

    test_folder = release / IMAGE_DIRS["test"]
    test_names = _list_images(test_folder)
    paths = [str(release / IMAGE_DIRS[s] / r.name) for s in LABEL_FILES for r in present[s]]
    paths += [str(test_folder / n) for n in test_names]
    size_of = dict(zip(paths, image_sizes(paths, workers=workers)))

    image_rows: list[tuple[str, str, str, str | None, tuple[int, int]]] = []
    label_frames, query_rows = [], []
    for split, rel in LABEL_FILES.items():
        good = []
        for r in present[split]:
            path = str(release / IMAGE_DIRS[split] / r.name)
            if size_of[path] is None:
                bad_lines[split].append((r.line, r.raw, f"unreadable image (no valid header): {path}"))
                continue
            good.append(r)
            image_rows.append((r.name, path, split, r.domain, size_of[path]))
            query_rows.append((r.line - 1, split, r.caption, r.name))
        label_frames.append(label_frame(good, split))
        quarantine += [(rel, n, raw, reason) for n, raw, reason in sorted(bad_lines[split])]
        files[rel].update(kept=len(good), quarantined=len(bad_lines[split]))

    lines, trailing = read_lines(release / TEST_TEXT)
    kept_q = bad_q = 0
    for number, text, raw in lines:
        reason = "invalid UTF-8" if text is None else ("empty caption" if not text.strip() else None)
        if reason:
            quarantine.append((TEST_TEXT, number, raw, reason))
            bad_q += 1
        else:
            query_rows.append((number - 1, "test", text.strip(), None))
            kept_q += 1
    files[TEST_TEXT] = {"read": len(lines), "kept": kept_q, "quarantined": bad_q, "trailing_blank": trailing}
    unreadable = [n for n in test_names if size_of[str(test_folder / n)] is None]
    for n in unreadable:
        quarantine.append((str(test_folder / n), 0, "", "unreadable image (no valid header)"))
    image_rows += [(n, str(test_folder / n), "test", None, size_of[str(test_folder / n)])
                   for n in test_names if size_of[str(test_folder / n)] is not None]

    labels = pd.concat(label_frames, ignore_index=True)
    images = pd.DataFrame({
        "name": pd.array([r[0] for r in image_rows], dtype="string"),
        "path": pd.array([r[1] for r in image_rows], dtype="string"),
        "split": pd.array([r[2] for r in image_rows], dtype="string"),
        "domain": pd.array([r[3] for r in image_rows], dtype="string"),
        "width": np.array([r[4][0] for r in image_rows], np.int32),
        "height": np.array([r[4][1] for r in image_rows], np.int32),
    })
    queries = pd.DataFrame({
        "query_id": np.array([q[0] for q in query_rows], np.int64),
        "split": pd.array([q[1] for q in query_rows], dtype="string"),
        "text": pd.array([q[2] for q in query_rows], dtype="string"),
        "image": pd.array([q[3] for q in query_rows], dtype="string"),
    })

    out.mkdir(parents=True, exist_ok=True)
    images.to_parquet(out / "images.parquet", index=False)
    labels.to_parquet(out / "labels.parquet", index=False)
    queries.to_parquet(out / "queries.parquet", index=False)
    pd.DataFrame(quarantine, columns=QUARANTINE_COLUMNS).to_csv(out / "quarantine.csv", index=False)

    for rel, c in files.items():
        if c["read"] != c["kept"] + c["quarantined"]:  # the invariant the report promises
            raise RuntimeError(f"{rel}: lines do not reconcile: {c}")
        log.info("%s: read %d = kept %d + quarantined %d (%d trailing blank lines)",
                 rel, c["read"], c["kept"], c["quarantined"], c["trailing_blank"])
    reasons = Counter(_reason_kind(q[3]) for q in quarantine)
    report = {
        "release": str(release),
        "files": files,
        "lines_read": sum(c["read"] for c in files.values()),
        "lines_kept": sum(c["kept"] for c in files.values()),
        "lines_quarantined": sum(c["quarantined"] for c in files.values()),
        "quarantine_reasons": dict(sorted(reasons.items())),
        "images": {f"{s}_{d}": int(n) for (s, d), n in
                   images.fillna({"domain": "unrouted"}).groupby(["split", "domain"]).size().items()},
        "images_total": len(images),
        "test_images_unreadable": len(unreadable),
        "images_without_label": unlabelled,
        # Names are unique within a split; the same name in two splits is two different files.
        "names_in_several_splits": int(images["name"].duplicated().sum()),
        "queries": {s: int((queries["split"] == s).sum()) for s in ("val", "test")},
    }
    if report["lines_quarantined"]:
        log.warning("%d lines quarantined -> %s (%s)", report["lines_quarantined"],
                    out / "quarantine.csv", ", ".join(f"{k}: {v}" for k, v in reasons.items()))
    if report_path is not None:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def _reason_kind(reason: str) -> str:
    """The reason without its details, for counting ("bad bit string: ..." -> "bad bit string")."""
    for sep in (":", " ("):
        reason = reason.split(sep)[0]
    return reason.strip()
