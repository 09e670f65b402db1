"""The ranking core: exact top-k against brute force (ties included), the term matrices, the
serving path without optional packages, and the approximate (FAISS IVF) path on a small case.

Correctness only: speed is measured by bench/bench_retrieve.py, never asserted here.
"""

from __future__ import annotations

import builtins
import sys

import numpy as np
import pytest

from pipeline import rank, schema

CONFIGS = [  # (chunk, query_block, workers): many small chunks, one padded chunk, threads, splits
    (7, 5, 1), (64, 1024, 2), (10_000, 3, 2), (4096, 1024, 2), (300, 7, 3),
]


def _probs(rng, groups, n, alpha=0.3):
    return np.hstack([rng.dirichlet(np.full(g.n_classes, alpha), n) for g in groups])


def _queries(rng, groups, n, p=0.4):
    return [{g.name: g.values[rng.integers(g.n_classes)] for g in groups if rng.random() < p}
            for _ in range(n)]


def _brute(a, c, gallery, k):
    full = c[:, None] + a @ gallery.T
    want = np.argsort(full, axis=1, kind="stable")[:, :k]  # stable: ties by gallery index
    return want, np.take_along_axis(full, want, 1)


@pytest.mark.parametrize("domain", schema.DOMAINS)
@pytest.mark.parametrize("form", rank.FORMS)
@pytest.mark.parametrize("ties", [False, True])
def test_top_k_equals_brute_force(domain, form, ties):
    rng = np.random.default_rng(hash((domain, form, ties)) % 2**32)
    groups = schema.GROUPS_BY_DOMAIN[domain]
    probs = _probs(rng, groups, 1500)
    if ties:  # duplicated images and coarse probabilities: many exactly equal distances
        probs[rng.integers(0, 1500, 700)] = probs[rng.integers(0, 1500)]
        probs = np.round(probs, 1)
    a, c = rank.query_terms(*rank.query_vectors(_queries(rng, groups, 40), groups), groups, form)
    gallery = rank.gallery_terms(probs, groups, form)
    for k in (1, 10, 25):
        want_i, want_d = _brute(a, c, gallery, k)
        for chunk, block, workers in CONFIGS:
            for cols in (None, rank.column_groups(groups, form)):  # queries reordered by groups
                idx, dist = rank.top_k(a, c, gallery, k=k, chunk=chunk, query_block=block,
                                       workers=workers, column_groups=cols)
                np.testing.assert_array_equal(idx, want_i, err_msg=f"k={k} chunk={chunk} block={block}")
                np.testing.assert_array_equal(dist, want_d)


def test_ties_straddling_the_kth_place_keep_gallery_order():
    # 5 clear winners scattered late, then 40 images all tied at the next distance.
    gallery = np.full((3000, 2), 0.5, dtype=np.float32)
    winners = [2999, 2500, 1700, 900, 64]
    gallery[winners] = [[0.1, 0.0], [0.1, 0.1], [0.2, 0.1], [0.3, 0.1], [0.3, 0.15]]
    a = np.array([[1.0, 1.0]], dtype=np.float32)
    for chunk, block, workers in CONFIGS:
        idx, dist = rank.top_k(a, np.zeros(1), gallery, k=10, chunk=chunk, query_block=block, workers=workers)
        assert idx[0].tolist() == winners + [0, 1, 2, 3, 4]
        assert dist[0, 5:].tolist() == [1.0] * 5


def test_all_tied_gallery_and_empty_queries_get_gallery_order():
    gallery = np.ones((20_000, 3), dtype=np.float32)
    a = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=np.float32)
    idx, dist = rank.top_k(a, np.array([0.0, 2.0, 0.5]), gallery, k=10, workers=2)
    assert (idx == np.arange(10)).all()
    np.testing.assert_array_equal(dist, [[2.0] * 10, [2.0] * 10, [1.5] * 10])


def test_few_queries_split_the_gallery_between_threads():
    rng = np.random.default_rng(5)
    groups = schema.PEDESTRIAN_GROUPS
    gallery = rank.gallery_terms(_probs(rng, groups, 30_000), groups, "paper")
    a, c = rank.query_terms(*rank.query_vectors(_queries(rng, groups, 2, 0.6), groups), groups, "paper")
    want_i, want_d = _brute(a, c, gallery, 10)
    idx, dist = rank.top_k(a, c, gallery, k=10, workers=4)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_array_equal(dist, want_d)


def test_gallery_terms_make_every_distance_an_exact_float32_sum():
    rng = np.random.default_rng(2)
    for domain in schema.DOMAINS:
        groups = schema.GROUPS_BY_DOMAIN[domain]
        for form in rank.FORMS:
            t = rank.gallery_terms(_probs(rng, groups, 500), groups, form)
            step = rank.term_grid(groups, form)
            assert (t >= 0).all() and (np.rint(t / step) * step == t).all()
            a, c = rank.query_terms(*rank.query_vectors(_queries(rng, groups, 50, 0.9), groups), groups, form)
            exact = a.astype(np.float64) @ t.T.astype(np.float64)
            np.testing.assert_array_equal((a @ t.T).astype(np.float64), exact)


