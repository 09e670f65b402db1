"""``train.batched_tails``: the subtask tails of a domain stacked and trained in one pass
(pipeline/train/batched.py) train the same nets as the per-subtask path, save/load/predict the
same way, and resume after an interrupt to the weights of an uninterrupted batched run.

Equivalence is checked three ways: each stacked shipped tail against its own tail (flat layout
and vmap: output, gradients, BatchNorm statistics); ``fit_group`` against ``fit`` on a tail
without a bias before its BatchNorm (as the real EfficientNet/MobileNet tails: their
convolutions have no bias), where only the order of float sums differs (measured max |weight
diff| 1.2e-7 after 3 epochs with dropout 0.5; allowed 1e-5); and the whole stage on the smoke
setup, whose stand-in backbone has convolution biases before BatchNorm - gradients that are zero
up to rounding, which Adam's first steps blow up to ~lr, so weights differ by up to ~0.03 there
and the val figures are compared with a tolerance (measured: 11 of 12 subtasks equal, one 0.125
apart in accuracy on 8 val images).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline.train.cache import FeatureSource
from pipeline.train.loop import EpochBudget, FitConfig, Interrupted, fit
from tests.code.test_train_support import TINY
from tests.model.test_train_run import env, run_train, tiny_params  # noqa: F401  (env: fixture)

pytestmark = pytest.mark.slow

WEIGHT_ATOL = 1e-5  # fit_group vs fit, float-order only: measured 1.2e-7
VAL_TOL = 0.25      # smoke stage, mean |val acc / mA diff| over 12 subtasks on 8-16 val images


class _Features(FeatureSource):
    """Fixed random features per crop (flips ignored): a cache without a prefix."""

    def __init__(self, n: int = 40):
        super().__init__(nn.Identity(), (0, 0, 0), (1, 1, 1))
        g = torch.Generator().manual_seed(0)
        self.f = {c: torch.randn(n, 8, 4, 2, generator=g) for c in ("full", "top")}

    def features(self, crop, flip, index):
        return self.f[crop][torch.as_tensor(index)]


def _members(dropout: float, epochs: int = 3):
    from pipeline.train.batched import Member
    from pipeline.train.model import SubtaskNet, make_head

    out = []
    for k, (crop, n_classes) in enumerate((("full", 3), ("top", 2), ("full", 4))):
        torch.manual_seed(k)
        # A 3x3 and a 1x1 convolution: both of StackedTails' flat-layout convolution paths.
        tail = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
        net = SubtaskNet(tail, {f"h{k}": make_head(8, n_classes, dropout)})
        y = torch.randint(0, n_classes, (36, 1), generator=torch.Generator().manual_seed(k)).numpy()
        y[::7] = -1  # partial labels: masked rows
        out.append(Member(f"s{k}", net, crop, np.arange(36), y, [None],
                          FitConfig(epochs, 8, 0.01, 1e-4, 0.1, seed=100 + k)))
    return out


def _max_diff(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


def test_fit_group_trains_each_member_as_fit_alone():
    from pipeline.train.batched import fit_group

    source = _Features()
    alone, together = _members(0.5), _members(0.5)
    with tempfile.TemporaryDirectory() as d:
        hist_alone = [fit(m.net, source, m.crop, m.index, m.targets, m.weights, m.cfg, Path(d) / f"{m.name}.pt")
                      for m in alone]
        hist_group = fit_group(together, source, Path(d) / "group.pt")
    for a, b, ha, hb in zip(alone, together, hist_alone, hist_group):
        assert _max_diff(a.net, b.net) < WEIGHT_ATOL  # BN running stats included
        np.testing.assert_allclose([r["loss"] for r in ha], [r["loss"] for r in hb], rtol=1e-5)


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "mobilenetv2_100"])
def test_stacked_tails_flat_and_vmap_equal_separate_tails(backbone):
    """The shipped tails (2 trainable units) run on the flat layout; it and the vmap fallback
    give each tail's own output, gradients and BatchNorm statistics (float order aside)."""
    from pipeline import backbones
    from pipeline.train.batched import StackedTails

    _, tail = backbones.split_backbone(backbones.create_backbone(backbone, pretrained=False), 2)
    tails = []
    for k in range(3):
        t = copy.deepcopy(tail).train()
        torch.manual_seed(k)
        with torch.no_grad():
            for p in t.parameters():
                p.add_(0.1 * torch.randn_like(p))
        tails.append(t)
    x = torch.randn(3, 4, tail[0].conv_pw.in_channels, 3, 2, generator=torch.Generator().manual_seed(0))
    ref = [copy.deepcopy(t) for t in tails]
    out = torch.stack([t(x[k]) for k, t in enumerate(ref)])
    out.square().sum().backward()
    for flat in (True, False):
        st = StackedTails(tails, flat=flat).train()
        assert st.flat == flat
        z = st(x)
        z.square().sum().backward()
        torch.testing.assert_close(z, out, rtol=1e-4, atol=1e-5)
        for i, n in enumerate(st._pnames):
            for k, t in enumerate(ref):
                ref_grad = dict(t.named_parameters())[n].grad
                torch.testing.assert_close(getattr(st, f"p{i}").grad[k], ref_grad, rtol=1e-3, atol=1e-4)
        for i, n in enumerate(st._bnames):
            for k, t in enumerate(ref):
                torch.testing.assert_close(getattr(st, f"b{i}")[k], dict(t.named_buffers())[n])


