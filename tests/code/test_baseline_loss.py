"""The baseline's pure parts: multi-positive targets and loss, the answer paths, the paraphrases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.baseline import combine  # noqa: E402
from pipeline.baseline.model import multi_positive_infonce, positives  # noqa: E402

MISSING = -1


def _t(x, dtype=torch.long):
    return torch.as_tensor(np.asarray(x), dtype=dtype)


# --------------------------------------------------------------------------- positives


def test_identical_labels_are_positives_of_each_other():
    labels = _t([[0, 1], [0, 1], [1, 1]])
    stated = _t([[True, True]] * 3, torch.bool)
    domain = _t([0, 0, 0])
    pos = positives(labels, labels, stated, domain, domain)
    assert pos.tolist() == [[True, True, False], [True, True, False], [False, False, True]]


def test_a_caption_stating_less_has_more_positives():
    # Caption 1 states only group 0: image 0 (same group 0, other group 1) is its positive too,
    # but caption 0 (states both) does not accept image 1.
    labels = _t([[0, 0], [0, 1]])
    stated = _t([[True, True], [True, False]], torch.bool)
    domain = _t([0, 0])
    pos = positives(labels, labels, stated, domain, domain)
    assert pos.tolist() == [[True, True], [False, True]]


def test_an_unlabelled_group_is_no_match_and_domains_never_mix():
    # Vehicle val labels are partial: image 1 has no colour, so it cannot be a positive of a colour
    # caption; image 2 has the same values but is of the other domain.
    labels = _t([[3, MISSING], [MISSING, 2], [3, MISSING]])
    stated = _t([[True, False], [False, True], [True, False]], torch.bool)
    domain = _t([1, 1, 0])
    pos = positives(labels, labels, stated, domain, domain)
    assert pos[:, 0].tolist() == [True, False, False]
    assert pos[:, 2].tolist() == [False, False, True]


def test_a_caption_stating_nothing_keeps_only_its_own_image():
    labels = _t([[0], [0], [0]])
    stated = _t([[True], [False], [True]], torch.bool)
    domain = _t([0, 0, 0])
    pos = positives(labels, labels, stated, domain, domain)
    assert pos[:, 1].tolist() == [False, True, False]
    assert pos[:, 0].tolist() == [True, True, True]  # image 1 carries what caption 0 states


# --------------------------------------------------------------------------- the loss


def test_with_the_identity_it_is_clips_loss():
    from open_clip.loss import ClipLoss

    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    ours = multi_positive_infonce(scale * img @ txt.T, torch.eye(6, dtype=torch.bool))
    theirs = ClipLoss()(img, txt, scale)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-6)


def test_hand_computed_two_positives():
    # One image, two captions, both positive: the target is uniform over them.
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    pos = torch.tensor([[True, True, False], [False, True, False]])
    ls_i0 = torch.log_softmax(logits[0], 0)
    ls_i1 = torch.log_softmax(logits[1], 0)
    loss_i = (-(ls_i0[0] + ls_i0[1]) / 2 - ls_i1[1]) / 2
    ls_t = torch.log_softmax(logits, 0)
    loss_t = (-ls_t[0, 0] - (ls_t[0, 1] + ls_t[1, 1]) / 2) / 2  # caption 2 has no positive: left out
    expected = (loss_i + loss_t) / 2
    assert float(multi_positive_infonce(logits, pos)) == pytest.approx(float(expected), rel=1e-6)


def test_duplicates_are_not_pushed_apart():
    # Two pairs with equal labels: scoring both captions alike for both images is the optimum of
    # the multi-positive loss, while the diagonal loss would still push them apart.
    same = torch.tensor([[5.0, 5.0], [5.0, 5.0]])
    apart = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])
    pos = torch.ones(2, 2, dtype=torch.bool)
    assert float(multi_positive_infonce(same, pos)) < float(multi_positive_infonce(apart, pos))
    assert float(multi_positive_infonce(same, pos)) == pytest.approx(math.log(2), rel=1e-6)
    eye = torch.eye(2, dtype=torch.bool)
    assert float(multi_positive_infonce(apart, eye)) < float(multi_positive_infonce(same, eye))


def test_gradient_pulls_positives_together():
    logits = torch.zeros(3, 3, requires_grad=True)
    pos = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    multi_positive_infonce(logits, pos).backward()
    assert (logits.grad[pos] < 0).all() and (logits.grad[~pos] > 0).all()


# --------------------------------------------------------------------------- paths


def _words(known=(), unknown=()):
    return combine.Words(tuple(known), tuple(unknown))


@pytest.mark.parametrize("words, parsed, attrs, de, sim, mode, expected", [
    (_words(), "unknown", False, "pedestrian", 0.9, "fusion", ("none", "unknown")),           # empty / punctuation
    (_words(["female"]), "pedestrian", True, None, None, "fusion", ("decoupled", "pedestrian")),
    # domain arbitration: the mapping read a colour (vehicle), the dual encoder says person and
    # nothing of a person was read -> its similarity alone; with a person attribute read -> fusion
    (_words(["red", "dress"], ["lady"]), "vehicle", False, "pedestrian", 0.6, "fusion",
     ("dual_encoder", "pedestrian")),
    (_words(["red", "dress"], ["lady"]), "vehicle", True, "pedestrian", 0.6, "fusion", ("fusion", "pedestrian")),
    (_words(["backpack"], ["lady"]), "pedestrian", True, "pedestrian", 0.6, "fusion", ("fusion", "pedestrian")),
    (_words(["backpack"], ["lady"]), "pedestrian", True, "pedestrian", 0.6, "fallback",
     ("dual_encoder", "pedestrian")),
    (_words([], ["gal", "knapsack"]), "unknown", False, "pedestrian", 0.5, "fusion", ("dual_encoder", "pedestrian")),
    (_words([], ["une", "femme"]), "unknown", False, "pedestrian", 0.1, "fusion", ("none", "unknown")),  # foreign
    (_words([], ["lady"]), "unknown", False, None, None, "fusion", ("none", "unknown")),       # no dual encoder
])
def test_decide(words, parsed, attrs, de, sim, mode, expected):
    assert combine.decide(words, parsed, attrs, de, sim, mode, 0.3) == expected


def test_decide_answers_a_far_caption_that_names_values_exactly():
    """ "Bloke in profile, with specs on": no training word, far from every training caption, but
    the thesaurus names three values - answered, not "no attribute understood"."""
    words = _words([], ["bloke", "profile", "specs"])
    assert combine.decide(words, "pedestrian", True, "pedestrian", 0.1, "fusion", 0.3) == ("none", "unknown")
    assert combine.decide(words, "pedestrian", True, "pedestrian", 0.1, "fusion", 0.3, named=True) == \
        ("fusion", "pedestrian")
    assert combine.decide(_words([], ["une", "femme"]), "unknown", False, "pedestrian", 0.1, "fusion", 0.3,
                          named=False) == ("none", "unknown")


def test_words_of_drops_function_words_digits_and_odd_input():
    w = combine.words_of("A lady, 18-60, in a RED dress!", frozenset({"red", "dress"}))
    assert w.known == ("red", "dress") and w.unknown == ("lady",)
    assert combine.words_of(None, frozenset()).content == ()
    assert combine.words_of("?!. ..", frozenset()).content == ()


def test_reference_nearest_votes_the_domain():
    from pipeline.baseline.encoder import Reference

    emb = np.eye(4, dtype=np.float32)
    ref = Reference(emb, np.array(["pedestrian", "pedestrian", "vehicle", "vehicle"]))
    best, dom = ref.nearest(np.array([[0.9, 0.1, 0.0, 0.0], [0.0, 0.0, 0.2, 0.1]], np.float32))
    assert dom == ["pedestrian", "vehicle"] and best.tolist() == pytest.approx([0.9, 0.2])
    best, dom = Reference(np.zeros((0, 4), np.float32), np.array([], str)).nearest(emb[:1])
    assert dom == ["unknown"] and best[0] < 0


def test_domain_vote_and_top():
    sims = np.array([0.1, 0.9, 0.2, 0.3, 0.8])
    dom = np.array(["pedestrian", "vehicle", "pedestrian", "pedestrian", "vehicle"])
    assert combine.domain_vote(sims, dom) == "vehicle"
    assert combine.top(np.array([0.5, 0.9, 0.5, 0.1]), 3).tolist() == [1, 0, 2]  # ties in gallery order


class _Parsed:
    def __init__(self, domain, attributes):
        self.domain, self.attributes = domain, attributes


def _index():
    from pipeline import schema
    from pipeline.rank import GalleryIndex

    rng = np.random.default_rng(0)
    names = np.array(["p1", "p2", "p3", "v1", "v2"])
    dom = np.array(["pedestrian"] * 3 + ["vehicle"] * 2)
    probs = {d: rng.random((int((dom == d).sum()), sum(g.n_classes for g in schema.GROUPS_BY_DOMAIN[d])))
             .astype(np.float32) for d in schema.DOMAINS}
    return GalleryIndex(names, dom, probs)


class _Encoder:
    """Caption -> fixed embeddings: 'lady' points at image p3 and the pedestrian training caption,
    'car' at image v1 and the vehicle one, anything else at v1 and at no training caption."""

    def encode(self, captions):
        joint = np.array([[0, 0, 1, 0, 0] if "lady" in c else [0, 0, 0, 1, 0] for c in captions], np.float32)
        raw = np.array([[1, 0, 0] if "lady" in c else [0, 1, 0] if "car" in c else [0, 0, 1] for c in captions],
                       np.float32)
        return joint, raw


def _fallback(mode="fusion"):
    from pipeline.baseline.encoder import Reference

    emb = dict(zip(["p1", "p2", "p3", "v1", "v2"], np.eye(5, dtype=np.float32)))
    ref = Reference(np.array([[1, 0, 0], [0, 1, 0]], np.float32), np.array(["pedestrian", "vehicle"]))
    return combine.Fallback(_Encoder(), emb, ["red", "dress", "female", "white"], ref, mode, 0.5, 0.3)


def test_answer_without_fallback_says_none_instead_of_a_silent_list():
    from pipeline.rank import rank

    index = _index()
    caps = ["", "A female pedestrian.", "una mujer"]
    parsed = [_Parsed("unknown", {}), _Parsed("pedestrian", {"gender": "female"}), _Parsed("unknown", {})]
    r = rank(index, [(p.domain, p.attributes) for p in parsed], form="paper", k=2)
    out = combine.answer(caps, parsed, r, index, "paper", 2)
    assert out["path"] == ["none", "decoupled", "none"]
    assert out["image_names"][0] == [] and out["distances"][2] == []
    assert out["image_names"][1] == r.names[1]
    assert [json.loads(a) for a in out["attributes"]] == [{}, {"gender": "female"}, {}]


def test_answer_with_fallback_arbitrates_the_domain():
    from pipeline.rank import rank

    index = _index()
    caps = ["a lady in a red dress", "a white car", "zzz qqq"]
    parsed = [_Parsed("vehicle", {"color": "red"}), _Parsed("vehicle", {"color": "white"}), _Parsed("unknown", {})]
    r = rank(index, [(p.domain, p.attributes) for p in parsed], form="paper", k=2)
    out = combine.answer(caps, parsed, r, index, "paper", 2, _fallback())
    assert out["path"][0] == "dual_encoder" and out["domain"][0] == "pedestrian"
    assert out["image_names"][0][0] == "p3" and set(out["image_names"][0]) <= {"p1", "p2", "p3"}
    assert out["distances"][0][0] == pytest.approx(0.0)
    assert out["path"][1] == "fusion" and out["domain"][1] == "vehicle"  # "car" unknown, domain agrees
    assert out["path"][2] == "none" and out["image_names"][2] == []      # unknown words, far from every caption


class _Reader:
    """Reads "lady" as female (what the MiniLM reader does, without MiniLM)."""

    def read(self, captions, stated, domains):
        return [{**s, **({"gender": "female"} if "lady" in c and d == "pedestrian" else {})}
                for c, s, d in zip(captions, stated, domains)]


def test_answer_ranks_what_the_reader_read_in_the_domain_the_dual_encoder_picked():
    from pipeline.rank import distances, query_vectors, rank

    index = _index()
    caps = ["a lady in a red dress", "a white car"]
    parsed = [_Parsed("vehicle", {"color": "red"}), _Parsed("vehicle", {"color": "white"})]
    r = rank(index, [(p.domain, p.attributes) for p in parsed], form="paper", k=3)
    fb = _fallback()
    fb.reader, fb.fusion_weight = _Reader(), 0.0  # weight 0: the decoupled distance of what was read
    out = combine.answer(caps, parsed, r, index, "paper", 3, fb)
    assert out["path"] == ["fusion", "fusion"] and out["domain"] == ["pedestrian", "vehicle"]
    assert [json.loads(a) for a in out["attributes"]] == [{"gender": "female"}, {"color": "white"}]
    groups = combine.schema.GROUPS_BY_DOMAIN["pedestrian"]
    onehot, mask = query_vectors([{"gender": "female"}], groups)  # the colour is not a person's
    d = distances(onehot, mask, index.probs["pedestrian"], groups, "paper")[0]
    assert out["image_names"][0] == index.names[:3][np.lexsort((np.arange(3), d))].tolist()


# --------------------------------------------------------------------------- paraphrases


def test_paraphrases_are_seeded_and_use_other_words():
    from pipeline.baseline.paraphrase import paraphrase

    attrs = {"gender": "female", "age": "under18", "orientation": "back", "bag": "backpack", "sleeve": "short"}
    a, b = paraphrase("pedestrian", attrs, 3), paraphrase("pedestrian", attrs, 3)
    assert a == b
    words = set(a.lower().replace(",", " ").replace(".", " ").split())
    assert not words & {"female", "pedestrian", "backpack", "sleeve", "sleeves"}
    v = paraphrase("vehicle", {"color": "grey", "brand": "Volkswagen", "type": "Sedan"}, 1)
    assert "VW" in v and "sedan" not in v.lower()
    with pytest.raises(ValueError):
        paraphrase("unknown", {}, 0)
