"""Captions in everyday words that state known attributes: the paraphrase set of tests and benchmark.

The synthetic captions (and the real ones) follow one template language, which the mapping reads
perfectly. Users do not: they write "a lady in a red dress" or "grey VW saloon". This module
rewrites what a caption states (``{group: value}``) in words chosen by hand - synonyms, informal
phrasing, other word orders - that the template never uses, so the rewritten caption states the
same attributes and has the same relevant images (its ground truth) as the caption it replaces.

:data:`PHRASES` is the hand-written phrase bank, one list per ``(group, value)``;
:func:`paraphrase` composes a caption from it with a seeded choice; :data:`HANDWRITTEN` is a
short list of captions written whole, with the attributes they state, for the tests.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Mapping

import numpy as np

#: The phrase banks: ``dev`` (below; the reader's thresholds were chosen on it) and ``heldout``,
#: written separately without seeing the reader, for checking those choices on unseen words.
BANKS = {"dev": __name__, "heldout": "pipeline.baseline.paraphrase_heldout"}

#: The person, by gender and age (the subject every pedestrian caption has).
SUBJECT: dict[tuple[str, str], list[str]] = {
    ("female", "18to60"): ["woman", "lady", "gal", "grown woman"],
    ("male", "18to60"): ["man", "guy", "gentleman", "bloke", "grown man"],
    ("female", "under18"): ["girl", "teenage girl", "young girl", "schoolgirl"],
    ("male", "under18"): ["boy", "teenage boy", "lad", "schoolboy"],
    ("female", "over60"): ["old lady", "elderly woman", "grandma", "senior lady"],
    ("male", "over60"): ["old man", "elderly gentleman", "grandpa", "senior gent"],
}

#: Everything else a pedestrian caption can state, as phrases that follow the subject.
PHRASES: dict[tuple[str, str], list[str]] = {
    ("orientation", "front"): ["facing us", "coming toward the camera", "seen from the front", "looking our way"],
    ("orientation", "side"): ["seen from the side", "in profile", "walking across the frame", "turned sideways"],
    ("orientation", "back"): ["walking away from us", "seen from behind", "with back turned", "heading away"],
    ("handbag", "yes"): ["carrying a purse", "holding a clutch purse", "with a purse in hand"],
    ("bag", "shoulder"): ["with a satchel slung over one shoulder", "carrying a tote on the shoulder",
                          "with a messenger satchel"],
    ("bag", "backpack"): ["wearing a rucksack", "carrying a knapsack", "with a rucksack on"],
    ("holds_objects", "yes"): ["holding stuff in both hands", "clutching some things up front",
                               "holding an item in hand"],
    ("hat", "yes"): ["wearing a cap", "in a beanie", "with a cap on"],
    ("glasses", "yes"): ["wearing specs", "in spectacles", "with specs on"],
    ("long_coat", "yes"): ["in a trench coat", "wearing an overcoat", "in a knee-length overcoat"],
    ("sleeve", "short"): ["in a tee", "wearing a t-shirt", "in a tee top"],
    ("sleeve", "long"): ["in a jumper", "wearing a sweater", "in a pullover"],
    ("upper", "stripe"): ["striped", "pinstriped"],
    ("upper", "logo"): ["printed", "branded"],
    ("upper", "plaid"): ["checked", "tartan"],
    ("upper", "splice"): ["colour-blocked", "patchwork"],
    ("skirt", "yes"): ["and a skirt", "plus a frock", "and a miniskirt"],
}

#: Vehicle words: colours (some spelled the everyday way), types and the brands people shorten.
COLOUR: dict[str, list[str]] = {
    "black": ["jet black", "black"], "blue": ["navy", "blue"], "brown": ["chocolate brown", "tan"],
    "green": ["dark green", "green"], "grey": ["gray", "silver gray"], "orange": ["orange", "bright orange"],
    "pink": ["pink", "rosy"], "purple": ["violet", "purple"], "red": ["crimson", "red"],
    "white": ["snow white", "white"], "yellow": ["mustard yellow", "yellow"],
}
TYPE: dict[str, list[str]] = {
    "Bus": ["coach", "city coach"], "Microbus": ["minibus", "little shuttle bus"],
    "Minivan": ["people carrier", "MPV"], "SUV": ["4x4", "off-roader"],
    "Sedan": ["saloon", "four-door saloon"], "Truck": ["lorry", "big rig"],
}
BRAND: dict[str, list[str]] = {
    "Benz": ["Mercedes", "Merc"], "Volkswagen": ["VW"], "Chevrolet": ["Chevy"], "Landrover": ["Land Rover"],
    "MORRIS-GARAGE": ["MG"], "GreatWall": ["Great Wall"], "Citroen": ["Citroën"],
}
#: A vehicle with nothing but its colour or brand stated gets one of these as its noun.
CAR = ["motor", "ride", "set of wheels"]

#: Whole captions written by hand, with what they state (tests; the everyday-caption cases).
HANDWRITTEN: list[tuple[str, str, dict[str, str]]] = [
    ("a lady in a red dress", "pedestrian", {"gender": "female", "skirt": "yes"}),
    ("grey VW saloon", "vehicle", {"color": "grey", "brand": "Volkswagen", "type": "Sedan"}),
    ("old man with a cap, walking away from us", "pedestrian",
     {"gender": "male", "age": "over60", "orientation": "back", "hat": "yes"}),
    ("teenage girl carrying a rucksack", "pedestrian", {"gender": "female", "age": "under18", "bag": "backpack"}),
    ("a crimson lorry", "vehicle", {"color": "red", "type": "Truck"}),
    ("bloke in specs and a trench coat", "pedestrian", {"gender": "male", "glasses": "yes", "long_coat": "yes"}),
]


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def pedestrian(attrs: Mapping[str, str], rng: np.random.Generator, bank: ModuleType | None = None) -> str:
    """An everyday caption of a pedestrian stating ``attrs`` (gender, age and orientation at least),
    in the words of ``bank`` (a module with this one's phrase tables; default: this one)."""
    b = bank or sys.modules[__name__]
    if "gender" in attrs:
        subject = _pick(rng, b.SUBJECT[(attrs["gender"], attrs.get("age", "18to60"))])
    else:
        subject = _pick(rng, ["person", "pedestrian walking", "someone on foot"])
    upper = attrs.get("upper")
    parts = []
    for group in ("orientation", "handbag", "bag", "holds_objects", "hat", "glasses", "long_coat"):
        if (group, attrs.get(group)) in b.PHRASES:
            parts.append(_pick(rng, b.PHRASES[(group, attrs[group])]))
    if "sleeve" in attrs:
        top = _pick(rng, b.PHRASES[("sleeve", attrs["sleeve"])])
        if (upper and upper != "none"):
            word, rest = top.rsplit(" ", 1)
            top = f"{word} {_pick(rng, b.PHRASES[('upper', upper)])} {rest}"
        if attrs.get("skirt") == "yes":
            top += " " + _pick(rng, b.PHRASES[("skirt", "yes")])
        parts.append(top)
    order = rng.permutation(len(parts)).tolist() if len(parts) > 1 else [0] * len(parts)
    body = ", ".join(parts[i] for i in order)
    frame = int(rng.integers(3))
    if frame == 0:
        return f"A {subject} {body}."
    if frame == 1:
        return f"Looking for a {subject}, {body}"
    return f"{subject[0].upper()}{subject[1:]} {body}"


def vehicle(attrs: Mapping[str, str], rng: np.random.Generator, bank: ModuleType | None = None) -> str:
    """An everyday caption of a vehicle stating ``attrs`` (any of colour, brand, type)."""
    b = bank or sys.modules[__name__]
    colour = _pick(rng, b.COLOUR[attrs["color"]]) if "color" in attrs else ""
    brand = _pick(rng, b.BRAND.get(attrs["brand"], [attrs["brand"]])) if "brand" in attrs else ""
    kind = _pick(rng, b.TYPE[attrs["type"]]) if "type" in attrs else _pick(rng, b.CAR)
    frame = int(rng.integers(3))
    if frame == 0 or not colour:
        words = " ".join(w for w in (colour, brand, kind) if w)
        return f"{'an' if words[0].lower() in 'aeiou' else 'a'} {words}"
    if frame == 1:
        return " ".join(w for w in (brand, kind) if w) + f", painted {colour}"
    return f"{colour} {kind}" + (f" made by {brand}" if brand else "")


def paraphrase(domain: str, attrs: Mapping[str, str], seed: int, bank: str = "dev") -> str:
    """An everyday caption stating exactly ``attrs`` of ``domain`` (seeded: same inputs, same
    words), from the ``dev`` bank (this module) or the ``heldout`` one (:mod:`.paraphrase_heldout`)."""
    if bank not in BANKS:
        raise ValueError(f"unknown paraphrase bank {bank!r}; expected one of {list(BANKS)}")
    module = importlib.import_module(BANKS[bank])
    rng = np.random.default_rng(seed)
    if domain == "pedestrian":
        return pedestrian(attrs, rng, module)
    if domain == "vehicle":
        return vehicle(attrs, rng, module)
    raise ValueError(f"cannot paraphrase a caption of domain {domain!r}")
