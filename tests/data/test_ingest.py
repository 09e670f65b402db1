"""Ingest: line checks (every malformed case of issue 3), reconciliation, the Parquet contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from pipeline import schema
from pipeline.config import load_params
from pipeline.formats import check_label_lines, parse_label_line, read_lines
from pipeline.ingest import IngestError, IngestIO, run

ROOT = Path(__file__).resolve().parents[2]

# A valid pedestrian: female, 18-60, side, handbag, short sleeve.
BITS = "1,0,1,0,0,1,0,0,0,1,0,0,0,1,0,0,0,0,0,0,0"
PED = f"000001.jpg${BITS}$A female pedestrian who is between 18 and 60 years old, and is standing sideways and with a handbag. She is in a tee shirt with short sleeves."
VEH = "abcdefghij.jpg$white Audi.$This is a white Audi."


def write_release(root: Path, train: bytes, val: bytes, test: bytes, train_images=(), val_images=(),
                  test_images=()) -> Path:
    """A tiny release in the official layout; images are 4x6 JPEGs (header sizes matter)."""
    for split, text, names in (("train", train, train_images), ("val", val, val_images)):
        (root / split / f"{split}_images").mkdir(parents=True)
        (root / split / f"{split}_label.txt").write_bytes(text)
        for n in names:
            Image.new("RGB", (4, 6), "red").save(root / split / f"{split}_images" / n)
    (root / "test" / "test_images").mkdir(parents=True)
    (root / "test" / "test_text.txt").write_bytes(test)
    for n in test_images:
        Image.new("RGB", (8, 3), "blue").save(root / "test" / "test_images" / n)
    return root


@pytest.fixture(scope="module")
def params():
    """The repository's params with one header-reading process (the releases here are tiny)."""
    return load_params(ROOT / "params.yaml", {"ingest": {"workers": 1}})


# --------------------------------------------------------------------------- single lines

@pytest.mark.parametrize("line, reason", [
    ("a.jpg$white Audi.", "wrong field count"),
    ("a.jpg$white Audi.$A white$Audi.", "a '$' inside the caption"),
    ("a.jpg$1,0,1$A caption.", "bad bit string: expected 21"),
    ("a.jpg$" + BITS.replace("1", "2", 1) + "$A caption.", "bad bit string: bits must be 0 or 1"),
    ("a.jpg$" + "1,1,1" + BITS[5:] + "$A caption.", "bits break constraints: exactly one age bit"),
    ("a.jpg$" + "1,0,1,0,0,0,0" + BITS[13:] + "$A caption.", "exactly one orientation bit expected, got 0"),
    ("a.jpg$white Lada.$This is a white Lada.", "bad vehicle label: unknown vehicle vocabulary"),
    ("a.jpg$white Audi.$   ", "empty caption"),
    ("a.jpg$white Audi.$", "empty caption"),
    ("$white Audi.$A white Audi.", "empty image name"),
    ("   ", "blank line"),
])
def test_malformed_line_reason(line, reason):
    result = parse_label_line(line)
    assert isinstance(result, str), f"{line!r} was accepted"
    assert reason in result


def test_valid_lines_parse():
    ped = parse_label_line(PED)
    assert ped.domain == "pedestrian" and ped.bits.tolist() == [int(b) for b in BITS.split(",")]
    veh = parse_label_line(VEH)
    assert veh.domain == "vehicle" and veh.vehicle == {"color": "white", "brand": "Audi"}
    truck = parse_label_line("x.jpg$Balong Heavy Truck.$A Balong Heavy Truck.")
    assert truck.vehicle == {"brand": "Balong Heavy Truck"}


def test_read_lines_handles_bom_crlf_trailing_blank_and_bad_utf8(tmp_path):
    f = tmp_path / "x.txt"
    f.write_bytes(b"\xef\xbb\xbf" + VEH.encode() + b"\r\n" + b"bad \xff\xfe byte\r\n" + b"\n  \n\n")
    lines, trailing = read_lines(f)
    assert [n for n, _, _ in lines] == [1, 2]
    assert lines[0][1] == VEH  # BOM and CR gone
    assert lines[1][1] is None and "\\xff" in lines[1][2]  # undecodable: raw kept, escaped
    assert trailing == 3


