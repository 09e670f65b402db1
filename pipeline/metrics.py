"""Retrieval and classification metrics: the organisers' official figure and the standard ones.

The official Track-2 score (``../shared/track2/README.md``) walks the 10 returned names of a text;
each name in the relevant set increments a hit counter that starts at 1e-6 and adds
``hits / rank``; the text's AP is that sum divided by the final hit counter, and the score is the
mean over texts. It is normalised by the hits inside the top 10, not by the number of relevant
images, and a name returned twice counts twice. :func:`official_ap` is that loop, literally;
:func:`official_ap_from_hits` is the same arithmetic vectorised (the tests prove them equal).

The standard mAP@10 counts each relevant image once and normalises by ``min(#relevant, 10)``.

Relevance is judged on labels (:func:`is_relevant`): an image is relevant to a query when its
labels carry every stated attribute (``inclusion``; for test vehicles, whose captions state all
three of colour, brand and type, this is equality on all three), or when its whole label equals
the query image's label (``label``).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence, get_args

import numpy as np

from pipeline import schema
from pipeline.choices import Relevance

RELEVANCE_RULES: tuple[str, ...] = get_args(Relevance)
HIT_START = 1e-6  # the official script's initial hit counter (avoids 0/0 for no hits)


class TextOrderError(ValueError):
    """The submission's texts are not the ground truth's texts in the same order."""


# --------------------------------------------------------------------------- official metric

def official_ap(ranked: Sequence[str], relevant: set[str] | frozenset[str], k: int = 10) -> float:
    """The official AP of one text, as the organisers' loop computes it."""
    hits, total = HIT_START, 0.0
    for rank, name in enumerate(ranked[:k], start=1):
        if name in relevant:
            hits += 1
            total += hits / rank
    return total / hits


def hit_matrix(ranked: Sequence[Sequence[str]], relevant: Sequence[Iterable[str]], k: int = 10
               ) -> np.ndarray:
    """(Q, k) bool: whether the name at each rank is relevant (duplicates stay hits)."""
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} ranked lists but {len(relevant)} relevant sets")
    out = np.zeros((len(ranked), k), dtype=bool)
    for i, (names, rel) in enumerate(zip(ranked, relevant)):
        rel = rel if isinstance(rel, (set, frozenset)) else set(rel)
        for j, name in enumerate(names[:k]):
            out[i, j] = name in rel
    return out


def official_ap_from_hits(hits: np.ndarray) -> np.ndarray:
    """Vectorised :func:`official_ap` over a (Q, k) hit matrix -> (Q,) APs."""
    hits = np.asarray(hits, dtype=np.float64)
    counter = HIT_START + np.cumsum(hits, axis=1)
    ranks = np.arange(1, hits.shape[1] + 1)
    return (hits * counter / ranks).sum(axis=1) / counter[:, -1]


def official_map(ranked: Sequence[Sequence[str]], relevant: Sequence[Iterable[str]], k: int = 10
                 ) -> float:
    """The official score: mean official AP over texts (0.0 for no texts)."""
    if not len(ranked):
        return 0.0
    return float(official_ap_from_hits(hit_matrix(ranked, relevant, k)).mean())


# --------------------------------------------------------------------------- standard metrics

def first_occurrence_hits(ranked: Sequence[Sequence[str]], relevant: Sequence[Iterable[str]],
                          k: int = 10) -> np.ndarray:
    """Like :func:`hit_matrix` but a name returned again is not a second hit (standard AP)."""
    out = hit_matrix(ranked, relevant, k)
    for i, names in enumerate(ranked):
        seen: set[str] = set()
        for j, name in enumerate(names[:k]):
            if name in seen:
                out[i, j] = False
            seen.add(name)
    return out