def test_stacked_tails_fall_back_to_vmap_for_other_modules():
    """A module the flat layout cannot keep per subtask (here dropout, whose draws would mix the
    subtasks' streams) sends the tail to vmap, which still computes each tail's own output."""
    from pipeline.train.batched import StackedTails

    tails = []
    for k in range(2):
        torch.manual_seed(k)
        tails.append(nn.Sequential(nn.Conv2d(4, 6, 1), nn.Dropout(0.3), nn.AdaptiveAvgPool2d(1),
                                   nn.Flatten()))
    st = StackedTails(tails).eval()
    assert not st.flat
    x = torch.randn(2, 5, 4, 3, 2)
    torch.testing.assert_close(st(x), torch.stack([t.eval()(x[k]) for k, t in enumerate(tails)]))


def test_fit_group_resume_after_interrupt_equals_uninterrupted():
    from pipeline.train.batched import fit_group

    source = _Features()
    ref, resumed = _members(0.2), _members(0.2)
    with tempfile.TemporaryDirectory() as d:
        fit_group(ref, source, Path(d) / "ref.pt")
        with pytest.raises(Interrupted):
            fit_group(resumed, source, Path(d) / "run.pt", budget=EpochBudget(2))
        again = _members(0.2)  # a fresh process: new nets, state from the checkpoint only
        hist = fit_group(again, source, Path(d) / "run.pt")
    assert [r["epoch"] for r in hist[0]] == [1, 2, 3]
    for a, b in zip(ref, again):
        assert _max_diff(a.net, b.net) == 0.0


def test_batched_stage_saves_loads_predicts_like_per_subtask(env):  # noqa: F811
    from pipeline.train.model import SubtaskNet

    per = run_train(tiny_params(env, log_models=False), env, "pedestrian", TINY, out="per-", track=False)
    bat = run_train(tiny_params(env, log_models=False, batched_tails=True), env, "pedestrian", TINY,
                    out="bat-", track=False)
    assert per["subtasks"].keys() == bat["subtasks"].keys()
    d_acc = np.mean([abs(per["subtasks"][g]["val_acc"] - bat["subtasks"][g]["val_acc"]) for g in per["subtasks"]])
    d_ma = np.mean([abs(per["subtasks"][g]["val_mA"] - bat["subtasks"][g]["val_mA"]) for g in per["subtasks"]])
    assert d_acc <= VAL_TOL and d_ma <= VAL_TOL
    # A saved batched model is an ordinary subtask model: it loads into a SubtaskNet and
    # reproduces the stage's own val predictions.
    from pipeline.train.stage import build_backbone
    from pipeline.train.model import make_head

    params = tiny_params(env, batched_tails=True)
    bb = build_backbone(params, "pedestrian", TINY)
    saved = torch.load(env / "bat-models" / "pedestrian" / TINY / "gender.pt", weights_only=False)
    assert saved["groups"] == ["gender"] and saved["crop"] == "full"
    net = SubtaskNet(bb.tail, {"gender": make_head(bb.num_features, len(saved["classes"]["gender"]), 0.2)})
    net.load_state_dict(saved["state_dict"])
    net.eval()
    from pipeline.train.cache import build_features
    from pipeline.train.data import crop_box, load_domain
    from pipeline.train.loop import predict

    data = load_domain(env / "prepared", "pedestrian")
    tp = params.train
    source = build_features("memory", bb.prefix, list(data.paths), {"full": crop_box("full", tp.crop_boxes)},
                            bb.size, *bb.norm, interpolation=bb.interpolation, workers=1)
    val = data.index("val")
    probs = predict(net, source, "full", val, tta=tp.tta_flip)["gender"]
    pred = pd.read_parquet(env / "bat-predictions" / "pedestrian" / TINY / "val.parquet")
    cols = [c for c in pred.columns if c.startswith("gender=")]
    got = pred.set_index("name").loc[data.names[val], cols].to_numpy()
    np.testing.assert_allclose(probs, got, atol=1e-5)


def test_batched_stage_resumes_to_the_uninterrupted_weights(env, monkeypatch):  # noqa: F811
    from pipeline.train.loop import STOP_ENV

    params = tiny_params(env, log_models=False, batched_tails=True, keep_checkpoints=True)
    run_train(params, env, "pedestrian", TINY, out="a-", track=False)
    # Another checkpoint root, so the interrupted run does not find the first run's checkpoints.
    monkeypatch.setenv(STOP_ENV, "1")
    import shutil

    shutil.rmtree(env / "ckpt")
    with pytest.raises(Interrupted):
        run_train(params, env, "pedestrian", TINY, out="b-", track=False)
    monkeypatch.delenv(STOP_ENV)
    run_train(params, env, "pedestrian", TINY, out="b-", track=False)
    for g in ("gender", "hat", "skirt"):
        a = torch.load(env / "a-models" / "pedestrian" / TINY / f"{g}.pt", weights_only=False)["state_dict"]
        b = torch.load(env / "b-models" / "pedestrian" / TINY / f"{g}.pt", weights_only=False)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a), g
