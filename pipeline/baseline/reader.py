"""Everyday words -> attribute values: the caption mapping's reading widened by MiniLM similarity.

The mapping reads the template language exactly (precision 1.0) and nothing else: "a lady in a
tee" states gender and sleeve length, but no mined rule says "lady" or "tee". The dual encoder
knows those words are near "woman" and "short sleeves" - MiniLM keeps what it learnt about
English - yet its joint space, trained on template captions, ranks poorly with them. This reader
puts the two together: it finds what an everyday caption states, so the decoupled classifiers
(the strong part of the method) can rank it.

How a caption is read (:meth:`Reader.read`):

1. Its phrases: the word n-grams (up to :data:`MAX_WORDS`) of the caption's content words,
   none inside a negation's window ("no hat" states nothing here).
2. Each phrase against :data:`LEXICON` - :data:`MEANINGS`, a few words per attribute value saying
   what the value means, plus the thesaurus's synonyms, shades, nicknames and misspellings
   (:mod:`pipeline.baseline.thesaurus`); both written from the schema (the PA-100K bit names, the
   vehicle vocabularies), not from any caption - and against the training captions' filler words,
   by the cosine of their raw MiniLM sentence embeddings. A phrase that *is* a lexicon entry
   needs no model: :func:`read_exact` reads it for every served caption.
3. A phrase states the value of its nearest meaning among the domain's groups when that cosine
   is at least ``min_cosine`` and beats the group's other values and the nearest filler word by
   ``min_margin``; per group the best such phrase wins. The mapping's own reading always stands;
   the reader only fills groups it left open, and only groups of the caption's domain (decided
   before, by the dual encoder's text tower).

The thresholds are ``baseline.reader_min_cosine`` / ``reader_min_margin`` (chosen on the dev
paraphrase bank, checked on the held-out one: docs/baseline.md).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from pipeline import schema
from pipeline.baseline.thesaurus import SYNONYMS
from pipeline.mapping.words import DOMAIN_OF_GROUP, NEGATION_WINDOW, NEGATIONS, is_content, tokens

#: Longest phrase looked up, in words.
MAX_WORDS = 3

#: What each attribute value means, in plain words (several ways of saying it). Only values a
#: caption states by naming them: "no hat", "male" by default and "none" are not looked up.
MEANINGS: dict[tuple[str, str], tuple[str, ...]] = {
    ("gender", "female"): ("female", "woman", "girl"),
    ("gender", "male"): ("male", "man", "boy"),
    ("age", "over60"): ("old", "elderly person", "over 60 years old"),
    ("age", "18to60"): ("adult", "grown-up", "between 18 and 60 years old"),
    ("age", "under18"): ("child", "teenager", "kid under 18"),
    ("orientation", "front"): ("facing the camera", "front view", "coming towards"),
    ("orientation", "side"): ("side view", "profile", "sideways"),
    ("orientation", "back"): ("back view", "from behind", "walking away"),
    ("hat", "yes"): ("hat", "headwear"),
    ("glasses", "yes"): ("glasses", "eyeglasses", "sunglasses"),
    ("handbag", "yes"): ("handbag", "purse"),
    ("bag", "shoulder"): ("shoulder bag", "bag over the shoulder"),
    ("bag", "backpack"): ("backpack", "bag on the back"),
    ("holds_objects", "yes"): ("holding objects in front", "carrying things in hands"),
    ("sleeve", "short"): ("short sleeves", "short-sleeved shirt"),
    ("sleeve", "long"): ("long sleeves", "long-sleeved top"),
    ("upper", "stripe"): ("stripes", "striped"),
    ("upper", "logo"): ("logo", "print on the shirt"),
    ("upper", "plaid"): ("plaid", "checkered pattern"),
    ("upper", "splice"): ("spliced", "two-tone panels"),
    ("long_coat", "yes"): ("long coat", "coat"),
    ("skirt", "yes"): ("skirt", "dress"),
    **{("color", v): (v,) for v in schema.VEHICLE_COLORS},
    **{("type", v): (v.lower(),) for v in schema.VEHICLE_TYPES},
    **{("brand", v): (v.lower().replace("-", " "),) for v in schema.VEHICLE_BRANDS},
}

#: Every way of naming a value that is looked up exactly (:func:`read_exact`): the meanings plus
#: the thesaurus (:mod:`pipeline.baseline.thesaurus`, written blind to the paraphrase banks).
LEXICON: dict[tuple[str, str], tuple[str, ...]] = {
    key: tuple(dict.fromkeys(texts + SYNONYMS.get(key, ()))) for key, texts in MEANINGS.items()}

Encode = Callable[[Sequence[str]], np.ndarray]  # texts -> L2-normalised raw MiniLM embeddings


class Reader:
    """Everyday phrases -> ``{group: value}`` by MiniLM similarity to :data:`LEXICON` (or, without
    ``thesaurus``, :data:`MEANINGS` alone: the bench compares both)."""

    def __init__(self, encode: Encode, min_cosine: float, min_margin: float, vocab: Iterable[str] = (),
                 thesaurus: bool = True):
        self.encode, self.min_cosine, self.min_margin = encode, min_cosine, min_margin
        # The thesaurus's words as anchors too: a shade near "crimson" is red even if far from "red".
        self.meanings = meanings = LEXICON if thesaurus else MEANINGS
        self.keys = [key for key, texts in meanings.items() for _ in texts]
        # The training captions' words that mean no value: "wearing", "pedestrian", "person". Not
        # filler: the meanings' words, and words that are a lexicon entry on their own ("coat");
        # a word inside a thesaurus phrase ("wearing" in "glasses-wearing") still is.
        meaning_words = {w for texts in MEANINGS.values() for t in texts for w in tokens(t)}
        entries = {spelled(t) for texts in meanings.values() for t in texts}
        self.filler = sorted(set(vocab) - meaning_words - entries)
        self._anchors: np.ndarray | None = None
        # Per domain, the columns of its groups' meanings (the reader's search space).
        self._cols = {d: np.array([j for j, (g, _) in enumerate(self.keys) if DOMAIN_OF_GROUP[g] == d])
                      for d in schema.DOMAINS}

    def anchors(self) -> np.ndarray:
        """The meanings' embeddings, then the filler words' (computed on first use)."""
        if self._anchors is None:  # a serving process that never needs them never pays
            self._anchors = self.encode([t for texts in self.meanings.values() for t in texts] + self.filler)
        return self._anchors

    def read(self, captions: Sequence[str], stated: Sequence[Mapping[str, str]],
             domains: Sequence[str]) -> list[dict[str, str]]:
        """``stated`` (the mapping's reading) plus the groups the reader finds, per caption."""
        spans = [phrases(c) for c in captions]
        unique = sorted({s for sp in spans for s in sp})
        out = [dict(s) for s in stated]
        if not unique:
            return out
        sims = self.encode(unique) @ self.anchors().T          # (phrases, anchors)
        row = {s: i for i, s in enumerate(unique)}
        for attrs, sp, domain in zip(out, spans, domains):
            if domain in schema.DOMAINS and sp:
                for group, (value, _) in self._statements(sims[[row[s] for s in sp]], domain).items():
                    attrs.setdefault(group, value)
        return out

    def _statements(self, sims: np.ndarray, domain: str) -> dict[str, tuple[str, float]]:
        """``{group: (value, cosine)}`` the phrases (rows of ``sims``) state clearly enough.

        A phrase states the value of its nearest meaning among all of the domain's groups (so
        "tee" cannot also state a hat), when that cosine reaches ``min_cosine`` and beats the
        nearest meaning of any other value of the same group, and the nearest filler word (a
        training-caption word that means no value), by ``min_margin``.
        """
        cols = self._cols[domain]
        filler = sims[:, len(self.keys):].max(1, initial=-1.0)
        found: dict[str, tuple[str, float]] = {}
        for s, nothing in zip(sims[:, cols], filler):
            j = int(np.argmax(s))
            group, value = self.keys[cols[j]]
            rivals = [s[i] for i, c in enumerate(cols) if self.keys[c][0] == group and self.keys[c][1] != value]
            margin = s[j] - max(*rivals, nothing, -1.0)
            if s[j] >= self.min_cosine and margin >= self.min_margin and s[j] > found.get(group, ("", -2.0))[1]:
                found[group] = (value, float(s[j]))
        return found


def spelled(text: str) -> str:
    """``text`` as :func:`phrases` spells it: its content words (no function words, no digits)."""
    return " ".join(t for t in tokens(text) if is_content(t))


def phrases(caption: str) -> list[str]:
    """The caption's content-word n-grams (1 to :data:`MAX_WORDS` words), none inside a negation's window."""
    runs, words, skip = [], [], 0
    for t in tokens(caption if isinstance(caption, str) else ""):
        if t in NEGATIONS:  # "no hat", "not wearing a hat": the mapping's negation window
            runs.append(words)
            words, skip = [], NEGATION_WINDOW + 1
        elif skip:
            skip -= 1
        elif is_content(t):
            words.append(t)
    runs.append(words)
    return [" ".join(w[s:s + n]) for w in runs for n in range(1, MAX_WORDS + 1) for s in range(len(w) - n + 1)]


@cache
def _exact_meanings(thesaurus: bool = True) -> dict[str, tuple[str, str]]:
    """``{phrase: (group, value)}``: each meaning (and thesaurus word) as :func:`phrases` spells it,
    when it names one value (built once: the tables are constants, and every served caption looks
    it up)."""
    seen: dict[str, set[tuple[str, str]]] = {}
    for key, texts in (LEXICON if thesaurus else MEANINGS).items():
        for t in texts:
            seen.setdefault(spelled(t), set()).add(key)
    return {p: next(iter(keys)) for p, keys in seen.items() if len(keys) == 1 and p}


def read_exact(parsed: Sequence[Any], rules: Iterable[Any] = (), thesaurus: bool = True) -> list[Any]:
    """The mapping's reading plus every value a caption names by one of its plain-word meanings
    (or, with ``thesaurus``, a word of :mod:`pipeline.baseline.thesaurus`).

    The mined rules are a minimal cover of the template's captions: "she" states female, so
    "female" is no rule, and "A female pedestrian with a backpack." reads as the backpack alone.
    A phrase that *is* a meaning ("female", "woman", "backpack", "long coat") needs no similarity
    and no model: it fills the groups the mapping left open, of the caption's domain (or, for a
    caption the mapping gave no domain, of the one domain all such phrases agree on). A phrase
    that is one of the mapping's ``rules`` is left to the mapping: where it did not read it, a
    longer rule took it ("truck" inside the brand "Balong Heavy Truck").
    """
    from pipeline.mapping import ParsedCaption

    taken = {r.phrase for r in rules}
    exact = {p: key for p, key in _exact_meanings(thesaurus).items() if p not in taken}
    out = []
    for p in parsed:
        named: dict[str, str] = {}
        for phrase in phrases(p.text):
            key = exact.get(phrase)
            if key is not None:
                named.setdefault(*key)
        domains = {DOMAIN_OF_GROUP[g] for g in named}
        domain = p.domain if p.domain in schema.DOMAINS else (domains.pop() if len(domains) == 1 else p.domain)
        extra = {g: v for g, v in named.items() if DOMAIN_OF_GROUP[g] == domain and g not in p.attributes}
        if not extra:
            out.append(p)
            continue
        order = [g.name for g in schema.GROUPS_BY_DOMAIN[domain]]
        attrs = {**p.attributes, **extra} if domain == p.domain else extra
        out.append(ParsedCaption(p.text, domain, {g: attrs[g] for g in order if g in attrs}))
    return out