def test_duplicates_identical_keep_first_conflicting_quarantine_all():
    lines = [(1, VEH, VEH), (2, PED, PED), (3, VEH, VEH), (4, "z.jpg$Sedan.$A Sedan.", ""),
             (5, "z.jpg$SUV.$A SUV.", "")]
    kept, bad = check_label_lines(lines)
    assert [r.line for r in kept] == [1, 2]
    reasons = {n: r for n, _, r in bad}
    assert reasons[3].startswith("duplicate line") and "first at line 1" in reasons[3]
    assert reasons[4].startswith("conflicting duplicate") and reasons[5].startswith("conflicting duplicate")


# --------------------------------------------------------------------------- a whole release

@pytest.fixture
def messy_release(tmp_path) -> Path:
    train = "\r\n".join([
        PED,                                                    # 1 kept
        VEH,                                                    # 2 kept
        "b.jpg$white Audi.",                                    # 3 field count
        "c.jpg$white Audi.$A white $ Audi.",                    # 4 '$' in caption
        "d.jpg$1,0,1$short bits.",                              # 5 bit length
        "e.jpg$" + "1,1,1" + BITS[5:] + "$two ages.",           # 6 constraint
        "f.jpg$white Lada.$A white Lada.",                      # 7 vocabulary
        "g.jpg$white Audi.$  ",                                 # 8 empty caption
        VEH,                                                    # 9 duplicate of 2
        "missing.jpg$Sedan.$A Sedan.",                          # 10 image missing
        "",                                                     # 11 blank inside
        "h.jpg$Sedan.$A Sedan.",                                # 12 kept
    ]).encode() + b"\r\n" + b"i.jpg$Sedan.$A \xff Sedan.\r\n" + b"\r\n\r\n"  # 13 bad UTF-8, 2 trailing blanks
    val = b"\xef\xbb\xbf" + "j.jpg$grey BMW.$A grey BMW.\n".encode()
    test = b"A grey Chery Sedan.\n\nThis is a white Kia SUV.\n"
    return write_release(tmp_path / "rel", train, val, test,
                         train_images=["000001.jpg", "abcdefghij.jpg", "h.jpg", "i.jpg", "c.jpg"],
                         val_images=["j.jpg"], test_images=["vehicle_0000001.jpg", "vehicle_0000002.jpg"])


def test_ingest_quarantines_every_case_and_counts_reconcile(messy_release, tmp_path, params):
    out = tmp_path / "prepared"
    report = run(params, IngestIO(messy_release, out, tmp_path / "reports" / "ingest.json"))
    q = pd.read_csv(out / "quarantine.csv", keep_default_na=False)
    train_q = q[q["file"] == "train/train_label.txt"].set_index("line")["reason"]
    expected = {3: "wrong field count", 4: "'$' inside the caption", 5: "bad bit string",
                6: "bits break constraints", 7: "unknown vehicle vocabulary", 8: "empty caption",
                9: "duplicate line", 10: "image file missing", 11: "blank line", 13: "invalid UTF-8"}
    assert sorted(train_q.index) == sorted(expected)
    for line, reason in expected.items():
        assert reason in train_q[line], (line, train_q[line])
    assert "\\xff" in q.set_index(["file", "line"]).loc[("train/train_label.txt", 13), "raw"]
    files = report["files"]
    assert files["train/train_label.txt"] == {"read": 13, "kept": 3, "quarantined": 10, "trailing_blank": 2}
    assert files["val/val_label.txt"] == {"read": 1, "kept": 1, "quarantined": 0, "trailing_blank": 0}
    assert files["test/test_text.txt"] == {"read": 3, "kept": 2, "quarantined": 1, "trailing_blank": 0}
    for c in files.values():
        assert c["read"] == c["kept"] + c["quarantined"]
    assert json.loads((tmp_path / "reports" / "ingest.json").read_text()) == report
    assert report["images_without_label"] == {"train": 2, "val": 0}  # i.jpg (bad line), c.jpg


