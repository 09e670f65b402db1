"""Ranking: distance forms on hand-checked matrices, chunked top-k, ensemble, routing, submission."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import rank, retrieve, schema

GENDER, BAG, AGE = schema.group("gender"), schema.group("bag"), schema.group("age")


# --------------------------------------------------------------------------- distance forms

def test_distance_forms_hand_checked():
    groups = (GENDER, BAG)  # dims: female, male | shoulder, backpack, none
    probs = np.array([[0.8, 0.2, 0.1, 0.6, 0.3],
                      [0.3, 0.7, 0.5, 0.1, 0.4]], dtype=np.float32)
    onehot, mask = rank.query_vectors([{"gender": "female"}, {"gender": "female", "bag": "backpack"}], groups)
    assert onehot.tolist()[1] == [1, 0, 0, 1, 0] and mask.tolist()[0] == [1, 1, 0, 0, 0]
    pub = rank.distances(onehot, mask, probs, groups, "published")
    np.testing.assert_allclose(pub, [[0.2, 0.7], [0.2 + 0.4, 0.7 + 0.9]], atol=1e-6)
    paper = rank.distances(onehot, mask, probs, groups, "paper")
    np.testing.assert_allclose(paper, [[0.08, 0.98], [0.08 + 0.01 + 0.16 + 0.09, 0.98 + 0.25 + 0.81 + 0.16]],
                               atol=1e-6)
    # full: unstated bag targets its absent class "none" = [0, 0, 1]
    full = rank.distances(onehot, mask, probs, groups, "full")
    np.testing.assert_allclose(full[0], [0.08 + 0.01 + 0.36 + 0.49, 0.98 + 0.25 + 0.01 + 0.36], atol=1e-6)


def test_full_form_zero_target_for_groups_without_an_absent_class():
    groups = (GENDER, AGE)
    probs = np.array([[0.8, 0.2, 0.5, 0.3, 0.2]], dtype=np.float32)
    onehot, mask = rank.query_vectors([{"gender": "female"}], groups)
    full = rank.distances(onehot, mask, probs, groups, "full")
    assert full[0, 0] == pytest.approx(0.08 + 0.25 + 0.09 + 0.04)


def test_unknown_form_and_value_fail_clearly():
    with pytest.raises(ValueError, match="unknown distance form"):
        rank.query_terms(np.zeros((1, 2)), np.zeros((1, 2)), (GENDER,), "cosine")
    with pytest.raises(KeyError, match="group 'gender'"):
        rank.query_vectors([{"gender": "robot"}], (GENDER,))


def test_groups_of_another_domain_are_ignored():
    onehot, mask = rank.query_vectors([{"gender": "female", "color": "red"}], (GENDER,))
    assert onehot.tolist() == [[1, 0]] and mask.tolist() == [[1, 1]]


# --------------------------------------------------------------------------- chunked top-k

@pytest.mark.parametrize("form", rank.FORMS)
@pytest.mark.parametrize("chunk, block", [(7, 5), (64, 1024), (10_000, 3)])
def test_chunked_top_k_equals_brute_force(form, chunk, block):
    rng = np.random.default_rng(0)
    groups = schema.PEDESTRIAN_GROUPS
    probs = rng.random((300, sum(g.n_classes for g in groups))).astype(np.float32)
    attrs = [{g.name: g.values[rng.integers(g.n_classes)] for g in groups if rng.random() < 0.4}
             for _ in range(23)]
    onehot, mask = rank.query_vectors(attrs, groups)
    a, c = rank.query_terms(onehot, mask, groups, form)
    idx, dist = rank.top_k(a, c, rank.gallery_terms(probs, groups, form), k=10, chunk=chunk, query_block=block)
    full = rank.distances(onehot, mask, probs, groups, form)
    want = np.argsort(full, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(dist, np.take_along_axis(full, want, 1), rtol=1e-5, atol=1e-5)


def test_threaded_and_single_threaded_top_k_agree():
    rng = np.random.default_rng(3)
    a, c, g = rng.random((9, 8)), rng.random(9), rng.random((100, 8)).astype(np.float32)
    threaded = rank.top_k(a, c, g, k=10, chunk=13, query_block=2, workers=3)
    single = rank.top_k(a, c, g, k=10, chunk=13, workers=1)
    np.testing.assert_array_equal(threaded[0], single[0])
    np.testing.assert_allclose(threaded[1], single[1], rtol=1e-6)  # generic floats: BLAS may round by shape


def test_top_k_smaller_gallery_than_k():
    idx, dist = rank.top_k(np.ones((2, 4)), np.zeros(2), np.ones((3, 4), np.float32), k=10)
    assert idx.shape == (2, 3) and dist.shape == (2, 3)
    assert idx.tolist() == [[0, 1, 2], [0, 1, 2]]  # equal distances: gallery order


# --------------------------------------------------------------------------- ensemble + routing

def _table(names, cols, values):
    return pd.DataFrame(values, index=pd.Index(names, name="name"), columns=cols)


def test_ensemble_weighted_average():
    cols = schema.prob_columns([GENDER])
    a = _table(["x", "y"], cols, [[1.0, 0.0], [0.5, 0.5]])
    b = _table(["y", "x"], cols, [[0.1, 0.9], [0.0, 1.0]])  # other row order
    out = retrieve.ensemble({"a": a, "b": b}, {"a": 3.0, "b": 1.0})
    np.testing.assert_allclose(out.loc["x"].to_numpy(), [0.75, 0.25])
    np.testing.assert_allclose(out.loc["y"].to_numpy(), [0.4, 0.6])


def test_ensemble_refuses_members_with_different_images():
    cols = schema.prob_columns([GENDER])
    with pytest.raises(retrieve.RetrieveError, match="predict different images"):
        retrieve.ensemble({"a": _table(["x"], cols, [[1, 0]]), "b": _table(["z"], cols, [[1, 0]])},
                          {"a": 1, "b": 1})


def test_route_by_argmax():
    cols = schema.prob_columns([schema.ROUTER_GROUP])
    router = _table(["p", "v"], cols, [[0.9, 0.1], [0.2, 0.8]])
    assert retrieve.route(router).to_dict() == {"p": "pedestrian", "v": "vehicle"}


def test_rank_sends_queries_to_their_routed_gallery():
    ped_dim = sum(g.n_classes for g in schema.PEDESTRIAN_GROUPS)
    veh_dim = sum(g.n_classes for g in schema.VEHICLE_GROUPS)
    rng = np.random.default_rng(0)
    index = rank.GalleryIndex(names=np.array(["p1", "p2", "v1"]),
                              domain=np.array(["pedestrian", "pedestrian", "vehicle"]),
                              probs={"pedestrian": rng.random((2, ped_dim), dtype=np.float32),
                                     "vehicle": rng.random((1, veh_dim), dtype=np.float32)})
    r = rank.rank(index, [("vehicle", {"color": "red"}), ("pedestrian", {"gender": "male"}),
                          ("unknown", {})], k=10)
    assert r.names[0] == ["v1"]
    assert sorted(r.names[1]) == ["p1", "p2"]
    # unknown states nothing: every image is at distance 0 -> gallery order
    assert r.names[2] == ["p1", "p2", "v1"] and r.distances[2] == [0.0, 0.0, 0.0]
    assert r.domain == ["vehicle", "pedestrian", "unknown"]


def test_gallery_index_round_trip(tmp_path):
    index = rank.GalleryIndex(np.array(["a", "b"]), np.array(["pedestrian", "vehicle"]),
                              {"pedestrian": np.ones((1, 30), np.float32),
                               "vehicle": np.zeros((1, 82), np.float32)})
    index.save(tmp_path / "g.npz")
    back = rank.GalleryIndex.load(tmp_path / "g.npz")
    assert back.names.tolist() == ["a", "b"] and back.image_names("vehicle").tolist() == ["b"]
    np.testing.assert_array_equal(back.probs["pedestrian"], index.probs["pedestrian"])


# --------------------------------------------------------------------------- submission

def test_submission_format_order_and_padding():
    r = rank.Ranking(["vehicle", "pedestrian"], [["v1", "v2"], [f"p{i}" for i in range(12)]],
                     [[0, 0], [0] * 12])
    sub = retrieve.submission(["t1", "t2"], r, ["p0", "v1", "v2", "p1"] + [f"z{i}" for i in range(10)])
    assert [x["text"] for x in sub["results"]] == ["t1", "t2"]
    assert all(len(x["image_names"]) == 10 for x in sub["results"])
    first = sub["results"][0]["image_names"]
    assert first[:2] == ["v1", "v2"] and len(set(first)) == 10  # padded with distinct gallery names


def test_read_gt(tmp_path):
    (tmp_path / "gt.txt").write_text("a text$x.jpg$y.jpg\nanother$z.jpg\n")
    texts, rel = retrieve.read_gt(tmp_path / "gt.txt")
    assert texts == ["a text", "another"] and rel == [{"x.jpg", "y.jpg"}, {"z.jpg"}]
