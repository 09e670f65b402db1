"""Unit tests of pipeline.formats: the `$` lines, the prepared-table contract, the label decoders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import formats, schema
from pipeline.formats import labels as label_codec

BITS = "1,0,1,0,0,1,0,0,0,1,0,0,0,1,0,0,0,0,0,0,0"  # female, 18-60, side, handbag, short sleeve
PED_CAPTION = "A female pedestrian with a handbag, in short sleeves."


# --------------------------------------------------------------------------- $-separated lines

def test_label_line_written_then_read_back():
    line = formats.format_label_line("000001.jpg", BITS, PED_CAPTION)
    assert line == f"000001.jpg${BITS}${PED_CAPTION}"
    rec = formats.parse_label_line(line)
    assert (rec.name, rec.attribute, rec.caption, rec.domain) == ("000001.jpg", BITS, PED_CAPTION, "pedestrian")
    veh = formats.parse_label_line(formats.format_label_line("abcdefghij.jpg", "grey Chery Sedan.", "A car."))
    assert veh.domain == "vehicle" and veh.vehicle == {"color": "grey", "brand": "Chery", "type": "Sedan"}


def test_gt_line_written_then_read_back(tmp_path):
    lines = [formats.format_gt_line("A white Audi.", ["a.jpg", "b.jpg"]), "", formats.format_gt_line("x", ["c.jpg"])]
    assert lines[0] == "A white Audi.$a.jpg$b.jpg"
    path = tmp_path / "test_gt.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")  # BOM and CRLF are noise
    texts, relevant = formats.read_gt(path)
    assert texts == ["A white Audi.", "x"] and relevant == [{"a.jpg", "b.jpg"}, {"c.jpg"}]


@pytest.mark.parametrize("content, message", [
    (b"a text without images\n", r"gt.txt:1: expected text\$image"),
    (b"ok$a.jpg\nbad \xff$b.jpg\n", "gt.txt:2: invalid UTF-8"),
])
def test_malformed_gt_line_names_file_and_line(tmp_path, content, message):
    (tmp_path / "gt.txt").write_bytes(content)
    with pytest.raises(formats.FormatError, match=message):
        formats.read_gt(tmp_path / "gt.txt")


def test_synthetic_release_lines_parse(smoke_release):
    """What synth writes, the readers read: every label line is kept, every gt line has images."""
    for rel in formats.LABEL_FILES.values():
        lines, trailing = formats.read_lines(smoke_release / rel)
        assert trailing == 0 and lines
        assert all(isinstance(formats.parse_label_line(text), formats.LabelLine) for _, text, _ in lines)
    texts, relevant = formats.read_gt(smoke_release / formats.TEST_GT)
    assert texts == (smoke_release / formats.TEST_TEXT).read_text().splitlines()
    assert all(relevant)


# --------------------------------------------------------------------------- the table contract

def test_table_frame_casts_to_the_contract_and_rejects_other_columns():
    df = formats.table_frame("queries", {"query_id": [0, 1], "split": ["val", "test"], "text": ["a", "b"],
                                         "image": ["x.jpg", None]})
    assert list(df.columns) == formats.columns("queries") == ["query_id", "split", "text", "image"]
    assert {c: str(t) for c, t in df.dtypes.items()} == formats.TABLES["queries"]
    assert df["image"].isna().tolist() == [False, True]
    with pytest.raises(ValueError, match=r"queries: columns \['extra'\] differ from the contract"):
        formats.table_frame("queries", {"query_id": [], "split": [], "text": [], "image": [], "extra": []})
    with pytest.raises(ValueError, match="unknown prepared table 'gallery'"):
        formats.columns("gallery")


def test_label_frame_has_every_contract_column_with_its_dtype():
    recs = [formats.parse_label_line(f"000001.jpg${BITS}${PED_CAPTION}"),
            formats.parse_label_line("abcdefghij.jpg$white Audi.$This is a white Audi.")]
    df = formats.label_frame(recs, "train")
    assert {c: str(t) for c, t in df.dtypes.items()} == formats.TABLES["labels"]
    assert df["Female"].tolist()[0] == 1 and pd.isna(df["Female"].iloc[1])
    assert df["brand"].tolist()[1] == "Audi" and pd.isna(df["type"].iloc[1]) and pd.isna(df["color"].iloc[0])
    empty = formats.label_frame([], "val")
    assert list(empty.columns) == formats.columns("labels") and len(empty) == 0


def test_tables_written_and_read_back(tmp_path):
    q = formats.table_frame("quarantine", {"file": ["a.txt"], "line": [3], "raw": [""], "reason": ["blank line"]})
    formats.write_table(tmp_path, "quarantine", q)
    assert (tmp_path / "quarantine.csv").read_text() == "file,line,raw,reason\na.txt,3,,blank line\n"
    back = formats.read_table(tmp_path, "quarantine")
    assert back.to_dict("records") == [{"file": "a.txt", "line": "3", "raw": "", "reason": "blank line"}]
    images = formats.table_frame("images", {"name": ["a.jpg"], "path": ["r/a.jpg"], "split": ["test"],
                                            "domain": [None], "width": [4], "height": [6]})
    formats.write_table(tmp_path, "images", images)
    pd.testing.assert_frame_equal(formats.read_table(tmp_path, "images"), images)
    assert formats.read_table(tmp_path, "images", columns=["name"]).columns.tolist() == ["name"]
    with pytest.raises(ValueError, match="are not the contract's"):
        formats.write_table(tmp_path, "images", images[["name", "path"]])


def test_reading_a_missing_or_bad_table_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels.parquet not found: run the ingest stage first"):
        formats.read_table(tmp_path, "labels")
    (tmp_path / "quarantine.csv").write_text("path,why\n")
    with pytest.raises(ValueError, match=r"quarantine.csv: missing columns \['file', 'line', 'raw', 'reason'\]"):
        formats.read_table(tmp_path, "quarantine")


# --------------------------------------------------------------------------- label decoders

def _labels() -> pd.DataFrame:
    lines = [f"000001.jpg${BITS}${PED_CAPTION}", "abcdefghij.jpg$white Audi.$This is a white Audi.",
             "bcdefghijk.jpg$Sedan.$A Sedan."]
    return formats.label_frame([formats.parse_label_line(ln) for ln in lines], "val")


def test_label_dicts_decode_each_domain_over_its_own_groups():
    d = formats.label_dicts(_labels())
    assert d["000001.jpg"] == schema.groups_to_values(schema.bits_to_groups(schema.parse_bits(BITS)))
    assert d["abcdefghij.jpg"] == {"color": "white", "type": None, "brand": "Audi"}
    assert d["bcdefghijk.jpg"] == {"color": None, "type": "Sedan", "brand": None}
    assert formats.label_records(_labels())[1] == d["abcdefghij.jpg"]  # row order, same decoding


def test_label_matrix_indices_missing_and_domain_masking():
    labels = _labels()
    groups = schema.PEDESTRIAN_GROUPS[:2] + schema.VEHICLE_GROUPS
    m = formats.label_matrix(labels, groups)
    assert m.dtype == np.int64 and m.shape == (3, 5)
    assert m[0].tolist() == [0, 1, -1, -1, -1]  # female, 18to60; a pedestrian has no vehicle label
    white, audi, sedan = (schema.VEHICLE_GROUPS[i].index(v) for i, v in ((0, "white"), (2, "Audi"), (1, "Sedan")))
    assert m[1].tolist() == [-1, -1, white, -1, audi]
    assert m[2].tolist() == [-1, -1, -1, sedan, -1]
    # A group is read only on rows of its domain, even where the column holds a value.
    forged = labels.assign(brand=pd.array(["Audi"] * 3, dtype="string"))
    assert formats.label_matrix(forged, schema.VEHICLE_GROUPS[2:])[:, 0].tolist() == [-1, audi, audi]
    # The router's group is the domain column itself, on every row (null: unlabelled).
    routed = labels.assign(domain=pd.array(["pedestrian", "vehicle", None], dtype="string"))
    assert formats.label_matrix(routed, (schema.ROUTER_GROUP,))[:, 0].tolist() == [0, 1, label_codec.MISSING]


def test_label_matrix_names_missing_columns_and_bad_values():
    with pytest.raises(ValueError, match=r"lacks the columns \['brand'\]"):
        formats.label_matrix(_labels().drop(columns=["brand"]), schema.VEHICLE_GROUPS)
    bad = _labels().assign(color=pd.array([None, "mauve", None], dtype="string"))
    with pytest.raises(KeyError, match="unknown value 'mauve' for group 'color'"):
        formats.label_matrix(bad, schema.VEHICLE_GROUPS)


# --------------------------------------------------------------------------- stages use the codecs

def test_score_reads_label_files_with_the_shared_codec(tmp_path):
    from pipeline import score

    path = tmp_path / "val.txt"
    lines = [f"000001.jpg${BITS}${PED_CAPTION}", "", "abcdefghij.jpg$white Audi.$This is a white Audi."]
    path.write_text("\n".join(lines) + "\n")
    images, domains, captions, labels = score.read_labels(path)
    assert images == ["000001.jpg", "abcdefghij.jpg"] and domains == ["pedestrian", "vehicle"]
    assert captions == [PED_CAPTION, "This is a white Audi."]
    assert labels == list(formats.label_dicts(_labels().iloc[:2]).values())  # decoded as labels.parquet is
    path.write_text(lines[0] + "\nabcdefghij.jpg$white Lada.$A white Lada.\n")
    with pytest.raises(score.ScoreError, match=r"val.txt:2: .*unknown vehicle vocabulary 'Lada'"):
        score.read_labels(path)
