"""Mapping: mining on hand-made pairs, parsing behaviour, files, overrides, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import caption_template, schema
from pipeline.config import MappingParams, load_params
from pipeline.formats import label_frame, parse_label_line
from pipeline.mapping import (CaptionMapping, ParsedCaption, Rule, apply_overrides, build_mapping, evaluate,
                              load_mapping, mine_rules, pairs_from_frame, read_caption_lines, read_rules,
                              save_mapping, stated)
from pipeline.mapping.stage import MappingIO, run

ROOT = Path(__file__).resolve().parents[2]

AGES = {"over60": "is over 60 years old", "18to60": "is an adult aged 18-60", "under18": "is not an adult"}


def ped_line(i: int, female: bool, age: str, hat: bool, rng) -> str:
    groups = {g.name: g.values[-1] if g.name not in ("age", "orientation", "sleeve") else g.values[0]
              for g in schema.PEDESTRIAN_GROUPS}
    groups.update(gender="female" if female else "male", age=age, hat="yes" if hat else "no",
                  bag="none", upper="none")
    bits = schema.format_bits(schema.groups_to_bits(groups))
    who = "woman" if female else "man"
    pron = "She" if female else "He"
    second = f"{pron} is wearing a hat." if hat and rng.random() < 0.8 else f"{pron} is in a short sleeve shirt."
    return f"{i:06d}.jpg${bits}$A walking {who} who {AGES[age]}, with the body facing the camera. {second}"


def veh_lines(rng) -> list[str]:
    lines, i = [], 0
    for _ in range(8):
        for color in ("white", "red", "grey"):
            for brand in ("Audi", "Golden Dragon", "Balong Heavy Truck", "Kia"):
                i += 1
                art = "an" if brand[0] in "AEIOU" else "a"
                if brand == "Balong Heavy Truck" and rng.random() < 0.5:
                    lines.append(f"v{i:09d}.jpg$Balong Heavy Truck.$This is a Balong Heavy Truck.")
                else:
                    lines.append(f"v{i:09d}.jpg${color} {brand}.$This is a {color} {brand}.")
        for vtype in ("Sedan", "Truck", "Bus"):
            i += 1
            lines.append(f"v{i:09d}.jpg${vtype}.$A {vtype}.")
    return lines


@pytest.fixture(scope="module")
def params():
    """The repository's params (the mapping section's knobs as the stage runs them)."""
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="module")
def config(params) -> MappingParams:
    return params.mapping


@pytest.fixture(scope="module")
def train_frame():
    rng = np.random.default_rng(0)
    lines = [ped_line(i, bool(rng.random() < 0.5), str(rng.choice(list(AGES), p=[0.2, 0.5, 0.3])),
                      bool(rng.random() < 0.3), rng) for i in range(400)] + veh_lines(rng)
    recs = [parse_label_line(ln) for ln in lines]
    assert not any(isinstance(r, str) for r in recs), [r for r in recs if isinstance(r, str)]
    return label_frame(recs, "train")


@pytest.fixture(scope="module")
def mined(train_frame, config) -> CaptionMapping:
    return CaptionMapping(mine_rules(pairs_from_frame(train_frame), config))


# --------------------------------------------------------------------------- mining

def test_mined_rules_are_precise_and_cover_the_language(mined, config):
    by = {(r.group, r.value): r.phrase for r in mined.rules}
    assert by[("brand", "Golden Dragon")] == "golden dragon"
    assert by[("brand", "Balong Heavy Truck")] == "balong heavy truck"  # swallows its type word
    assert by[("type", "Truck")] == "truck"
    assert by[("age", "under18")] == "not an adult"
    assert all(r.precision == 1.0 and r.support >= config.min_support for r in mined.rules)


def test_no_rule_states_a_negative(mined):
    values = {(r.group, r.value) for r in mined.rules}
    assert ("gender", "male") in values  # the template always states gender
    assert not [v for v in values if v[1] in ("no", "none")]  # "no hat" is never stated
    assert values <= set(caption_template.statable_values())


def test_negated_adult_is_not_adult(mined):
    p = mined.parse("A walking man who is not an adult, with the body facing the camera.")
    assert p.attributes["age"] == "under18"
    assert mined.parse("A walking man who is an adult aged 18-60.").attributes["age"] == "18to60"


def test_multiword_brands_and_type_word_inside_brand(mined):
    assert mined.parse("This is a Balong Heavy Truck.").to_dict() == {
        "text": "This is a Balong Heavy Truck.", "domain": "vehicle", "attributes": {"brand": "Balong Heavy Truck"}}
    p = mined.parse("This is a grey Golden Dragon Bus.")
    assert p.attributes == {"color": "grey", "type": "Bus", "brand": "Golden Dragon"}
    assert mined.parse("A red Balong Heavy Truck Truck.").attributes["type"] == "Truck"


def test_mined_mapping_on_held_out_pairs(train_frame, mined):
    rng = np.random.default_rng(1)
    lines = [ped_line(i, bool(rng.random() < 0.5), str(rng.choice(list(AGES))), bool(rng.random() < 0.3), rng)
             for i in range(200)]
    frame = label_frame([parse_label_line(ln) for ln in lines], "val")
    report = evaluate(mined, pairs_from_frame(frame))
    assert report["precision"] == 1.0
    # (orientation and sleeve never vary in this toy language, so nothing can be learned for them)
    assert [report["groups"][g]["stated_recall"] for g in ("gender", "age", "hat")] == [1.0, 1.0, 1.0]
    assert report["groups"]["hat"]["recall"] < 1.0  # hats under "short sleeve shirt" are unstated


# --------------------------------------------------------------------------- parsing

RULES = [Rule("woman", "gender", "female"), Rule("man", "gender", "male"), Rule("hat", "hat", "yes"),
         Rule("not an adult", "age", "under18"), Rule("adult", "age", "18to60"),
         Rule("white", "color", "white"), Rule("sedan", "type", "Sedan"), Rule("audi", "brand", "Audi")]


def test_negation_guard_and_explicit_negated_rule():
    m = CaptionMapping(RULES)
    assert m.parse("A man who is not an adult.").attributes == {"gender": "male", "age": "under18"}
    assert m.parse("A man who is an adult.").attributes == {"gender": "male", "age": "18to60"}
    assert m.parse("A woman, not wearing a hat.").attributes == {"gender": "female"}
    assert m.parse("A woman without a hat. Adult.").attributes == {"gender": "female", "age": "18to60"}


def test_unknown_text_and_conflicts_never_crash():
    m = CaptionMapping(RULES)
    for text in ("", "   ", "hello world", "\x00\ud800 weird", "$$$", None, 42):
        p = m.parse(text)
        assert isinstance(p, ParsedCaption) and p.domain == "unknown" and p.attributes == {}
    assert m.parse("A man and a woman with a hat.").attributes == {"hat": "yes"}  # gender contradicts itself
    assert m.parse("A white man with a hat.").domain == "pedestrian"  # 2 pedestrian groups beat 1 vehicle
    assert m.parse("A white hat.").domain == "unknown"  # one each: undecidable
    assert CaptionMapping([]).parse("A man.").domain == "unknown"


def test_parse_is_case_and_punctuation_insensitive_and_word_bounded():
    m = CaptionMapping(RULES)
    assert m.parse("THIS IS A WHITE AUDI SEDAN.").attributes == {"color": "white", "type": "Sedan", "brand": "Audi"}
    assert m.parse("A manly hatter, germanic.").attributes == {}  # no match inside words
    assert m.parse("A white Audi").to_dict()["attributes"] == {"color": "white", "brand": "Audi"}


def test_parse_many_keeps_order_and_equals_parse():
    m = CaptionMapping(RULES)
    texts = ["A white Audi.", "", "A man with a hat.", "nothing", "A woman."] * 3
    assert m.parse_many(texts) == [m.parse(t) for t in texts]
    assert [p.text for p in m.parse_many(iter(texts))] == texts


def test_to_dict_is_json():
    d = CaptionMapping(RULES).parse("A woman with a hat.").to_dict()
    assert json.loads(json.dumps(d)) == {"text": "A woman with a hat.", "domain": "pedestrian",
                                         "attributes": {"gender": "female", "hat": "yes"}}


# --------------------------------------------------------------------------- files and overrides

def test_mapping_file_round_trip_and_is_one_rule_per_line(tmp_path, mined):
    path = save_mapping(mined.rules, tmp_path / "m.yaml", meta={"mined_from": "test"})
    text = path.read_text()
    assert sum(line.startswith("- {phrase:") for line in text.splitlines()) == len(mined.rules)
    again = load_mapping(path)
    key = lambda r: (r.phrase, r.group, r.value, r.support, r.precision, r.source)  # noqa: E731
    assert sorted(map(key, again.rules)) == sorted(map(key, mined.rules))
    assert again.parse("This is a white Audi.") == mined.parse("This is a white Audi.")


@pytest.mark.parametrize("bad, message", [
    ("rules:\n- {phrase: x, group: colour, value: white}\n", "unknown attribute group 'colour'"),
    ("rules:\n- {phrase: x, group: color, value: beige}\n", "unknown value 'beige'"),
    ("rules:\n- {phrase: '...', group: color, value: white}\n", "empty phrase"),
    ("rules:\n- {phrase: x, group: color}\n", "needs phrase, group and value"),
    ("- {phrase: x}\n", "'rules' list"),
])
def test_bad_mapping_files_fail_naming_the_problem(tmp_path, bad, message):
    path = tmp_path / "m.yaml"
    path.write_text(bad)
    with pytest.raises(ValueError, match=message):
        read_rules(path)


def test_overrides_add_drop_and_replace(tmp_path):
    path = tmp_path / "o.yaml"
    path.write_text("add:\n  - {phrase: elderly, group: age, value: over60}\n"
                    "  - {phrase: hat, group: hat, value: yes}\n"  # unquoted: YAML reads True
                    "drop:\n  - {phrase: sedan}\n")
    merged = apply_overrides(RULES, path)
    keyed = {(r.phrase, r.group): r for r in merged}
    assert ("sedan", "type") not in keyed
    assert keyed[("elderly", "age")].source == "override"
    assert keyed[("hat", "hat")].source == "override" and keyed[("hat", "hat")].value == "yes"
    assert len([r for r in merged if r.phrase == "hat"]) == 1
    path.write_text("add:\n  - {phrase: x, group: age, value: old}\n")
    with pytest.raises(ValueError, match="unknown value 'old'"):
        apply_overrides(RULES, path)


def test_overrides_are_measured_on_training(train_frame, config, tmp_path):
    path = tmp_path / "o.yaml"
    path.write_text("add:\n  - {phrase: walking woman, group: gender, value: female}\n")
    rules = build_mapping(train_frame, config, path)
    added = [r for r in rules if r.source == "override"]
    assert len(added) == 1 and added[0].precision == 1.0
    assert added[0].support == int((train_frame["gender"] == 0).sum())


def test_repo_overrides_file_is_valid():
    assert apply_overrides(RULES, ROOT / "mapping_overrides.yaml") is not None


# --------------------------------------------------------------------------- stated attributes

def test_stated_follows_the_template():
    values = {g.name: g.values[-1] for g in schema.PEDESTRIAN_GROUPS}
    values.update(gender="female", age="18to60", orientation="side", sleeve="short", hat="yes",
                  handbag="yes", bag="backpack", upper="logo", skirt="yes")
    clothing = stated("pedestrian", "A woman ... She is in a short sleeve shirt with a logo.", values)
    assert clothing == {"gender": "female", "age": "18to60", "orientation": "side", "handbag": "yes",
                        "sleeve": "short", "upper": "logo", "skirt": "yes"}  # handbag outranks backpack
    wearing = stated("pedestrian", "A woman ... She is wearning a hat.", values)
    assert wearing == {"gender": "female", "age": "18to60", "orientation": "side", "handbag": "yes", "hat": "yes"}
    assert stated("vehicle", "A white Audi.", {"color": "white", "brand": "Audi", "type": None}) == {
        "color": "white", "brand": "Audi"}


def test_oracle_and_generator_share_the_template():
    """The generator picks the form by the worn items (boots too, which no label has); the oracle
    reads it off the text (the sleeve word). They agree on every labelled group."""
    from pipeline.synth.captions import pedestrian_caption

    rng = np.random.default_rng(0)
    for _ in range(1000):
        values = {g.name: g.values[int(rng.integers(g.n_classes))] for g in schema.PEDESTRIAN_GROUPS}
        cap = pedestrian_caption(values, bool(rng.random() < 0.3), rng)
        labelled = {g: v for g, v in cap.stated.items() if g != caption_template.BOOTS}
        assert stated("pedestrian", cap.text, values) == labelled, cap.text
        assert set(labelled.items()) <= set(caption_template.statable_values())


# --------------------------------------------------------------------------- the stage

def test_stage_run_writes_the_mapping_and_the_report(train_frame, params, tmp_path):
    rng = np.random.default_rng(2)
    val = label_frame([parse_label_line(ped_line(i, bool(rng.random() < 0.5), str(rng.choice(list(AGES))),
                                                 bool(rng.random() < 0.3), rng)) for i in range(50)], "val")
    labels = tmp_path / "prepared" / "labels.parquet"
    labels.parent.mkdir()
    pd.concat([train_frame, val], ignore_index=True).to_parquet(labels)
    io = MappingIO(labels=labels, overrides=ROOT / "mapping_overrides.yaml",
                   mapping=tmp_path / "mapping.yaml", report=tmp_path / "reports" / "mapping.json",
                   plot=tmp_path / "reports" / "mapping.png")
    report = run(params, io)
    assert json.loads(io.report.read_text()) == report
    assert report["split"] == "val" and report["captions"] == 50
    assert report["train_captions"] == len(train_frame)
    assert report["precision"] == 1.0 and len(load_mapping(io.mapping)) == report["rules"] > 0
    assert io.plot.stat().st_size > 0 and set(io.artifacts()) >= {io.mapping, io.report, io.plot}
    with pytest.raises(FileNotFoundError, match="run the ingest stage first"):
        run(params, MappingIO(tmp_path / "none.parquet", None, io.mapping, io.report, io.plot))


# --------------------------------------------------------------------------- CLI

def test_read_caption_lines_detects_the_format(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("A white Audi.\n\nA man.\n")
    assert read_caption_lines(plain) == ["A white Audi.", "", "A man."]
    labelled = tmp_path / "labels.txt"
    labelled.write_bytes(b"\xef\xbb\xbfa.jpg$white Audi.$A white Audi.\r\nb.jpg$Sedan.$A Sedan.\r\n")
    assert read_caption_lines(labelled) == ["A white Audi.", "A Sedan."]


def test_cli_mine_then_parse(tmp_path, train_frame):
    labels = tmp_path / "labels.parquet"
    train_frame.to_parquet(labels)
    out = tmp_path / "mapping.yaml"
    run = lambda *a: subprocess.run([sys.executable, "-m", "pipeline", *a], capture_output=True, text=True,
                                    cwd=ROOT)
    r = run("mine-mapping", "--labels", str(labels), "--out", str(out))
    assert r.returncode == 0, r.stderr
    caps = tmp_path / "caps.txt"
    caps.write_text("This is a white Golden Dragon Bus.\nnothing here\n")
    r = run("parse", "--mapping", str(out), "--captions", str(caps))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows == [{"text": "This is a white Golden Dragon Bus.", "domain": "vehicle",
                     "attributes": {"color": "white", "type": "Bus", "brand": "Golden Dragon"}},
                    {"text": "nothing here", "domain": "unknown", "attributes": {}}]
    r = run("parse", "--mapping", str(tmp_path / "none.yaml"), "--captions", str(caps))
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    r = run("mine-mapping", "--labels", str(tmp_path / "none.txt"), "--out", str(out))
    assert r.returncode == 2 and "labels file not found" in r.stderr


def test_parsed_attributes_are_independent_copies():
    m = CaptionMapping(RULES)
    first = m.parse("A white Audi.")
    first.attributes["color"] = "black"  # a caller scribbling on its result
    assert m.parse("A white Audi.").attributes == {"color": "white", "brand": "Audi"}