def standard_ap_from_hits(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """AP@k normalised by ``min(#relevant, k)`` (0 when nothing is relevant)."""
    hits = np.asarray(hits, dtype=np.float64)
    k = hits.shape[1]
    precision = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    denom = np.minimum(np.asarray(n_relevant), k).astype(np.float64)
    num = (hits * precision).sum(axis=1)
    return np.divide(num, denom, out=np.zeros_like(num), where=denom > 0)


def retrieval_metrics(ranked: Sequence[Sequence[str]], relevant: Sequence[Iterable[str]],
                      k: int = 10) -> dict[str, float]:
    """Official mAP@k, standard mAP@k and hit@1/5/10 of a set of queries."""
    relevant = [r if isinstance(r, (set, frozenset)) else set(r) for r in relevant]
    n = len(ranked)
    if n == 0:
        return {"n_queries": 0}
    official = official_ap_from_hits(hit_matrix(ranked, relevant, k))
    first = first_occurrence_hits(ranked, relevant, k)
    standard = standard_ap_from_hits(first, np.array([len(r) for r in relevant]))
    out = {"n_queries": n, "official_map10": float(official.mean()),
           "standard_map10": float(standard.mean())}
    for h in (1, 5, 10):
        if h <= k:
            out[f"hit{h}"] = float(first[:, :h].any(axis=1).mean())
    return out


def metrics_by_domain(ranked: Sequence[Sequence[str]], relevant: Sequence[Iterable[str]],
                      domains: Sequence[str], k: int = 10) -> dict[str, dict[str, float]]:
    """:func:`retrieval_metrics` overall (key ``all``) and per domain label of each query."""
    out = {"all": retrieval_metrics(ranked, relevant, k)}
    for d in sorted(set(domains)):
        idx = [i for i, x in enumerate(domains) if x == d]
        out[d] = retrieval_metrics([ranked[i] for i in idx], [relevant[i] for i in idx], k)
    return out


# --------------------------------------------------------------------------- relevance

def is_relevant(stated: Mapping[str, str], image_label: Mapping[str, str | None],
                query_label: Mapping[str, str | None] | None = None,
                rule: Relevance = "inclusion") -> bool:
    """Whether an image is relevant to a query, judged on labels.

    ``stated`` maps each group the caption states to its value; ``image_label`` maps every group
    to the image's labelled value (None when unlabelled - never a match). ``label`` compares the
    whole label with ``query_label`` instead (unlabelled groups must be unlabelled on both).
    """
    if rule == "inclusion":
        return bool(stated) and all(image_label.get(g) == v for g, v in stated.items())
    if rule == "label":
        if query_label is None:
            raise ValueError("relevance 'label' needs the query image's label")
        keys = set(query_label) | set(image_label)
        return all(query_label.get(g) == image_label.get(g) for g in keys)
    raise ValueError(f"unknown relevance rule {rule!r}; expected one of {list(RELEVANCE_RULES)}")


def relevant_sets(stated: Sequence[Mapping[str, str]], gallery: Mapping[str, Mapping[str, str | None]],
                  query_labels: Sequence[Mapping[str, str | None] | None] | None = None,
                  rule: Relevance = "inclusion") -> list[set[str]]:
    """The relevant gallery names of each query, with the rules of :func:`is_relevant`.

    Vectorised: the gallery's labels become an integer code matrix (one column per group, -1 for
    unlabelled) and each distinct query is answered by one column comparison, so 17k queries
    against 17k images take well under a second.
    """
    if rule not in RELEVANCE_RULES:
        raise ValueError(f"unknown relevance rule {rule!r}; expected one of {list(RELEVANCE_RULES)}")
    if rule == "label" and query_labels is None:
        raise ValueError("relevance 'label' needs the query images' labels")
    names = np.array(list(gallery), dtype=object)
    groups = sorted({g for lab in gallery.values() for g in lab}
                    | {g for st in stated for g in st}
                    | ({g for q in query_labels if q for g in q} if query_labels else set()))
    col = {g: j for j, g in enumerate(groups)}
    codes: dict[tuple[str, str], int] = {}
    mat = np.full((len(names), len(groups)), -1, dtype=np.int32)
    for i, lab in enumerate(gallery.values()):
        for g, v in lab.items():
            if v is not None:
                mat[i, col[g]] = codes.setdefault((g, v), len(codes))
    cache: dict[tuple, set[str]] = {}
    out = []
    for i, st in enumerate(stated):
        if rule == "label":
            q = query_labels[i] or {}
            want = {g: q.get(g) for g in groups}  # unlabelled must stay unlabelled
        else:
            want = dict(st)
        key = tuple(sorted(want.items(), key=lambda kv: kv[0]))
        if key not in cache:
            if rule == "inclusion" and not want:
                cache[key] = set()
            else:
                keep = np.ones(len(names), dtype=bool)
                for g, v in want.items():
                    code = -1 if v is None else codes.get((g, v), -2)  # -2: a value no image has
                    keep &= mat[:, col[g]] == code
                cache[key] = set(names[keep].tolist())
        out.append(cache[key])
    return out


def check_text_order(submitted: Sequence[str], expected: Sequence[str]) -> None:
    """Raise :class:`TextOrderError` unless the texts match one for one, as the official script."""
    if len(submitted) != len(expected):
        raise TextOrderError(f"the submission has {len(submitted)} texts, the ground truth {len(expected)}")
    for i, (a, b) in enumerate(zip(submitted, expected)):
        if a.strip() != b.strip():
            raise TextOrderError(f"text {i} differs from the ground truth: {a.strip()!r} != {b.strip()!r}"
                                 " (texts must be in the ground truth's order)")


# --------------------------------------------------------------------------- classifiers

def group_accuracy(probs: np.ndarray, labels: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy and mA (mean per-class recall over the classes present) of one group.

    ``probs`` is (N, n_classes), ``labels`` (N,) class indices with -1 for unlabelled rows,
    which are skipped.
    """
    keep = np.asarray(labels) >= 0
    y, pred = np.asarray(labels)[keep], np.asarray(probs)[keep].argmax(axis=1)
    if len(y) == 0:
        return {"n": 0, "accuracy": float("nan"), "mA": float("nan")}
    recalls = [float((pred[y == c] == c).mean()) for c in range(n_classes) if (y == c).any()]
    return {"n": int(len(y)), "accuracy": float((pred == y).mean()), "mA": float(np.mean(recalls))}


def label_indices(values: Sequence[str | None], group: schema.Group) -> np.ndarray:
    """Value names (None for unlabelled) -> class indices with -1 for unlabelled."""
    return np.array([-1 if v is None else group.index(v) for v in values], dtype=np.int64)