def test_prepared_tables_follow_the_contract(messy_release, tmp_path, params):
    out = tmp_path / "prepared"
    run(params, IngestIO(messy_release, out, tmp_path / "ingest.json"))
    images = pd.read_parquet(out / "images.parquet")
    assert list(images.columns) == ["name", "path", "split", "domain", "width", "height"]
    assert set(zip(images["split"], images["name"])) == {
        ("train", "000001.jpg"), ("train", "abcdefghij.jpg"), ("train", "h.jpg"), ("val", "j.jpg"),
        ("test", "vehicle_0000001.jpg"), ("test", "vehicle_0000002.jpg")}
    first = images.set_index("name").loc["000001.jpg"]
    assert (first["width"], first["height"], first["domain"]) == (4, 6, "pedestrian")
    assert Path(first["path"]).exists()  # referenced in place, not copied
    assert images[images["split"] == "test"]["domain"].isna().all()
    assert (images[images["split"] == "test"]["width"] == 8).all()

    labels = pd.read_parquet(out / "labels.parquet")
    g_names = [g.name for g in schema.PEDESTRIAN_GROUPS]
    assert list(labels.columns) == (["name", "split", "domain", "attribute", "caption"] + list(schema.PEDESTRIAN_BITS)
                                    + g_names + ["color", "type", "brand"])
    ped = labels.set_index("name").loc["000001.jpg"]
    assert ped["Female"] == 1 and ped["gender"] == 0 and ped["handbag"] == 0 and ped["sleeve"] == 0
    assert pd.isna(ped["color"])
    veh = labels.set_index("name").loc["abcdefghij.jpg"]
    assert pd.isna(veh["Female"]) and pd.isna(veh["gender"])  # not guessed
    assert (veh["color"], veh["brand"]) == ("white", "Audi") and pd.isna(veh["type"])
    assert str(labels["gender"].dtype) == "Int8" and str(labels["Female"].dtype) == "Int8"

    queries = pd.read_parquet(out / "queries.parquet")
    assert list(queries.columns) == ["query_id", "split", "text", "image"]
    test = queries[queries["split"] == "test"]
    assert test["query_id"].tolist() == [0, 2]  # position in test_text.txt; line 2 was empty
    assert test["text"].tolist() == ["A grey Chery Sedan.", "This is a white Kia SUV."]
    assert test["image"].isna().all()
    val = queries[queries["split"] == "val"]
    assert val["image"].tolist() == ["j.jpg"] and val["query_id"].tolist() == [0]


def test_missing_file_stops_with_a_clear_message(messy_release, tmp_path, params):
    (messy_release / "val" / "val_label.txt").unlink()
    with pytest.raises(IngestError, match="val_label.txt"):
        run(params, IngestIO(messy_release, tmp_path / "prepared", tmp_path / "ingest.json"))
    with pytest.raises(IngestError, match="not found"):
        run(params, IngestIO(tmp_path / "nowhere", tmp_path / "prepared", tmp_path / "ingest.json"))
    assert not (tmp_path / "prepared").exists() and not (tmp_path / "ingest.json").exists()


def test_cli_reports_missing_release_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline", "ingest", "--release", str(tmp_path / "nowhere"),
                        "--prepared", str(tmp_path / "p"), "--report", str(tmp_path / "ingest.json"),
                        "--params", str(ROOT / "params.yaml"), "--no-track"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert "error: release folder" in r.stderr and "Traceback" not in r.stderr


def test_unreadable_image_is_quarantined(tmp_path, params):
    rel = write_release(tmp_path / "rel", (VEH + "\n").encode(), b"", b"A caption.\n",
                        train_images=[], test_images=["t.jpg"])
    (rel / "train" / "train_images" / "abcdefghij.jpg").write_bytes(b"not a jpeg")
    report = run(params, IngestIO(rel, tmp_path / "p", tmp_path / "ingest.json"))
    assert report["files"]["train/train_label.txt"] == {"read": 1, "kept": 0, "quarantined": 1, "trailing_blank": 0}
    q = pd.read_csv(tmp_path / "p" / "quarantine.csv")
    assert "unreadable image" in q["reason"].iloc[0]


def test_parallel_header_reading_matches_serial(tmp_path):
    from pipeline.ingest import image_sizes

    paths = []
    for i in range(6):
        p = tmp_path / f"{i}.jpg"
        Image.new("RGB", (3 + i, 5), "red").save(p)
        paths.append(str(p))
    paths.append(str(tmp_path / "missing.jpg"))
    serial = image_sizes(paths, workers=1)
    assert serial == image_sizes(paths, workers=2, parallel_from=1)
    assert serial[0] == (3, 5) and serial[-1] is None
