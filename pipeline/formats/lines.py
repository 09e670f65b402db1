"""The release's text files: their layout, the line reader and the ``$``-separated lines.

Layout (docs/architecture.md): ``train/train_label.txt`` and ``val/val_label.txt`` hold
``image$attribute$caption`` lines, ``test/test_text.txt`` one caption a line, and
``test/test_gt.txt`` (organisers only; the synthetic release has it) ``text$img$img...`` lines.

Lines are read as bytes (:func:`read_lines`): a UTF-8 BOM at the start of a file and a CR before
the newline are dropped; trailing blank lines are not data and are only counted; a line that is
not UTF-8 is kept, with its bytes escaped, so the caller can report it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import schema

#: The field separator of label and ground-truth lines.
SEP = "$"
LABEL_FILES = {"train": "train/train_label.txt", "val": "val/val_label.txt"}
IMAGE_DIRS = {"train": "train/train_images", "val": "val/val_images", "test": "test/test_images"}
TEST_TEXT = "test/test_text.txt"
TEST_GT = "test/test_gt.txt"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

#: One line of a file: ``(line number, text or None if not UTF-8, raw text for the record)``.
Line = tuple[int, "str | None", str]
#: A rejected line: ``(line number, raw line, reason)``.
Reject = tuple[int, str, str]


class FormatError(ValueError):
    """A line that does not follow its file's format (the message names file and line)."""


def read_lines(path: str | Path) -> tuple[list[Line], int]:
    """The lines of a release text file and the number of trailing blank lines dropped."""
    data = Path(path).read_bytes()
    if not data:
        return [], 0
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    out = []
    for i, b in enumerate(data.split(b"\n"), start=1):
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


# --------------------------------------------------------------------------- label lines

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


def format_label_line(name: str, attribute: str, caption: str) -> str:
    """An ``image$attribute$caption`` line (no newline)."""
    return SEP.join((name, attribute, caption))


def parse_label_line(text: str) -> LabelLine | str:
    """Parse one ``image$attribute$caption`` line; return a :class:`LabelLine` or the reason it is bad."""
    if not text.strip():
        return "blank line"
    fields = text.split(SEP)
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
    return not isinstance(parse_label_line(f"x.jpg{SEP}{attribute}{SEP}x"), str)


def check_label_lines(lines: list[Line]) -> tuple[list[LabelLine], list[Reject]]:
    """Split a label file's lines into kept lines and ``(line, raw, reason)`` rejects."""
    kept: list[LabelLine] = []
    bad: list[Reject] = []
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


def read_label_file(path: str | Path) -> tuple[list[LabelLine], list[Reject], int]:
    """Kept lines, rejects and trailing blank count of one label file (no image checks).

    Duplicate image names: when every copy is the same line, the first is kept and the repeats
    rejected ("duplicate line"); when the copies disagree nothing tells which is right, so all of
    them are rejected ("conflicting duplicate").
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"label file {path} not found")
    lines, trailing = read_lines(path)
    kept, bad = check_label_lines(lines)
    return kept, bad, trailing


# --------------------------------------------------------------------------- ground truth lines

def format_gt_line(text: str, names: Sequence[str]) -> str:
    """A ``text$img$img...`` ground-truth line (no newline)."""
    return SEP.join([text, *names])


def parse_gt_line(text: str) -> tuple[str, list[str]]:
    """``(caption, relevant image names in file order)`` of a ground-truth line; ``ValueError``
    without an image."""
    parts = text.split(SEP)
    if len(parts) < 2:
        raise ValueError(f"expected text$image$..., got {text[:80]!r}")
    return parts[0], list(dict.fromkeys(p.strip() for p in parts[1:] if p.strip()))


def read_gt_lines(path: str | Path) -> list[tuple[str, list[str]]]:
    """The organisers' ground truth line by line: ``(text, relevant images in file order)``.

    Blank lines are skipped; a malformed or undecodable line raises :class:`FormatError`.
    """
    out = []
    for number, text, raw in read_lines(path)[0]:
        if text is None:
            raise FormatError(f"{path}:{number}: invalid UTF-8: {raw[:80]!r}")
        if not text.strip():
            continue
        try:
            out.append(parse_gt_line(text))
        except ValueError as e:
            raise FormatError(f"{path}:{number}: {e}") from None
    return out


def read_gt(path: str | Path) -> tuple[list[str], list[set[str]]]:
    """The texts in test text order and each one's set of relevant images (for scoring)."""
    lines = read_gt_lines(path)
    return [t for t, _ in lines], [set(names) for _, names in lines]
