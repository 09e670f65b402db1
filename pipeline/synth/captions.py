"""Captions in the language of the real Track-2 release.

Every phrase below was extracted from the real captions (`../shared/track2/val_label_dev.txt`
and `test_captions_sample.txt`: 3,645 pedestrian and 1,819 vehicle captions) by parsing each one
into its slots and counting the forms per slot; `tests/data/test_synth_captions.py` re-parses all of
them against these tables and fails on any form the tables miss or any form they invent. The
forms of a slot occur about equally often in the real text, so they are chosen uniformly here.

What a caption states (which groups, which carried item, which sentence form) is the template's
fact, kept in :mod:`pipeline.caption_template` and shared with the mapping's checks; this module
adds the words. A pedestrian caption is two sentences:

1. ``<subject> <age>, <orientation>[ and <carried item>].``
2. Either ``He/She is wearning <items>.`` (sic; the items joined by "," without a space), or
   ``He/She is in <sleeves>[ with <upper pattern>][ and <skirt>].``

So attributes go unmentioned only in the "wearning" form, and a caption never states a negative
("not an adult" is a paraphrase of under 18, not a negation). The generator renders exactly what
the template says the labels state, plus the paraphrase draws, so a caption can never state
something the labels contradict. :func:`parse_pedestrian_caption` inverts it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from pipeline import caption_template as template
from pipeline.caption_template import BOOTS
from pipeline.schema import format_vehicle_phrase, parse_vehicle_phrase

# --------------------------------------------------------------------------- pedestrian phrase tables

#: Sentence-1 openings; each ends where the age phrase begins.
SUBJECTS: dict[str, tuple[str, ...]] = {
    "male": ("A male pedestrian who is", "A male pedestrian is someone who walks on foot, is",
             "A walking man who is", "A pedestrian who is male is"),
    "female": ("A female pedestrian who is", "A female pedestrian is someone who walks on foot, is",
               "A walking woman who is", "A pedestrian who is female is"),
}

AGES: dict[str, tuple[str, ...]] = {
    "18to60": ("between 18 and 60 years old", "an adult person aged 18-60"),
    "under18": ("less than 18 years old", "age 18 or younger", "not an adult", "a minor"),
    "over60": ("aged 60 or older", "at least 60 years old", "an elderly person over 60 years old",
               "aged over 60"),
}

#: ``{his}`` becomes his/her. Side has no possessive and brings its own "and".
ORIENTATIONS: dict[str, str] = {
    "front": "with {his} body facing the camera",
    "back": "with {his} body back to the camera",
    "side": "and is standing sideways",
}

#: Carried-item phrases per (group, value) of ``template.CARRIED`` (which one is named is the template's).
CARRIED_PHRASES: dict[tuple[str, str], tuple[str, ...]] = {
    ("handbag", "yes"): ("holding a handbag", "carrying a handbag", "with a handbag", "clutching a handbag"),
    ("bag", "shoulder"): ("has a shoulderbag", "has a bag over the shoulder", "with a shoulderbag",
                          "is carrying a shoulder bag"),
    ("bag", "backpack"): ("carrying a backpack", "with a backpack"),
    ("holds_objects", "yes"): ("holds objects in front",),
}

#: Worn-item phrases per (group, value) of ``template.WORN`` (boots: hidden truth the renderer draws).
WORN_PHRASES: dict[tuple[str, str], tuple[str, ...]] = {
    ("hat", "yes"): ("a hat",),
    ("glasses", "yes"): ("glasses",),
    ("long_coat", "yes"): ("a longcoat", "a coat that is long"),
    (BOOTS, "yes"): ("boots",),
}

SLEEVES: dict[str, tuple[str, ...]] = {
    "short": ("a shirt with short sleeves", "a short sleeve shirt", "a tee shirt with short sleeves"),
    "long": ("a shirt with long sleeves", "a long sleeve shirt", "a tee shirt with long sleeves"),
}

#: The real text never says "a stripe on the upper".
UPPERS: dict[str, tuple[str, ...]] = {
    "stripe": ("an upper stripe",),
    "logo": ("an upper logo", "a logo on the upper"),
    "plaid": ("an upper plaid", "a plaid on the upper"),
    "splice": ("an upper splice", "a splice on the upper"),
}

SKIRTS: tuple[str, ...] = ("in a skirt or dress", "wearing skirt or dress")

WEARING_VERB = "wearning"  # sic: the real captions' spelling

# --------------------------------------------------------------------------- vehicle phrase tables

#: Vehicle openings; ``{a}`` is "a" or "an". The two are equally frequent in the real text.
VEHICLE_OPENINGS: tuple[str, ...] = ("This is {a}", "{A}")


@dataclass(frozen=True)
class Caption:
    """A caption and what it states: group name -> value (plus ``"boots": "yes"``)."""

    text: str
    stated: dict[str, str]


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))] if len(options) > 1 else options[0]


def pedestrian_caption(attrs: dict[str, str], boots: bool, rng: np.random.Generator) -> Caption:
    """The caption of a pedestrian with group values ``attrs`` (all 12 groups) and ``boots``.

    The template decides what is stated; the words are drawn here, slot by slot in sentence order
    (the draw order is part of the seeded release's bytes).
    """
    stated = template.pedestrian_stated(dict(attrs, **{BOOTS: "yes" if boots else "no"}))
    his, he = ("his", "He") if stated["gender"] == "male" else ("her", "She")
    first = (f"{_pick(SUBJECTS[stated['gender']], rng)} {_pick(AGES[stated['age']], rng)}, "
             f"{ORIENTATIONS[stated['orientation']].format(his=his)}")
    carried = template.carried_item(stated)
    if carried is not None:
        first += f" and {_pick(CARRIED_PHRASES[carried], rng)}"
    worn = template.worn_items(stated)
    if worn:
        second = f"{he} is {WEARING_VERB} " + ",".join(_pick(WORN_PHRASES[item], rng) for item in worn)
    else:
        second = f"{he} is in {_pick(SLEEVES[stated['sleeve']], rng)}"
        if "upper" in stated:
            second += f" with {_pick(UPPERS[stated['upper']], rng)}"
        if "skirt" in stated:
            second += f" and {_pick(SKIRTS, rng)}"
    return Caption(f"{first}. {second}.", stated)


def article(word: str) -> str:
    """'an' before a vowel letter, else 'a' - the real text's rule ("an orange", "a SUV")."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def vehicle_caption(attrs: dict[str, str], rng: np.random.Generator) -> Caption:
    """The caption for a vehicle label ``attrs`` (any of color/brand/type), e.g. "A grey Chery Sedan."."""
    phrase = format_vehicle_phrase(attrs)
    a = article(phrase)
    opening = _pick(VEHICLE_OPENINGS, rng).format(a=a, A=a.capitalize())
    return Caption(f"{opening} {phrase}", template.vehicle_stated(attrs))


# --------------------------------------------------------------------------- parsing (the inverse)

def _alt(phrases) -> str:
    return "|".join(re.escape(p) for p in sorted(set(phrases), key=len, reverse=True))


def _lookup(table: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {p: value for value, phrases in table.items() for p in phrases}


_SUBJECT = _lookup(SUBJECTS)
_AGE = _lookup(AGES)
_ORIENT = {p.format(his=his): (o, his) for o, p in ORIENTATIONS.items() for his in ("his", "her")}
_CARRIED = {p: item for item, ps in CARRIED_PHRASES.items() for p in ps}
_WORN = {p: item for item, ps in WORN_PHRASES.items() for p in ps}
_SLEEVE = _lookup(SLEEVES)
_UPPER = _lookup(UPPERS)

_PEDESTRIAN_RE = re.compile(
    rf"(?P<subject>{_alt(_SUBJECT)}) (?P<age>{_alt(_AGE)}), (?P<orientation>{_alt(_ORIENT)})"
    rf"(?: and (?P<carried>{_alt(_CARRIED)}))?\. (?P<pronoun>He|She) is "
    rf"(?:{WEARING_VERB} (?P<worn>(?:{_alt(_WORN)})(?:,(?:{_alt(_WORN)}))*)"
    rf"|in (?P<sleeve>{_alt(_SLEEVE)})(?: with (?P<upper>{_alt(_UPPER)}))?"
    rf"(?: and (?P<skirt>{_alt(SKIRTS)}))?)\."
)
_VEHICLE_RE = re.compile(r"(?:This is (?:a|an)|A|An) (?P<phrase>.+\.)")


def parse_pedestrian_caption(text: str) -> dict[str, str]:
    """What a caption in the real template states, e.g. ``{"gender": "male", ...}``.

    Raises ``ValueError`` naming the caption when it is outside the phrase inventory or its
    pronouns disagree with its gender.
    """
    m = _PEDESTRIAN_RE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"caption outside the phrase inventory: {text.strip()!r}")
    gender = _SUBJECT[m["subject"]]
    orientation, his = _ORIENT[m["orientation"]]
    expected = ("his", "He") if gender == "male" else ("her", "She")
    if m["pronoun"] != expected[1] or (orientation != "side" and his != expected[0]):
        raise ValueError(f"pronouns disagree with the gender {gender!r}: {text.strip()!r}")
    stated = {"gender": gender, "age": _AGE[m["age"]], "orientation": orientation}
    if m["carried"]:
        group, value = _CARRIED[m["carried"]]
        stated[group] = value
    if m["worn"]:
        for phrase in _split_worn(m["worn"]):
            group, value = _WORN[phrase]
            stated[group] = value
    else:
        stated["sleeve"] = _SLEEVE[m["sleeve"]]
        if m["upper"]:
            stated["upper"] = _UPPER[m["upper"]]
        if m["skirt"]:
            stated["skirt"] = "yes"
    return stated


def _split_worn(worn: str) -> list[str]:
    # No worn phrase contains ",", so a plain split is exact.
    return worn.split(",")


def parse_vehicle_caption(text: str) -> dict[str, str]:
    """``"This is a grey Chery Sedan."`` -> ``{"color": "grey", "brand": "Chery", "type": "Sedan"}``.

    Raises ``ValueError`` on an unknown opening, a wrong article or a word outside the vocabulary.
    """
    m = _VEHICLE_RE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a vehicle caption: {text.strip()!r}")
    phrase = m["phrase"]
    if text.strip()[: -len(phrase)].split()[-1].lower() != article(phrase):
        raise ValueError(f"wrong article in {text.strip()!r}")
    return parse_vehicle_phrase(phrase)


def phrase_inventory() -> dict[str, tuple[str, ...]]:
    """Every phrase form per slot, for documentation and the coverage test."""
    return {
        "subject": tuple(_SUBJECT), "age": tuple(_AGE), "orientation": tuple(_ORIENT),
        "carried": tuple(_CARRIED), "worn": tuple(_WORN), "sleeve": tuple(_SLEEVE),
        "upper": tuple(_UPPER), "skirt": SKIRTS,
    }


def parse_pedestrian_slots(text: str) -> dict[str, str]:
    """The raw phrase in each slot of a caption (for the coverage test); raises like the parser."""
    m = _PEDESTRIAN_RE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"caption outside the phrase inventory: {text.strip()!r}")
    slots = {k: v for k, v in m.groupdict().items() if v and k != "pronoun"}
    if "worn" in slots:
        slots["worn"] = _split_worn(slots["worn"])
    return slots
