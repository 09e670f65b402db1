"""The caption generator speaks the real Track-2 caption language: same forms, same rules, same mix.

These tests read the real captions in `../shared/track2/` (fixture `real_track2`, which fails
loudly when the folder is missing).
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline import caption_template as T
from pipeline.schema import VEHICLE_COLORS, bits_to_groups, groups_to_values, parse_bits, parse_vehicle_phrase
from pipeline.synth import captions as C
from pipeline.synth.release import sample_pedestrian


def _label_rows(path: Path) -> list[tuple[str, str, str]]:
    return [tuple(line.split("$")) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _is_pedestrian_field(field: str) -> bool:
    return "," in field


def _is_vehicle(text: str) -> bool:
    try:
        C.parse_vehicle_caption(text)
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def real_pedestrian_captions(real_track2) -> list[str]:
    val = [c for _, a, c in _label_rows(real_track2 / "val_label_dev.txt") if _is_pedestrian_field(a)]
    test = [line for line in (real_track2 / "test_captions_sample.txt").read_text().splitlines()
            if line and not _is_vehicle(line)]
    assert len(val) > 3000 and len(test) > 300
    return val + test


@pytest.fixture(scope="module")
def generated() -> list[C.Caption]:
    rng = np.random.default_rng(7)
    return [C.pedestrian_caption(*sample_pedestrian(rng), rng) for _ in range(20_000)]


def _slot_forms(captions) -> dict[str, collections.Counter]:
    used: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for text in captions:
        for slot, phrase in C.parse_pedestrian_slots(text).items():
            for p in phrase if isinstance(phrase, list) else [phrase]:
                used[slot][p] += 1
    return used


def test_every_real_pedestrian_caption_parses(real_pedestrian_captions):
    bad = []
    for text in real_pedestrian_captions:
        try:
            C.parse_pedestrian_caption(text)
        except ValueError as e:
            bad.append(str(e))
    assert not bad, f"{len(bad)} real captions fall outside the phrase inventory, e.g. {bad[:3]}"


def test_inventory_is_exactly_the_real_phrase_forms(real_pedestrian_captions):
    used = _slot_forms(real_pedestrian_captions)
    for slot, forms in C.phrase_inventory().items():
        invented = set(forms) - set(used[slot])
        assert not invented, f"slot {slot!r}: forms never seen in the real captions: {sorted(invented)}"


def test_mention_rules_reproduce_every_real_labelled_caption(real_track2):
    """What a real caption states is exactly what the generator states for the same labels."""
    rng = np.random.default_rng(0)
    n = 0
    for name, field, text in _label_rows(real_track2 / "val_label_dev.txt"):
        if not _is_pedestrian_field(field):
            continue
        attrs = groups_to_values(bits_to_groups(parse_bits(field)))
        boots = "boots" in text  # hidden truth: the real captions name boots whenever worn
        ours = C.pedestrian_caption(attrs, boots, rng).stated
        assert C.parse_pedestrian_caption(text) == ours, f"{name}: {text}"
        n += 1
    assert n == 3290


def test_generated_captions_round_trip_and_agree_with_labels(generated):
    rng = np.random.default_rng(1)
    for _ in range(2000):
        attrs, boots = sample_pedestrian(rng)
        cap = C.pedestrian_caption(attrs, boots, rng)
        assert C.parse_pedestrian_caption(cap.text) == cap.stated
        truth = dict(attrs, boots="yes" if boots else "no")
        assert all(truth[k] == v for k, v in cap.stated.items()), cap


def test_paraphrase_mix_matches_the_real_text(real_pedestrian_captions, generated):
    """Each form's share within its meaning agrees with the real share within 4 standard errors.

    4, not 2 or 3: about 40 shares are compared, and the real text itself strays from uniform by
    about 3 standard errors once (the three long-sleeve forms: 290 / 347 / 366).
    """
    real = _slot_forms(real_pedestrian_captions)
    ours = _slot_forms(c.text for c in generated)
    checked = 0
    for slot, counts in real.items():
        # Shares within one meaning (e.g. the forms of "under 18"), not across meanings.
        meaning = _meaning_of(slot)
        by_meaning: dict[str, list[str]] = collections.defaultdict(list)
        for form in counts:
            by_meaning[meaning(form)].append(form)
        for forms in by_meaning.values():
            n_real, n_ours = sum(real[slot][f] for f in forms), sum(ours[slot][f] for f in forms)
            if n_real < 100 or len(forms) < 2:
                continue
            for f in forms:
                share_real, share_ours = real[slot][f] / n_real, ours[slot][f] / max(n_ours, 1)
                p = (real[slot][f] + ours[slot][f]) / (n_real + n_ours)
                tolerance = 4 * np.sqrt(p * (1 - p) * (1 / n_real + 1 / max(n_ours, 1)))
                assert abs(share_real - share_ours) < tolerance, (slot, f, share_real, share_ours, tolerance)
                checked += 1
    assert checked >= 15


def _meaning_of(slot: str):
    tables = {"subject": C._SUBJECT, "age": C._AGE, "carried": C._CARRIED, "worn": C._WORN,
              "sleeve": C._SLEEVE, "upper": C._UPPER, "orientation": C._ORIENT}
    table = tables.get(slot)
    return (lambda form: str(table[form])) if table else (lambda form: slot)


def test_captions_never_state_a_negative(generated):
    for cap in generated:
        words = cap.text.replace("not an adult", "").lower().split()
        assert not {"not", "no", "without", "never"} & set(words), cap.text


def test_phrase_tables_speak_the_template():
    """Phrases exist for exactly the template's carried and worn items, and only the clothing
    sentence has a sleeve word (how the mapping's oracle tells the two forms apart)."""
    assert list(C.CARRIED_PHRASES) == list(T.CARRIED) and list(C.WORN_PHRASES) == list(T.WORN)
    assert set(C.SLEEVES) == {v for g, v in T.statable_values() if g == "sleeve"}
    assert {"upper": set(C.UPPERS), "skirt": {"yes"}} == {
        g: {v for h, v in T.statable_values() if h == g} for g in T.CLOTHING if g != "sleeve"}
    words = lambda phrase: set(re.findall(r"[a-z0-9]+", phrase.lower()))  # noqa: E731
    assert all(T.SLEEVE_WORDS & words(p) for forms in C.SLEEVES.values() for p in forms)
    inventory = C.phrase_inventory()
    wearing_slots = ("subject", "age", "orientation", "carried", "worn")
    wearing_form = [C.WEARING_VERB, *(p for slot in wearing_slots for p in inventory[slot])]
    assert not [p for p in wearing_form if T.SLEEVE_WORDS & words(p)]


def test_carried_item_priority_and_worn_list_order():
    rng = np.random.default_rng(0)
    attrs = dict(gender="female", age="18to60", orientation="front", hat="yes", glasses="yes",
                 handbag="yes", bag="shoulder", holds_objects="yes", sleeve="long", upper="stripe",
                 long_coat="yes", skirt="yes")
    cap = C.pedestrian_caption(attrs, True, rng)
    assert cap.stated == {"gender": "female", "age": "18to60", "orientation": "front", "handbag": "yes",
                          "hat": "yes", "glasses": "yes", "long_coat": "yes", "boots": "yes"}
    assert cap.text.startswith("A ") and " She is wearning a hat,glasses," in cap.text
    assert cap.text.endswith(",boots.")


def test_real_vehicle_captions_parse_with_the_right_article(real_track2):
    rows = _label_rows(real_track2 / "train_vehicle_label.txt")
    rows += [r for r in _label_rows(real_track2 / "val_label_dev.txt") if not _is_pedestrian_field(r[1])]
    for name, field, text in rows:
        assert C.parse_vehicle_caption(text) == parse_vehicle_phrase(field), text
    sample = (real_track2 / "test_captions_sample.txt").read_text().splitlines()
    tests = [line for line in sample if _is_vehicle(line)]
    full = [C.parse_vehicle_caption(t) for t in tests]
    assert len(full) >= 150 and all(set(p) == {"color", "brand", "type"} for p in full)


def test_vehicle_caption_forms_and_articles():
    rng = np.random.default_rng(0)
    texts = {C.vehicle_caption({"color": "orange", "brand": "Audi"}, rng).text for _ in range(50)}
    assert texts == {"This is an orange Audi.", "An orange Audi."}
    texts = {C.vehicle_caption({"type": "SUV"}, rng).text for _ in range(50)}
    assert texts == {"This is a SUV.", "A SUV."}  # the real text's rule: "a" before "SUV"
    full = C.vehicle_caption({"color": "grey", "brand": "Balong Heavy Truck", "type": "Truck"}, rng)
    assert full.text.endswith("grey Balong Heavy Truck Truck.")
    assert C.parse_vehicle_caption(full.text) == full.stated
    with pytest.raises(ValueError, match="article"):
        C.parse_vehicle_caption("This is a orange Audi.")
    assert all(C.article(c) == ("an" if c == "orange" else "a") for c in VEHICLE_COLORS)
