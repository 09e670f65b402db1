"""Data tests of the table suites: each bad case in a small hand-built table is found, counted right."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import schema
from pipeline.validate import tables
from pipeline.validate.engine import run_suites

PED_DEFAULT = dict(gender="female", age="18to60", orientation="front", hat="no", glasses="no", handbag="no",
                   bag="none", holds_objects="no", sleeve="short", upper="none", long_coat="no", skirt="no")
TEST_LINES = ["This is a white Audi Sedan.", "A female pedestrian facing the camera, in short sleeves."]


def ped(name: str, split: str, **values: str) -> dict:
    """A labels row for a pedestrian whose group values are PED_DEFAULT updated by ``values``."""
    v = {**PED_DEFAULT, **values}
    bits = schema.groups_to_bits(v)
    return {"name": name, "split": split, "domain": "pedestrian", "attribute": schema.format_bits(bits),
            "caption": "A female adult facing the camera, wearing short sleeves.",
            **dict(zip(schema.PEDESTRIAN_BITS, bits.tolist())),
            **{g.name: g.index(v[g.name]) for g in schema.PEDESTRIAN_GROUPS},
            "color": None, "type": None, "brand": None}


def veh(name: str, split: str, **attrs: str) -> dict:
    return {"name": name, "split": split, "domain": "vehicle", "attribute": schema.format_vehicle_phrase(attrs),
            "caption": "This is a " + schema.format_vehicle_phrase(attrs),
            **dict.fromkeys(schema.PEDESTRIAN_BITS), **{g.name: None for g in schema.PEDESTRIAN_GROUPS},
            "color": attrs.get("color"), "type": attrs.get("type"), "brand": attrs.get("brand")}


def labels_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for c in list(schema.PEDESTRIAN_BITS) + [g.name for g in schema.PEDESTRIAN_GROUPS]:
        df[c] = df[c].astype("Int8")
    for c in ("name", "split", "domain", "attribute", "caption", "color", "type", "brand"):
        df[c] = df[c].astype("string")
    return df


def images_frame(rows: list[tuple[str, str, str | None]]) -> pd.DataFrame:
    return pd.DataFrame({
        "name": pd.array([r[0] for r in rows], dtype="string"),
        "path": pd.array([f"rel/{r[1]}/{r[0]}" for r in rows], dtype="string"),
        "split": pd.array([r[1] for r in rows], dtype="string"),
        "domain": pd.array([r[2] for r in rows], dtype="string"),
        "width": np.full(len(rows), 64, np.int32), "height": np.full(len(rows), 160, np.int32)})


def queries_frame(rows: list[tuple[int, str, str, str | None]]) -> pd.DataFrame:
    return pd.DataFrame({"query_id": np.array([r[0] for r in rows], np.int64),
                         "split": pd.array([r[1] for r in rows], dtype="string"),
                         "text": pd.array([r[2] for r in rows], dtype="string"),
                         "image": pd.array([r[3] for r in rows], dtype="string")})


def good_tables() -> dict[str, pd.DataFrame]:
    """A tiny valid prepared data set: 3 train, 2 val, 2 test images with labels and queries."""
    labels = labels_frame([
        ped("000001.jpg", "train"), ped("000002.jpg", "train", gender="male", bag="backpack", upper="stripe"),
        veh("abcdefghij.jpg", "train", color="white", brand="Audi"),
        ped("000003.jpg", "val", orientation="back"), veh("bcdefghijk.jpg", "val", type="Sedan"),
    ])
    images = images_frame([(n, s, d) for n, s, d in zip(labels["name"], labels["split"], labels["domain"])]
                          + [("vehicle_0000001.jpg", "test", None), ("090001.jpg", "test", None)])
    queries = queries_frame([(0, "val", labels["caption"][3], "000003.jpg"),
                             (1, "val", labels["caption"][4], "bcdefghijk.jpg"),
                             (0, "test", TEST_LINES[0], None), (1, "test", TEST_LINES[1], None)])
    return {"images": images, "labels": labels, "queries": queries,
            "quarantine": pd.DataFrame(columns=["file", "line", "raw", "reason"])}


def suites_of(t: dict[str, pd.DataFrame], lines=TEST_LINES, min_examples: int = 0, max_fraction: float = 0.01):
    img, lab, qry = (tables.conform(t[k], k) for k in ("images", "labels", "queries"))
    return [tables.schema_suite(t), tables.images_suite(img, lab), tables.labels_suite(lab, img, 5, 200),
            tables.queries_suite(qry, img, 5, 200), tables.query_order_suite(qry, list(lines)),
            tables.class_counts_suite(lab, min_examples),
            tables.quarantine_suite(t["quarantine"], lab, qry, img, max_fraction)]


def failures(t: dict[str, pd.DataFrame], *only: str, **kw) -> dict[str, int]:
    """``{description: unexpected_count}`` of every failed expectation (of the suites ``only``)."""
    out = run_suites([s for s in suites_of(t, **kw) if not only or s.name in only])
    for o in out:
        assert o.error is None, (o.description, o.error)
    return {o.description: o.unexpected_count for o in out if not o.success}


def find(fails: dict[str, int], text: str) -> int:
    hits = [d for d in fails if text in d]
    assert len(hits) == 1, f"{text!r} matches {hits} in {list(fails)}"
    return fails[hits[0]]


def test_good_tables_pass():
    assert failures(good_tables()) == {}


def test_schema_reports_missing_and_mistyped_columns():
    t = good_tables()
    t["labels"] = t["labels"].drop(columns=["caption"])
    t["images"]["width"] = t["images"]["width"].astype(str)
    fails = failures(t, "schema", "labels")
    assert find(fails, "contract's type") == 2
    assert find(fails, "every label has a caption") == 5  # the missing column reads as all null


def test_name_formats_counted_in_each_table():
    t = good_tables()
    t["labels"].loc[0, "name"] = "12345.jpg"
    t["images"].loc[0, "name"] = "12345.jpg"
    t["labels"].loc[2, "name"] = "ABCDEFGHIJ.jpg"
    t["images"].loc[2, "name"] = "ABCDEFGHIJ.jpg"
    out = run_suites([s for s in suites_of(t) if s.name in ("images_table", "labels")])
    bad = {(o.suite, o.description): o.unexpected_count for o in out if not o.success}
    for suite in ("images_table", "labels"):
        assert bad[(suite, "pedestrian names are 6 digits (000001.jpg)")] == 1
        assert bad[(suite, "train/val vehicle names are 10 lower-case letters (kcbluaihml.jpg)")] == 1


def test_pedestrian_bit_constraints():
    t = good_tables()
    lab = t["labels"]
    lab.loc[0, ["AgeOver60", "Age18-60"]] = 1           # two ages
    lab.loc[1, ["Front", "Side", "Back"]] = 0           # no orientation
    lab.loc[1, ["ShoulderBag", "Backpack"]] = 1         # both bags
    lab.loc[3, ["ShortSleeve", "LongSleeve"]] = 1       # two sleeves
    lab.loc[3, ["UpperLogo", "UpperPlaid"]] = 1         # two upper patterns
    fails = failures(t, "labels")
    assert find(fails, "exactly one age bit") == 1
    assert find(fails, "exactly one orientation bit") == 1
    assert find(fails, "exactly one sleeve bit") == 1
    assert find(fails, "shoulder bag and a backpack") == 1
    # row 1 already has a stripe; row 3 gets two patterns on top of none
    assert find(fails, "at most one upper pattern") == 1
    assert "pedestrian group columns agree with the bits" not in fails  # only judged on valid rows


def test_bits_must_be_binary_and_match_groups():
    t = good_tables()
    t["labels"].loc[0, "Hat"] = 2
    t["labels"].loc[1, "Glasses"] = pd.NA
    t["labels"].loc[3, "gender"] = 1  # says male, bits say female
    fails = failures(t, "labels")
    assert find(fails, "all 21 bits set to 0 or 1") == 2
    assert find(fails, "group columns agree with the bits") == 1


def test_vehicle_values_inside_vocabulary():
    t = good_tables()
    lab = t["labels"]
    lab.loc[2, "color"] = "violet"
    lab.loc[2, "brand"] = "Foobar"
    lab.loc[4, "type"] = "Tank"
    lab.loc[5] = lab.loc[4]
    lab.loc[5, ["name", "type"]] = ["cdefghijkl.jpg", pd.NA]
    t["images"] = pd.concat([t["images"], images_frame([("cdefghijkl.jpg", "val", "vehicle")])], ignore_index=True)
    fails = failures(t, "labels")
    assert find(fails, "vehicle color is in the vocabulary") == 1
    assert find(fails, "vehicle brand is in the vocabulary") == 1
    assert find(fails, "vehicle type is in the vocabulary") == 1
    assert find(fails, "at least one of colour, type, brand") == 1


def test_captions_non_empty_and_sane_length():
    t = good_tables()
    lab = t["labels"]
    lab.loc[0, "caption"] = pd.NA
    lab.loc[1, "caption"] = "      "
    lab.loc[2, "caption"] = "x" * 201
    lab.loc[3, "caption"] = "A man $ with a hat."
    fails = failures(t, "labels")
    assert find(fails, "every label has a caption") == 1
    assert find(fails, "captions are not blank") == 1
    assert find(fails, "captions are 5-200 characters long") == 1
    assert find(fails, "no '$' field separator") == 1


def test_duplicates_and_images_in_two_splits():
    t = good_tables()
    t["images"] = pd.concat([t["images"], t["images"].iloc[[0]],  # duplicate within train
                             images_frame([("000002.jpg", "val", "pedestrian")])], ignore_index=True)
    t["labels"] = pd.concat([t["labels"], t["labels"].iloc[[0]]], ignore_index=True)
    fails = failures(t, "images_table", "labels")
    assert find(fails, "no duplicate image names within a split") == 2
    assert find(fails, "no duplicate label names within a split") == 2
    assert find(fails, "no image name in two splits") == 2  # 000002.jpg in train and val; 000001 stays in train
    assert find(fails, "every train/val image has a kept label line") == 1  # 000002.jpg in val


def test_two_splits_count_is_per_row():
    t = good_tables()
    t["images"] = pd.concat([t["images"], images_frame([("000002.jpg", "val", "pedestrian")])],
                            ignore_index=True)
    assert find(failures(t, "images_table"), "no image name in two splits") == 2


def test_references_between_tables():
    t = good_tables()
    t["images"] = t["images"][t["images"]["name"] != "000001.jpg"].reset_index(drop=True)
    t["queries"].loc[1, "image"] = "zzzzzzzzzz.jpg"
    t["queries"].loc[2, "image"] = "090001.jpg"
    fails = failures(t, "labels", "queries")
    assert find(fails, "every label names an image of its split") == 1
    assert find(fails, "every train/val query names an image of its split") == 1
    assert find(fails, "test queries name no image") == 1


def test_every_test_text_has_its_query_in_order():
    t = good_tables()
    lines = TEST_LINES + ["A male pedestrian seen from the back."]
    fails = failures(t, "test_order", lines=lines)  # the third line has no query
    assert find(fails, "every test_text.txt line has its query") == 1
    q = t["queries"]
    t["queries"] = pd.concat([q.iloc[[0, 1, 3, 2]]], ignore_index=True)  # test rows swapped
    fails = failures(t, "test_order")
    assert find(fails, "test query rows come in file order") == 1
    assert "every test_text.txt line has its query (query_id = line - 1, same text)" not in fails


def test_a_dropped_line_counts_once():
    lines = [f"This is a white Audi Sedan number {i}." for i in range(6)]
    t = good_tables()
    t["queries"] = queries_frame([(i, "test", s, None) for i, s in enumerate(lines) if i != 2])
    t["images"] = t["images"][t["images"]["split"] != "test"]
    fails = failures(t, "test_order", lines=lines)
    assert find(fails, "every test_text.txt line has its query") == 1
    assert "test query rows come in file order" not in fails


def test_changed_text_and_query_past_the_end():
    t = good_tables()
    t["queries"].loc[2, "text"] = "This is a black Audi Sedan."
    t["queries"] = pd.concat([t["queries"], queries_frame([(7, "test", "An extra query.", None)])],
                             ignore_index=True)
    assert find(failures(t, "test_order"), "every test_text.txt line has its query") == 2


def test_class_counts_min_examples():
    counts = tables.class_counts(good_tables()["labels"])
    assert len(counts) == sum(g.n_classes for gs in schema.GROUPS_BY_DOMAIN.values() for g in gs)
    row = counts[(counts["group"] == "gender") & (counts["value"] == "female")]
    assert row["n_train"].item() == 1
    assert counts.loc[(counts["group"] == "brand") & (counts["value"] == "Audi"), "n_train"].item() == 1
    fails = failures(good_tables(), "class_counts", min_examples=1)
    assert find(fails, "at least 1 training examples") == int((counts["n_train"] < 1).sum())


def test_quarantine_fraction_per_file():
    t = good_tables()
    t["quarantine"] = pd.DataFrame({"file": ["train/train_label.txt"] * 2 + ["data/rel/test/test_images/x.jpg"],
                                    "line": [3, 9, 0], "raw": ["a", "b", ""], "reason": ["x", "y", "z"]})
    fails = failures(t, "quarantine", max_fraction=0.2)
    assert find(fails, "no line was quarantined") == 2  # train_label.txt and the image files
    assert find(fails, "of a file's lines quarantined") == 1  # train 2 of 5; images 1 of 8 is below 0.2
