"""The everyday-words reader (pipeline/baseline/reader.py) with a stand-in encoder, and the paraphrase banks."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from pipeline.baseline import paraphrase, paraphrase_heldout
from pipeline.baseline.reader import MEANINGS, Reader, phrases

#: Stand-in for MiniLM: texts of one concept share a direction, every other text gets its own.
CONCEPTS = {"woman": "F", "female": "F", "lady": "F", "backpack": "B", "rucksack": "B",
            "hat": "H", "wearing": "W", "clothes": "W", "red": "R", "crimson": "R"}


def encode(texts):
    out = []
    for t in texts:
        key = CONCEPTS.get(t, t)
        v = np.random.default_rng(zlib.crc32(key.encode())).standard_normal(256)
        out.append(v / np.linalg.norm(v))
    return np.array(out, np.float32)


def reader(**kw):
    return Reader(encode, kw.get("min_cosine", 0.5), kw.get("min_margin", 0.05), vocab=["wearing", "pedestrian"])


def test_phrases_are_content_ngrams_outside_negations():
    assert phrases("A lady with a rucksack") == ["lady", "rucksack", "lady rucksack"]
    assert "hat" not in phrases("a man not wearing a hat, carrying a bag")  # the mapping's negation window
    assert "bag" in phrases("a man not wearing a hat, carrying a bag")
    assert phrases("") == [] and phrases(None) == [] and phrases("?!") == []


def test_reader_states_the_values_of_near_phrases_and_keeps_the_mappings_reading():
    got = reader().read(["a lady with a rucksack", "a lady with a rucksack", "crimson thing"],
                        [{}, {"gender": "male"}, {}], ["pedestrian", "pedestrian", "vehicle"])
    assert got[0] == {"gender": "female", "bag": "backpack"}
    assert got[1] == {"gender": "male", "bag": "backpack"}  # what the mapping read stands
    assert got[2] == {"color": "red"}


def test_reader_reads_only_the_captions_domain_and_nothing_from_filler_or_odd_input():
    r = reader()
    got = r.read(["a lady", "wearing clothes", "", "zzzz qqqq", "a lady"], [{}] * 5,
                 ["vehicle", "pedestrian", "pedestrian", "pedestrian", "unknown"])
    assert got == [{}] * 5
    assert "wearing" in r.filler and "hat" not in r.filler  # filler: training words that mean no value


def test_reader_thresholds():
    assert reader(min_cosine=1.01).read(["a lady"], [{}], ["pedestrian"]) == [{}]
    assert reader(min_margin=2.0).read(["a lady"], [{}], ["pedestrian"]) == [{}]


def test_meanings_name_real_values():
    from pipeline import schema

    for group, value in MEANINGS:
        schema.GROUPS[group].index(value)  # raises on a typo


def test_heldout_bank_has_the_dev_banks_keys_and_none_of_its_phrases():
    for name in ("SUBJECT", "PHRASES", "COLOUR", "TYPE", "BRAND"):
        dev, held = getattr(paraphrase, name), getattr(paraphrase_heldout, name)
        assert set(dev) == set(held), name
        for key in dev:
            assert not set(dev[key]) & set(held[key]), (name, key)
    attrs = {"gender": "female", "age": "under18", "orientation": "back", "bag": "backpack", "sleeve": "short"}
    a = paraphrase.paraphrase("pedestrian", attrs, 3, bank="heldout")
    assert a == paraphrase.paraphrase("pedestrian", attrs, 3, bank="heldout") != paraphrase.paraphrase(
        "pedestrian", attrs, 3)
    with pytest.raises(ValueError, match="bank"):
        paraphrase.paraphrase("pedestrian", attrs, 3, bank="other")


def test_read_exact_fills_what_the_minimal_rules_leave_out_and_leaves_the_template_alone():
    from pipeline.baseline.reader import read_exact
    from pipeline.mapping import CaptionMapping, Rule

    rules = [Rule("she", "gender", "female", 9, 1.0, "mined"), Rule("backpack", "bag", "backpack", 9, 1.0, "mined"),
             Rule("truck", "type", "Truck", 9, 1.0, "mined"),
             Rule("balong heavy truck", "brand", "Balong Heavy Truck", 9, 1.0, "mined")]
    mapping = CaptionMapping(rules)
    captions = ["A female pedestrian with a backpack.", "She is carrying a backpack.", "A Balong Heavy Truck.",
                "a woman", "a woman and a white car", "no hat"]
    got = read_exact(mapping.parse_many(captions), mapping.rules)
    assert (got[0].domain, got[0].attributes) == ("pedestrian", {"gender": "female", "bag": "backpack"})
    assert got[1].attributes == {"gender": "female", "bag": "backpack"}      # the template: as parsed
    assert got[2].attributes == {"brand": "Balong Heavy Truck"}               # "truck" is the mapping's
    assert (got[3].domain, got[3].attributes) == ("pedestrian", {"gender": "female"})  # domain from the meaning
    assert got[4].domain == "unknown" and got[4].attributes == {}             # two domains: undecided
    assert got[5].attributes == {}                                            # negated


def test_thesaurus_is_a_clean_widening_of_the_meanings():
    """Same keys as MEANINGS; every phrase names one value (a shared phrase would be dropped
    silently), is lower case, has 1 to MAX_WORDS content words, no negation and (thesaurus) no
    digit: the reader drops a caption's digits."""
    from pipeline.baseline.reader import LEXICON, MAX_WORDS, _exact_meanings, spelled
    from pipeline.baseline.thesaurus import SYNONYMS
    from pipeline.mapping.words import NEGATIONS, tokens

    assert set(SYNONYMS) == set(MEANINGS)
    assert not [t for texts in SYNONYMS.values() for t in texts if any(w.isdigit() for w in tokens(t))]
    owner: dict[str, tuple[str, str]] = {}
    for key, texts in LEXICON.items():
        for t in texts:
            words = spelled(t)
            assert t == t.lower() and 1 <= len(words.split()) <= MAX_WORDS, (key, t)
            assert not set(tokens(t)) & set(NEGATIONS), (key, t)
            assert owner.setdefault(words, key) == key, (t, key, owner[words])
    assert len(_exact_meanings()) == len(owner) > len(_exact_meanings(thesaurus=False))


def test_read_exact_reads_thesaurus_words_only_when_asked():
    from pipeline.baseline.reader import read_exact
    from pipeline.mapping import CaptionMapping, Rule

    mapping = CaptionMapping([Rule("she", "gender", "female", 9, 1.0, "mined")])
    captions = ["a lady with a rucksack", "a crimson saloon", "a gentleman without a rucksack"]
    got = read_exact(mapping.parse_many(captions), mapping.rules)
    assert (got[0].domain, got[0].attributes) == ("pedestrian", {"gender": "female", "bag": "backpack"})
    assert (got[1].domain, got[1].attributes) == ("vehicle", {"color": "red", "type": "Sedan"})
    assert got[2].attributes == {"gender": "male"}  # the rucksack is negated
    plain = read_exact(mapping.parse_many(captions), mapping.rules, thesaurus=False)
    assert [p.attributes for p in plain] == [{}, {}, {}]