def test_terms_match_the_distance_definitions():
    rng = np.random.default_rng(4)
    groups = schema.PEDESTRIAN_GROUPS
    probs = _probs(rng, groups, 50)
    onehot, mask = rank.query_vectors(_queries(rng, groups, 20), groups)
    full_mask = np.ones_like(mask)
    target = rank.full_targets(onehot, mask, groups)
    want = {"published": onehot.sum(1)[:, None] - onehot @ probs.T,
            "paper": ((onehot[:, None] - probs[None]) ** 2 * mask[:, None]).sum(-1),
            "full": ((target[:, None] - probs[None]) ** 2 * full_mask[:, None]).sum(-1)}
    for form, expected in want.items():
        got = rank.distances(onehot, mask, probs, groups, form)
        np.testing.assert_allclose(got, expected, atol=2 * len(groups) * rank.term_grid(groups, form))


def test_full_form_unstated_vehicle_group_targets_zero():
    # vehicle groups have no "absent" class: an unstated one costs sum p^2, not a class's distance
    groups = schema.VEHICLE_GROUPS
    assert all(rank.absent_index(g) is None for g in groups)
    assert rank.absent_index(schema.group("gender")) == 1 and rank.absent_index(schema.group("age")) is None
    rng = np.random.default_rng(6)
    probs = _probs(rng, groups, 3)
    onehot, mask = rank.query_vectors([{"color": groups[0].values[0]}], groups)
    got = rank.distances(onehot, mask, probs, groups, "full")
    c0 = groups[0].n_classes
    want = ((onehot[0, :c0] - probs[:, :c0]) ** 2).sum(1) + (probs[:, c0:] ** 2).sum(1)
    np.testing.assert_allclose(got[0], want, atol=1e-5)


def test_non_finite_or_mismatched_inputs_fail_clearly():
    with pytest.raises(ValueError, match="finite"):
        rank.top_k(np.ones((1, 2)), np.zeros(1), np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="columns"):
        rank.top_k(np.ones((1, 2)), np.zeros(1), np.ones((4, 3)))


def test_ranking_without_faiss_or_threadpoolctl(monkeypatch):
    """The served model needs numpy only: no faiss import, no threadpoolctl (one thread then)."""
    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name.split(".")[0] in ("faiss", "threadpoolctl"):
            raise ImportError(f"no module named {name!r} (blocked by the test)")
        return real_import(name, *args, **kwargs)

    for mod in ("faiss", "threadpoolctl"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.setattr(builtins, "__import__", blocked)
    rng = np.random.default_rng(7)
    groups = schema.PEDESTRIAN_GROUPS
    probs = _probs(rng, groups, 2000).astype(np.float32)
    index = rank.GalleryIndex(np.array([f"p{i}" for i in range(2000)]), np.array(["pedestrian"] * 2000),
                              {"pedestrian": probs})
    queries = _queries(rng, groups, 30)
    r = rank.rank(index, [("pedestrian", q) for q in queries], form="paper", k=10)
    a, c = rank.query_terms(*rank.query_vectors(queries, groups), groups, "paper")
    want, _ = _brute(a, c, rank.gallery_terms(probs, groups, "paper"), 10)
    assert r.names == [[f"p{i}" for i in row] for row in want]
    with pytest.raises(ImportError, match="faiss-cpu"):
        rank.ApproximateIndex(np.ones((100, 4), np.float32))


def test_approximate_index_reaches_recall_on_a_small_case():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(8)
    groups = schema.PEDESTRIAN_GROUPS
    n = 20_000
    labels = [rng.integers(g.n_classes, size=n) for g in groups]  # confident, clustered outputs
    probs = np.hstack([rng.dirichlet(np.full(g.n_classes, 0.3), n) * 0.3 + np.eye(g.n_classes)[lab] * 0.7
                       for g, lab in zip(groups, labels)])
    gallery = rank.gallery_terms(probs, groups, "paper")
    a, c = rank.query_terms(*rank.query_vectors(_queries(rng, groups, 300, 0.6), groups), groups, "paper")
    exact, exact_d = rank.top_k(a, c, gallery, k=10)
    index = rank.ApproximateIndex(gallery, nlist=64)
    nprobe, calibration_recall = index.calibrate(a[:150], c[:150], exact_d[:150], target=0.99)
    found, dist = index.search(a[150:], c[150:], k=10)
    assert calibration_recall >= 0.99 and 1 <= nprobe <= 64
    assert rank.recall_at_k(dist, exact_d[150:]) >= 0.99
    assert (np.diff(dist, axis=1) >= 0).all()  # nearest first
    everything, every_d = index.search(a, c, k=10, nprobe=64)  # every cell probed: exact
    np.testing.assert_array_equal(every_d, exact_d)
    assert rank.recall_at_k(every_d, exact_d) == 1.0


def test_recall_counts_ties_as_hits():
    exact = np.array([[0.1, 0.2, 0.2]])
    assert rank.recall_at_k(np.array([[0.1, 0.2, 0.2]]), exact) == 1.0  # other tied images
    assert rank.recall_at_k(np.array([[0.1, 0.2, 0.3]]), exact) == pytest.approx(2 / 3)
    assert rank.recall_at_k(np.array([[0.2, 0.2, np.inf]]), exact) == pytest.approx(2 / 3)
