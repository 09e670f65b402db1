"""Image-file checks: each kind of broken file is measured right and counted once by the suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.validate import images
from pipeline.validate.engine import run_suites


def noise_jpeg(path: Path, size=(64, 160), seed: int = 0, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(path, quality=90)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One file of each kind: good, truncated, empty, missing, constant, grey, PNG, garbage, tiny."""
    d = tmp_path_factory.mktemp("imgs")
    out = {"good": noise_jpeg(d / "good.jpg"), "good2": noise_jpeg(d / "good2.jpg", seed=1)}
    data = noise_jpeg(d / "full.jpg", seed=2).read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    out["truncated"] = d / "truncated.jpg"
    (d / "empty.jpg").write_bytes(b"")
    out["empty"] = d / "empty.jpg"
    out["missing"] = d / "missing.jpg"
    Image.new("RGB", (64, 160), (128, 128, 128)).save(d / "constant.jpg")
    out["constant"] = d / "constant.jpg"
    out["grey"] = noise_jpeg(d / "grey.jpg", mode="L")
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (160, 64, 3), dtype=np.uint8)).save(d / "png.jpg",
                                                                                                   format="PNG")
    out["png"] = d / "png.jpg"
    (d / "garbage.jpg").write_bytes(b"not an image at all" * 10)
    out["garbage"] = d / "garbage.jpg"
    out["tiny"] = noise_jpeg(d / "tiny.jpg", size=(8, 8))
    return out


def test_inspect_image_measures_each_kind(files):
    got = {k: images.inspect_image((str(p), True)) for k, p in files.items()}
    assert got["good"]["header_ok"] and got["good"]["decode_ok"]
    assert (got["good"]["file_width"], got["good"]["file_height"], got["good"]["mode"]) == (64, 160, "RGB")
    assert got["good"]["pixel_std"] > 50
    assert got["truncated"]["header_ok"] and got["truncated"]["jpeg_complete"] is None  # decode decides
    assert got["truncated"]["decode_ok"] is False and "truncated" in got["truncated"]["error"]
    assert got["empty"]["exists"] and got["empty"]["n_bytes"] == 0 and got["empty"]["header_ok"] is None
    assert got["missing"]["exists"] is False and got["missing"]["n_bytes"] is None
    assert got["constant"]["decode_ok"] and got["constant"]["pixel_std"] < 1
    assert got["grey"]["mode"] == "L"
    assert got["png"]["format"] == "PNG" and got["png"]["jpeg_complete"] is None
    assert got["garbage"]["header_ok"] is False and got["garbage"]["error"].startswith("header")


def test_header_only_skips_decode(files):
    row = images.inspect_image((str(files["truncated"]), False))
    assert row["decoded"] is False and row["decode_ok"] is None and row["pixel_std"] is None
    assert row["jpeg_complete"] is False  # still caught without decoding


def table_of(files: dict[str, Path]) -> pd.DataFrame:
    names = list(files)
    return pd.DataFrame({"name": [f"{n}.jpg" for n in names], "split": ["train"] * len(names),
                         "path": [str(p) for p in files.values()], "domain": ["pedestrian"] * len(names),
                         "width": [8 if n == "tiny" else 64 for n in names],
                         "height": [8 if n == "tiny" else 160 for n in names]})


def test_suite_counts_each_problem_once(files):
    table = table_of(files)
    table.loc[table["name"] == "good2.jpg", "width"] = 65  # the table disagrees with the file
    checks = images.image_checks(table, workers=1)
    out = run_suites([images.images_suite(checks, (16, 16), (4096, 4096), 2.0)])
    assert all(o.error is None for o in out)
    fails = {o.description.split(" (")[0]: o.unexpected_count for o in out if not o.success}
    assert fails == {
        "image file exists": 1,                       # missing
        "image file is not empty": 1,                 # empty
        "image header is readable": 1,                # garbage
        "images are JPEG": 1,                         # png
        "images are RGB": 1,                          # grey
        "image width is 16-4096 px": 1,               # tiny
        "image height is 16-4096 px": 1,              # tiny
        "size in the images table matches the file": 1,  # good2
        "image decodes fully": 1,                     # truncated
        "image is not blank or one colour": 1,        # constant
    }
    severities = {o.description.split(" (")[0]: o.severity for o in out}
    assert severities["images are JPEG"] == "warning" and severities["image decodes fully"] == "critical"


def test_header_only_run_still_catches_truncation(files):
    table = table_of({k: files[k] for k in ("good", "truncated", "constant", "png")})
    checks = images.image_checks(table, decode_fraction=0.0, workers=1)
    out = run_suites([images.images_suite(checks, (16, 16), (4096, 4096), 2.0)])
    fails = {o.description.split(" (")[0]: o.unexpected_count for o in out if not o.success}
    assert fails == {"a JPEG not fully decoded ends with its end-of-image marker": 1, "images are JPEG": 1}
    assert checks["jpeg_complete"].tolist()[:3] == [True, False, True]


def test_identical_files_in_two_splits_warn(files):
    table = table_of({"good": files["good"], "good2": files["good2"]})
    table = pd.concat([table, table.iloc[[0]].assign(split="val")], ignore_index=True)
    checks = images.image_checks(table, workers=1)
    assert checks["md5_splits"].tolist() == [2, 1, 2]


def test_parallel_equals_serial(tmp_path):
    paths = [noise_jpeg(tmp_path / f"{i:06d}.jpg", seed=i) for i in range(150)]
    decode = images.decode_mask(len(paths), 0.5, seed=0)
    serial = images.inspect_images(paths, decode, workers=1)
    parallel = images.inspect_images(paths, decode, workers=2, chunksize=16)
    pd.testing.assert_frame_equal(serial, parallel)
    assert 40 < serial["decoded"].sum() < 110 and serial["decode_ok"].sum() == serial["decoded"].sum()


def test_decode_mask():
    assert images.decode_mask(5, 1.0, 0).all()
    assert not images.decode_mask(1000, 0.0, 0).any()
    assert (images.decode_mask(1000, 0.1, 7) == images.decode_mask(1000, 0.1, 7)).all()


def test_release_files_lists_what_the_table_left_out(tmp_path):
    for split in ("train", "val", "test"):
        (tmp_path / split / f"{split}_images").mkdir(parents=True)
    noise_jpeg(tmp_path / "train" / "train_images" / "000001.jpg")
    noise_jpeg(tmp_path / "train" / "train_images" / "000002.jpg")
    noise_jpeg(tmp_path / "test" / "test_images" / "090001.jpg")
    table = pd.DataFrame({"name": ["000001.jpg", "090001.jpg"], "split": ["train", "test"]})
    files = images.release_files(tmp_path, table)
    assert files[~files["in_table"]][["split", "name"]].values.tolist() == [["train", "000002.jpg"]]
    (o,) = run_suites([images.release_files_suite(files)])
    assert not o.success and o.unexpected_count == 1 and o.severity == "warning"
