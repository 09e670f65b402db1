"""Code tests for the attribute schema (the public contract)."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import schema

def test_group_sizes_match_the_release():
    assert [g.n_classes for g in schema.PEDESTRIAN_GROUPS] == [2, 3, 3, 2, 2, 2, 3, 2, 2, 5, 2, 2]
    assert sum(g.n_classes for g in schema.PEDESTRIAN_GROUPS) == 30
    assert len(schema.PEDESTRIAN_BITS) == 21


def test_public_names():
    names = {g.name: g.values for g in schema.PEDESTRIAN_GROUPS}
    assert names["gender"] == ("female", "male")
    assert names["age"] == ("over60", "18to60", "under18")
    assert names["orientation"] == ("front", "side", "back")
    assert names["bag"] == ("shoulder", "backpack", "none")
    assert names["upper"] == ("stripe", "logo", "plaid", "splice", "none")
    for yes_no in ("hat", "glasses", "handbag", "holds_objects", "long_coat", "skirt"):
        assert names[yes_no] == ("yes", "no")


def test_every_bit_belongs_to_exactly_one_group():
    used = [b for g in schema.PEDESTRIAN_GROUPS for b in g.bits if b is not None]
    assert sorted(used) == sorted(schema.PEDESTRIAN_BITS)


def test_vehicle_vocab_matches_release_file(real_track2):
    vocab = json.loads((real_track2 / "vehicle_vocab.json").read_text())
    assert list(schema.VEHICLE_COLORS) == vocab["Colors"]
    assert list(schema.VEHICLE_TYPES) == vocab["Types"]
    assert list(schema.VEHICLE_BRANDS) == vocab["Brands"]


def test_bits_round_trip():
    text = "1,0,1,0,0,1,0,0,0,1,1,0,0,1,0,0,0,0,0,0,0"
    bits = schema.parse_bits(text)
    groups = schema.bits_to_groups(bits)
    values = schema.groups_to_values(groups)
    assert values["gender"] == "female" and values["age"] == "18to60" and values["orientation"] == "side"
    assert values["handbag"] == "yes" and values["bag"] == "shoulder" and values["sleeve"] == "short"
    assert values["upper"] == "none" and values["hat"] == "no"
    assert schema.format_bits(schema.groups_to_bits(values)) == text


def test_every_valid_group_combination_round_trips():
    rng = np.random.default_rng(0)
    for _ in range(200):
        idx = {g.name: int(rng.integers(g.n_classes)) for g in schema.PEDESTRIAN_GROUPS}
        bits = schema.groups_to_bits(idx)
        assert schema.constraint_violations(bits) == []
        assert schema.bits_to_groups(bits) == idx


@pytest.mark.parametrize("text, reason", [
    ("1,0,1", "expected 21"),
    ("1,0,1,0,0,1,0,0,0,1,1,0,0,1,0,0,0,0,0,0,2", "0 or 1"),
])
def test_parse_bits_rejects(text, reason):
    with pytest.raises(ValueError, match=reason):
        schema.parse_bits(text)


@pytest.mark.parametrize("flip, reason", [
    ({"AgeOver60": 1}, "age"),
    ({"Age18-60": 0}, "age"),
    ({"Side": 0}, "orientation"),
    ({"LongSleeve": 1}, "sleeve"),
    ({"Backpack": 1}, "shoulder bag and backpack"),
    ({"UpperLogo": 1, "UpperPlaid": 1}, "upper pattern"),
])
def test_constraints(flip, reason):
    bits = schema.parse_bits("1,0,1,0,0,1,0,0,0,1,1,0,0,1,0,0,0,0,0,0,0")
    for name, v in flip.items():
        bits[schema.BIT_INDEX[name]] = v
    problems = schema.constraint_violations(bits)
    assert any(reason in p for p in problems), problems
    with pytest.raises(ValueError):
        schema.bits_to_groups(bits)


@pytest.mark.parametrize("phrase, expected", [
    ("white Audi.", {"color": "white", "brand": "Audi"}),
    ("Sedan.", {"type": "Sedan"}),
    ("Hongyan.", {"brand": "Hongyan"}),
    ("Balong Heavy Truck.", {"brand": "Balong Heavy Truck"}),
    ("grey Golden Dragon Bus.", {"color": "grey", "brand": "Golden Dragon", "type": "Bus"}),
    ("black Balong Heavy Truck Truck.", {"color": "black", "brand": "Balong Heavy Truck", "type": "Truck"}),
])
def test_vehicle_phrases(phrase, expected):
    assert schema.parse_vehicle_phrase(phrase) == expected
    assert schema.parse_vehicle_phrase(schema.format_vehicle_phrase(expected)) == expected


@pytest.mark.parametrize("phrase", ["magenta Audi.", "white Trabant.", "", "white."])
def test_vehicle_phrase_rejects_unknown(phrase):
    with pytest.raises(ValueError):
        schema.parse_vehicle_phrase(phrase)


def test_every_real_vehicle_label_parses(real_track2):
    for line in (real_track2 / "train_vehicle_label.txt").read_text().splitlines():
        schema.parse_vehicle_phrase(line.split("$")[1])


def test_unknown_group_is_named():
    with pytest.raises(KeyError, match="colour"):
        schema.group("colour")
    with pytest.raises(KeyError, match="purple"):
        schema.group("gender").index("purple")
