"""The official metric on hand-computed cases, standard mAP, relevance rules, classifier metrics."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import metrics, schema

E = metrics.HIT_START
OTHER = [f"x{i}" for i in range(10)]


def ranked(*hits_at: int, name: str = "a") -> list[str]:
    """Ten names with ``name`` at the given 1-based ranks, distinct misses elsewhere."""
    out = list(OTHER)
    for r in hits_at:
        out[r - 1] = name
    return out


# --------------------------------------------------------------------------- official

@pytest.mark.parametrize("names, relevant, expected", [
    (ranked(1), {"a"}, 1.0),                                     # one hit at rank 1
    (ranked(2), {"a"}, ((1 + E) / 2) / (1 + E)),                 # one hit at rank 2 -> 0.5
    (OTHER, {"a"}, 0.0),                                         # no hit: 0 / 1e-6
    (["a", "x1", "b"] + OTHER[3:], {"a", "b"},                   # ranks 1 and 3
     ((1 + E) / 1 + (2 + E) / 3) / (2 + E)),
    (ranked(2, 3), {"a"},                                        # a duplicate counts twice
     ((1 + E) / 2 + (2 + E) / 3) / (2 + E)),
])
def test_official_ap_hand_computed(names, relevant, expected):
    assert metrics.official_ap(names, relevant) == pytest.approx(expected, rel=1e-12)
    hits = metrics.hit_matrix([names], [relevant])
    assert metrics.official_ap_from_hits(hits)[0] == pytest.approx(expected, rel=1e-12)


def test_official_ap_values_in_plain_numbers():
    assert metrics.official_ap(ranked(2), {"a"}) == pytest.approx(0.5)
    assert metrics.official_ap(ranked(2, 3), {"a"}) == pytest.approx(0.58333, abs=1e-5)
    # normalised by hits in the top 10, not by #relevant: one hit at rank 1 of 50 relevant is 1.0
    assert metrics.official_ap(ranked(1), {"a", *[f"r{i}" for i in range(49)]}) == pytest.approx(1.0)


def test_official_map_is_the_mean_over_texts_in_order():
    lists = [ranked(1), ranked(2), OTHER]
    rel = [{"a"}, {"a"}, {"a"}]
    assert metrics.official_map(lists, rel) == pytest.approx((1 + 0.5 + 0) / 3, abs=1e-6)


def test_vectorised_equals_loop_on_random_rankings():
    rng = np.random.default_rng(0)
    pool = [f"n{i}" for i in range(30)]
    lists = [list(rng.choice(pool, 10)) for _ in range(200)]  # with duplicates
    rel = [set(rng.choice(pool, rng.integers(0, 12), replace=False)) for _ in range(200)]
    loop = [metrics.official_ap(n, r) for n, r in zip(lists, rel)]
    vec = metrics.official_ap_from_hits(metrics.hit_matrix(lists, rel))
    np.testing.assert_allclose(vec, loop, rtol=1e-12)


# --------------------------------------------------------------------------- standard

def test_standard_map_normalises_by_min_relevant_and_10():
    # hits at ranks 1 and 4 of 3 relevant: (1/1 + 2/4) / 3
    names = ["a", "x1", "x2", "b"] + OTHER[4:]
    m = metrics.retrieval_metrics([names], [{"a", "b", "c"}])
    assert m["standard_map10"] == pytest.approx(0.5)
    assert m["hit1"] == 1.0 and m["hit5"] == 1.0
    # all 10 returned are relevant out of 15: normalised by 10 -> 1.0
    many = {f"r{i}" for i in range(15)}
    m = metrics.retrieval_metrics([sorted(many)[:10]], [many])
    assert m["standard_map10"] == pytest.approx(1.0)


def test_standard_counts_a_duplicate_once_official_twice():
    m = metrics.retrieval_metrics([ranked(2, 3)], [{"a"}])
    assert m["standard_map10"] == pytest.approx(0.5)
    assert m["official_map10"] == pytest.approx(0.58333, abs=1e-5)


def test_hit_at_k_and_per_domain():
    lists = [ranked(1), ranked(6), OTHER]
    out = metrics.metrics_by_domain(lists, [{"a"}] * 3, ["pedestrian", "vehicle", "vehicle"])
    assert out["all"]["hit1"] == pytest.approx(1 / 3)
    assert out["all"]["hit5"] == pytest.approx(1 / 3)
    assert out["all"]["hit10"] == pytest.approx(2 / 3)
    assert out["pedestrian"]["n_queries"] == 1 and out["vehicle"]["n_queries"] == 2
    assert out["vehicle"]["hit10"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- order check

def test_text_order_check():
    metrics.check_text_order(["a ", "b"], ["a", "b"])  # surrounding spaces are ignored
    with pytest.raises(metrics.TextOrderError, match="text 0 differs"):
        metrics.check_text_order(["b", "a"], ["a", "b"])
    with pytest.raises(metrics.TextOrderError, match="2 texts, the ground truth 3"):
        metrics.check_text_order(["a", "b"], ["a", "b", "c"])


# --------------------------------------------------------------------------- relevance

PED = {"gender": "female", "bag": "backpack", "hat": "no"}


def test_inclusion_pedestrian():
    assert metrics.is_relevant({"gender": "female", "bag": "backpack"}, PED)
    assert not metrics.is_relevant({"gender": "female", "bag": "shoulder"}, PED)
    assert not metrics.is_relevant({}, PED)  # a caption that states nothing matches nothing


def test_inclusion_vehicle_partial_labels():
    labelled = {"color": "white", "brand": "Audi", "type": None}
    assert metrics.is_relevant({"color": "white", "brand": "Audi"}, labelled)
    # an unlabelled group never matches a stated one
    assert not metrics.is_relevant({"color": "white", "brand": "Audi", "type": "Sedan"}, labelled)
    full = {"color": "white", "brand": "Audi", "type": "Sedan"}
    assert metrics.is_relevant(full, full)
    assert not metrics.is_relevant(full, {**full, "type": "SUV"})


def test_label_equality():
    q = {"color": "white", "brand": "Audi", "type": None}
    assert metrics.is_relevant({}, dict(q), q, rule="label")
    assert not metrics.is_relevant({}, {**q, "type": "Sedan"}, q, rule="label")
    with pytest.raises(ValueError, match="unknown relevance"):
        metrics.is_relevant({}, q, q, rule="nope")


def test_relevant_sets_matches_the_scalar_rule():
    rng = np.random.default_rng(1)
    colours, brands = ["white", "black"], ["Audi", "BMW", None]
    gallery = {f"g{i}": {"color": rng.choice(colours), "brand": brands[rng.integers(3)], "type": None}
               for i in range(40)}
    stated = [{"color": c, **({"brand": b} if b else {})} for c in colours for b in brands]
    qlabels = [{"color": s["color"], "brand": s.get("brand"), "type": None} for s in stated]
    for rule in ("inclusion", "label"):
        fast = metrics.relevant_sets(stated, gallery, qlabels, rule=rule)
        for s, q, got in zip(stated, qlabels, fast):
            want = {n for n, lab in gallery.items() if metrics.is_relevant(
                s, lab, {k: v for k, v in q.items() if v is not None}, rule)}
            assert got == want


# --------------------------------------------------------------------------- classifiers

def test_group_accuracy_and_mA():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.5, 0.5]])
    labels = np.array([0, 0, 1, 1, -1])  # last row unlabelled
    res = metrics.group_accuracy(probs, labels, 2)
    assert res["n"] == 4
    assert res["accuracy"] == pytest.approx(0.75)
    assert res["mA"] == pytest.approx((1.0 + 0.5) / 2)


def test_label_indices():
    g = schema.group("color")
    assert metrics.label_indices(["black", None, "yellow"], g).tolist() == [0, -1, 10]
