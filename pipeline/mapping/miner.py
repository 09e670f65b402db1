"""Mining phrase -> value rules from (caption, label) pairs: :func:`mine_rules`, :func:`build_mapping`.

Captions are lower-cased and split into word tokens (``[a-z0-9]+``). Every word n-gram
(1..``max_ngram`` words, inside one sentence) that neither starts nor ends with a function word
(:data:`~pipeline.mapping.words.FUNCTION_WORDS`) nor ends with a negation is a candidate. For each
attribute group and value a candidate is scored on the training pairs by

- support: captions that contain it and carry the value;
- precision: support / captions that contain it and carry a label for the group (captions of the
  other domain count against it; vehicle captions whose group is unlabelled are not evidence);
- chance: a perfect record over k captions proves little when the value is common, so the
  binomial tail ``base_rate ** support`` must be below ``alpha``.

A candidate that passes (``support >= min_support``, ``precision >= min_precision``, chance) for
several values states only the one whose captions it covers the largest share of: "wearning a
longcoat" is also precise for sleeve=long, by correlation, not by statement. Then, per value,
rules are chosen greedily: the candidate covering the most still-uncovered captions, ties broken
towards the shortest phrase (it generalises: "longcoat" also reads "glasses,a longcoat"). Last, a
phrase grows to the longest equally good phrase made only of its value's own words and other
rules' phrases, so a multi-word name swallows a word that would state something else
("balong" -> "balong heavy truck", whose "truck" is then not read as the type; "golden dragon").

Captions never state a negative ("no hat"), but the template implies some (a hat forces the
"wearing" sentence), and such implications would be precise. So only the values a caption can
state are mined (:func:`pipeline.caption_template.statable`): an absence value (no bit of its own:
``male``, ``no``, ``none``) only for gender, which every caption states.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline import schema
from pipeline.caption_template import statable
from pipeline.mapping.pairs import Pairs, pairs_from_frame
from pipeline.mapping.rules import Rule, apply_overrides
from pipeline.mapping.words import DOMAIN_OF_GROUP, FUNCTION_WORDS, NEGATIONS, SENTENCE_END, TOKEN, tokens

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.config import MappingParams

log = logging.getLogger(__name__)


def _ngrams(text: str, max_n: int) -> set[str]:
    """Candidate phrases of a caption: word n-grams inside one sentence, no function word at an edge."""
    out: set[str] = set()
    for sentence in SENTENCE_END.split(text.lower()):
        _sentence_ngrams(TOKEN.findall(sentence), max_n, out)
    return out


def _sentence_ngrams(toks: list[str], max_n: int, out: set[str]) -> None:
    for i, w in enumerate(toks):
        if w in FUNCTION_WORDS:
            continue
        for n in range(1, max_n + 1):
            j = i + n
            if j > len(toks):
                break
            if toks[j - 1] not in FUNCTION_WORDS and toks[j - 1] not in NEGATIONS:
                out.add(" ".join(toks[i:j]))  # a negation is never the end: "not an adult", not "not"


def mine_rules(pairs: Pairs, config: MappingParams) -> list[Rule]:
    """Learn phrase -> value rules from training pairs (see the module docstring)."""
    from tqdm import tqdm

    vocab: dict[str, int] = {}
    occ_row: list[np.ndarray] = []
    occ_id: list[np.ndarray] = []
    for row, caption in enumerate(tqdm(pairs.captions, desc="n-grams", unit="caption",
                                       mininterval=2, disable=len(pairs) < 20000)):
        ids = [vocab.setdefault(g, len(vocab)) for g in _ngrams(caption, config.max_ngram)]
        occ_id.append(np.asarray(ids, np.int32))
        occ_row.append(np.full(len(ids), row, np.int32))
    ids_all = np.concatenate(occ_id) if occ_id else np.zeros(0, np.int32)
    rows_all = np.concatenate(occ_row) if occ_row else np.zeros(0, np.int32)
    phrases = np.array(list(vocab), dtype=object)
    n_words = np.array([p.count(" ") + 1 for p in phrases], np.int32)
    n_ids = len(vocab)
    log.info("mining over %d captions, %d candidate phrases", len(pairs), n_ids)

    # Pass 1: the precise, significant candidates of every statable (group, value).
    found: list[tuple[schema.Group, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    best_recall = np.zeros(n_ids)
    owner = np.full(n_ids, -1)
    for group in schema.PEDESTRIAN_GROUPS + schema.VEHICLE_GROUPS:
        domain = DOMAIN_OF_GROUP[group.name]
        y = pairs.labels[group.name].astype(np.int64)
        in_domain = pairs.domains == domain
        C = group.n_classes
        # Per caption: its class; C = other domain (counts against); C+1 = unlabelled (no evidence).
        code = np.where(in_domain, np.where(y >= 0, y, C + 1), C)
        counts = np.bincount(ids_all.astype(np.int64) * (C + 2) + code[rows_all],
                             minlength=n_ids * (C + 2)).reshape(n_ids, C + 2)
        evidence = counts[:, :C + 1].sum(1)
        n_labelled = int((in_domain & (y >= 0)).sum())
        for k in range(C):
            positives = in_domain & (y == k)
            n_pos = int(positives.sum())
            if n_pos < config.min_support or not statable(group.name, group.values[k]):
                continue
            base_rate = n_pos / max(n_labelled, 1)
            support = counts[:, k]
            precision = support / np.maximum(evidence, 1)
            chance = support * math.log(base_rate) if base_rate < 1 else np.zeros(n_ids)
            cand = np.flatnonzero((support >= config.min_support) & (precision >= config.min_precision)
                                  & (chance < math.log(config.alpha)))
            if not len(cand):
                continue
            # A phrase states one thing: the value whose captions it covers the largest share of.
            # ("wearning a longcoat" is also precise for sleeve=long, by correlation, not by statement.)
            recall = support[cand] / n_pos
            better = recall > best_recall[cand]
            best_recall[cand[better]] = recall[better]
            owner[cand[better]] = len(found)
            found.append((group, k, positives, cand, support, precision))

    # Pass 2: per value, greedily pick its phrases that cover the most still-uncovered captions.
    chosen: list[tuple[Rule, list[str], np.ndarray, np.ndarray]] = []
    for f, (group, k, positives, cand, support, precision) in enumerate(found):
        cand = cand[owner[cand] == f]
        sel = np.isin(ids_all, cand) & positives[rows_all]
        c_ids, c_rows = ids_all[sel], rows_all[sel]
        covered = np.zeros(len(pairs), bool)
        while len(c_ids):
            gain = np.bincount(c_ids[~covered[c_rows]], minlength=n_ids)
            best_gain = int(gain.max())
            if best_gain < config.min_support:
                break
            tied = np.flatnonzero(gain == best_gain)
            best = min(tied, key=lambda i: (n_words[i], phrases[i]))
            chosen.append((Rule(str(phrases[best]), group.name, group.values[k], int(support[best]),
                                float(precision[best])), [str(phrases[i]) for i in tied],
                           support[tied], precision[tied]))
            covered[c_rows[c_ids == best]] = True
        log.debug("%s=%s: rules cover %.1f%% of %d captions", group.name, group.values[k],
                  100 * covered.sum() / positives.sum(), positives.sum())
    rules = _extend_phrases(chosen)
    log.info("mined %d rules", len(rules))
    return rules


def _extend_phrases(chosen: list[tuple[Rule, list[str], np.ndarray, np.ndarray]]) -> list[Rule]:
    """Grow each rule's (shortest) phrase to the longest equally good phrase made only of words
    that belong to its value or to other rules.

    Short phrases generalise best ("longcoat", not "wearning a longcoat", also reads
    "glasses,a longcoat"), but a multi-word name must swallow its words that would otherwise
    state something else: "balong" grows to "balong heavy truck" so that its "truck" is not read
    as the type, and "dragon" to "golden dragon". Function words may sit inside.
    """
    phrases = [r.phrase for r, *_ in chosen]
    out = []
    for i, (rule, tied, support, precision) in enumerate(chosen):
        own = {p for p in tied if " " not in p} | FUNCTION_WORDS  # words alone as good as the rule
        others = sorted({q for j, q in enumerate(phrases) if j != i}, key=len, reverse=True)
        best, best_key = None, None
        for j, p in enumerate(tied):
            if f" {rule.phrase} " not in f" {p} ":
                continue
            rest = f" {p} "
            for q in others:
                while f" {q} " in rest:
                    rest = rest.replace(f" {q} ", " ")
            if set(rest.split()) <= own:
                key = (p.count(" "), [-ord(c) for c in p])
                if best_key is None or key > best_key:
                    best, best_key = j, key
        if best is not None and tied[best] != rule.phrase:
            rule = Rule(tied[best], rule.group, rule.value, int(support[best]), float(precision[best]))
        out.append(rule)
    return out


def measure_rules(rules: Sequence[Rule], pairs: Pairs) -> list[Rule]:
    """Fill support/precision of ``rules`` (e.g. overrides) on ``pairs`` by substring of tokens."""
    joined = [" " + " ".join(tokens(c)) + " " for c in pairs.captions]
    out = []
    for r in rules:
        g = schema.group(r.group)
        k = g.index(r.value)
        y = pairs.labels[r.group]
        dom = pairs.domains == DOMAIN_OF_GROUP[r.group]
        has = np.array([f" {r.phrase} " in c for c in joined], bool)
        evidence = int((has & ((dom & (y >= 0)) | ~dom)).sum())
        support = int((has & dom & (y == k)).sum())
        out.append(Rule(r.phrase, r.group, r.value, support,
                        support / evidence if evidence else None, r.source))
    return out


def build_mapping(train: pd.DataFrame, config: MappingParams, overrides: str | Path | None) -> list[Rule]:
    """Mine rules from a labels frame, merge the overrides and measure the added rules on it."""
    pairs = pairs_from_frame(train)
    rules = apply_overrides(mine_rules(pairs, config), overrides)
    added = [r for r in rules if r.source == "override"]
    return [r for r in rules if r.source != "override"] + measure_rules(added, pairs)

