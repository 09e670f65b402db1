"""The word level that rules, parser and miner share: tokens, function words, negations, group order."""

from __future__ import annotations

import re

from pipeline import schema

#: Words a rule phrase may contain but not start or end with: they carry no attribute.
FUNCTION_WORDS: frozenset[str] = frozenset(
    "a an the this that is are was be and or with who whom in on of to at as by for from his her "
    "their its it has have someone".split())

#: Words that negate the phrase right after them ("not an adult", "no hat", "without glasses").
NEGATIONS: tuple[str, ...] = ("not", "no", "never", "without")

#: How many words may sit between a negation and the phrase it negates ("not wearing a hat").
NEGATION_WINDOW = 3

TOKEN = re.compile(r"[a-z0-9]+")
SENTENCE_END = re.compile(r"[.!?;\n]")
#: Between the words of a phrase: spaces, commas, hyphens ("18-60"); never a sentence end.
SEP = r"[^a-z0-9\n.!?;]+"

PEDESTRIAN_GROUP_NAMES = tuple(g.name for g in schema.PEDESTRIAN_GROUPS)
VEHICLE_GROUP_NAMES = tuple(g.name for g in schema.VEHICLE_GROUPS)
DOMAIN_OF_GROUP: dict[str, str] = {name: d for d, gs in schema.GROUPS_BY_DOMAIN.items()
                                   for name in (g.name for g in gs)}


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens of ``text``."""
    return TOKEN.findall(text.lower())


def is_content(token: str) -> bool:
    """A token that can state something in a served caption: not a function word, not a bare
    number (the served ensemble's words and the everyday-words reader's phrases both use it)."""
    return token not in FUNCTION_WORDS and not token.isdigit()
