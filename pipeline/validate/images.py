"""Image-file checks: exists, not empty, header readable, RGB, size in bounds, complete, decodes,
not blank or constant.

Every file gets the cheap checks (read bytes, parse the header); the full decode runs on all files
or a seeded sample (``decode_fraction``), and a JPEG left out of the sample is at least checked for
its end marker, which a truncated file lacks. Files are inspected in
parallel on all cores; the per-file results become a DataFrame that a GE suite validates. A value
that could not be measured (no header for a missing file) is left null, so each problem is counted
by exactly one expectation.
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing as mp
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.validate.engine import WARNING, Suite, expectation

log = logging.getLogger(__name__)

#: JPEG end-of-image marker. 0xFF in entropy-coded data is always followed by 0x00 or a restart
#: marker, so this pair appears only as a real marker: a file cut short does not end with it.
_EOI = b"\xff\xd9"

_COLUMNS = {"exists": "boolean", "n_bytes": "Int64", "header_ok": "boolean", "format": "string",
            "mode": "string", "file_width": "Int64", "file_height": "Int64", "jpeg_complete": "boolean",
            "decoded": "boolean", "decode_ok": "boolean", "pixel_std": "Float64", "md5": "string",
            "error": "string"}


def inspect_image(task: tuple[str, bool]) -> dict[str, Any]:
    """Measure one file. ``task`` is ``(path, full_decode)``; never raises."""
    from PIL import Image, ImageStat

    path, decode = task
    row: dict[str, Any] = dict.fromkeys(_COLUMNS)
    row.update(exists=os.path.isfile(path), decoded=bool(decode))
    if not row["exists"]:
        return row
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        row.update(header_ok=False, error=f"unreadable: {e}")
        return row
    row["n_bytes"] = len(data)
    if not data:
        return row
    row["md5"] = hashlib.md5(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            row.update(header_ok=True, format=im.format, mode=im.mode, file_width=im.width,
                       file_height=im.height)
            if im.format == "JPEG" and not decode:  # a full decode is the stronger check
                row["jpeg_complete"] = _EOI in data[-32:]
            if decode:
                try:
                    im.load()
                    row["decode_ok"] = True
                    row["pixel_std"] = float(max(ImageStat.Stat(im).stddev))
                except Exception as e:  # noqa: BLE001 - any decoder error is the finding
                    row.update(decode_ok=False, error=f"decode: {e}")
    except Exception as e:  # noqa: BLE001
        row.update(header_ok=False, error=f"header: {e}")
    return row


def inspect_images(paths: Sequence[str], decode: Sequence[bool], workers: int = 0,
                   chunksize: int = 64) -> pd.DataFrame:
    """Inspect files in parallel (``workers`` 0 = all cores), keeping the input order."""
    from tqdm import tqdm

    tasks = list(zip(map(str, paths), map(bool, decode)))
    workers = workers or os.cpu_count() or 1
    bar = dict(total=len(tasks), desc="images", unit="img", mininterval=2, disable=len(tasks) < 1000)
    if workers == 1 or len(tasks) < 2 * chunksize:
        rows = [inspect_image(t) for t in tqdm(tasks, **bar)]
    else:
        with mp.Pool(workers) as pool:
            rows = list(tqdm(pool.imap(inspect_image, tasks, chunksize=chunksize), **bar))
    df = pd.DataFrame(rows, columns=list(_COLUMNS))
    return df.astype(_COLUMNS)


def decode_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """Which of ``n`` images get the full decode: all when ``fraction >= 1``, else a seeded sample."""
    if fraction >= 1:
        return np.ones(n, dtype=bool)
    return np.random.default_rng(seed).random(n) < fraction


def image_checks(images: pd.DataFrame, decode_fraction: float = 1.0, seed: int = 0, workers: int = 0,
                 root: Path | None = None) -> pd.DataFrame:
    """The images table joined with the measurements of its files (paths relative to ``root``)."""
    root = Path(root or Path.cwd())
    paths = [str(p) if os.path.isabs(p) else str(root / p) for p in images["path"].fillna("").astype(str)]
    found = inspect_images(paths, decode_mask(len(images), decode_fraction, seed), workers)
    data = pd.concat([images[["name", "split", "path", "width", "height"]].reset_index(drop=True), found],
                     axis=1)
    header = data["header_ok"].fillna(False).to_numpy(bool)
    same = (data["file_width"] == data["width"]) & (data["file_height"] == data["height"])
    data["size_matches"] = pd.array(np.where(header, same.fillna(False), None), dtype="boolean")
    splits = data.dropna(subset=["md5"]).groupby("md5")["split"].nunique()
    data["md5_splits"] = data["md5"].map(splits).astype("Int64")
    return data


def images_suite(checks: pd.DataFrame, min_size: tuple[int, int], max_size: tuple[int, int],
                 min_pixel_std: float) -> Suite:
    """Expectations over :func:`image_checks` output; bounds are (width, height)."""
    n_decoded = int(checks["decoded"].sum())
    return Suite("image_files", checks, [
        expectation("ExpectColumnValuesToBeInSet", "image file exists", column="exists", value_set=[True]),
        expectation("ExpectColumnValuesToBeBetween", "image file is not empty (0 bytes)", column="n_bytes",
                    min_value=1),
        expectation("ExpectColumnValuesToBeInSet", "image header is readable", column="header_ok",
                    value_set=[True]),
        expectation("ExpectColumnValuesToBeInSet", "images are JPEG", WARNING, column="format",
                    value_set=["JPEG"]),
        expectation("ExpectColumnValuesToBeInSet", "images are RGB", column="mode", value_set=["RGB"]),
        expectation("ExpectColumnValuesToBeBetween", f"image width is {min_size[0]}-{max_size[0]} px",
                    column="file_width", min_value=min_size[0], max_value=max_size[0]),
        expectation("ExpectColumnValuesToBeBetween", f"image height is {min_size[1]}-{max_size[1]} px",
                    column="file_height", min_value=min_size[1], max_value=max_size[1]),
        expectation("ExpectColumnValuesToBeInSet", "size in the images table matches the file",
                    column="size_matches", value_set=[True]),
        expectation("ExpectColumnValuesToBeInSet",
                    "a JPEG not fully decoded ends with its end-of-image marker (not truncated)",
                    column="jpeg_complete", value_set=[True]),
        expectation("ExpectColumnValuesToBeInSet", f"image decodes fully ({n_decoded} of {len(checks)} decoded)",
                    column="decode_ok", value_set=[True]),
        expectation("ExpectColumnValuesToBeBetween",
                    f"image is not blank or one colour (pixel std >= {min_pixel_std})",
                    column="pixel_std", min_value=min_pixel_std),
        expectation("ExpectColumnValuesToBeBetween", "no identical image file in two splits", WARNING,
                    column="md5_splits", max_value=1),
    ], id_columns=("split", "name", "error"), notes="The files named by images.parquet")


def release_files(release_dir: Path, images: pd.DataFrame) -> pd.DataFrame:
    """Every image file in the release's ``<split>/<split>_images`` folders, and whether the
    images table lists it: a file ingest left out (its label line quarantined) is not lost quietly."""
    listed = set(zip(images["split"].astype(str), images["name"].astype(str)))
    rows = []
    for split in ("train", "val", "test"):
        folder = Path(release_dir) / split / f"{split}_images"
        names = sorted(e.name for e in os.scandir(folder) if e.is_file()) if folder.is_dir() else []
        rows += [{"split": split, "name": n, "in_table": (split, n) in listed} for n in names]
    return pd.DataFrame(rows, columns=["split", "name", "in_table"])


def release_files_suite(files: pd.DataFrame) -> Suite:
    return Suite("release_files", files, [
        expectation("ExpectColumnValuesToBeInSet", "every image file of the release is in the images table",
                    WARNING, column="in_table", value_set=[True]),
    ], notes="Files in the release folders against images.parquet")
