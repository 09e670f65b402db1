"""Unit tests of the train stage's pieces: freezing, crops, masked loss, cache, class weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import schema
from pipeline.train import cache as cache_mod
from pipeline.train.data import MISSING, class_weights, crop_box, crop_of, load_domain, load_views
from pipeline.train.loop import cosine_with_warmup
from pipeline.train.model import SubtaskNet, make_head, masked_cross_entropy
from pipeline.train.pseudo import fill_missing
from tests.code.test_train_support import TinyNet, make_prepared, split_backbone

BOXES = {"full": [0, 1, 0, 1], "top": [0, 0.5, 0, 1], "middle": [0.2, 0.75, 0.05, 0.95],
         "bottom": [0.45, 1, 0, 1]}


# --------------------------------------------------------------------------- freezing

@pytest.mark.parametrize("trainable,frozen,total", [(2, 2, 4), ("full", 0, 4), ("linear", 4, 4)])
def test_split_freezes_prefix_only(trainable, frozen, total):
    prefix, tail = split_backbone(TinyNet(), trainable)
    assert not any(p.requires_grad for p in prefix.parameters())
    assert all(p.requires_grad for p in tail.parameters())
    assert sum(1 for m in prefix.modules() if isinstance(m, torch.nn.Conv2d)) == frozen
    assert sum(1 for m in tail.modules() if isinstance(m, torch.nn.Conv2d)) == total - frozen


def test_real_backbones_freeze_the_last_n_blocks():
    backbones = pytest.importorskip("pipeline.backbones", reason="pipeline/backbones.py not written yet")
    for name in ("tf_efficientnet_lite0", "mobilenetv2_100"):
        model = backbones.create_backbone(name, pretrained=False)
        prefix, tail = backbones.split_backbone(model, 2)
        assert not any(p.requires_grad for p in prefix.parameters())
        assert not prefix.training
        assert any(p.requires_grad for p in tail.parameters())
        x = torch.randn(2, 3, 64, 32)
        model.eval(), tail.eval()
        torch.testing.assert_close(tail(prefix(x)), model(x))


def test_training_the_tail_leaves_the_frozen_prefix_untouched(tmp_path):
    from pipeline.train.loop import FitConfig, fit

    prefix, tail = split_backbone(TinyNet(), 1)
    before = {k: v.clone() for k, v in prefix.state_dict().items()}
    px = np.random.default_rng(0).integers(0, 255, (12, 3, 16, 8), dtype=np.uint8)
    src = cache_mod.FeatureSource(prefix, (0.5,) * 3, (0.25,) * 3)
    src.features = lambda crop, flip, idx: src.run_prefix(px[np.asarray(idx)], flip)
    net = SubtaskNet(tail, {"g": make_head(8, 2, 0.0)})
    tail_before = [p.clone() for p in tail.parameters()]
    fit(net, src, "full", np.arange(12), np.arange(12)[:, None] % 2, [None],
        FitConfig(epochs=1, batch_size=4, lr=1e-2, weight_decay=0, warmup_frac=0, seed=0),
        checkpoint=tmp_path / "c.pt")
    assert not prefix.training
    for k, v in prefix.state_dict().items():  # BN running stats included
        torch.testing.assert_close(v, before[k])
    assert any(not torch.equal(a, b) for a, b in zip(tail_before, tail.parameters()))


# --------------------------------------------------------------------------- crops

def test_crop_per_group_defaults_to_full():
    crops = {"hat": "top", "skirt": "bottom"}
    assert crop_of("hat", crops) == "top"
    assert crop_of("skirt", crops) == "bottom"
    assert crop_of("gender", crops) == "full"


def test_crop_box_validates():
    assert crop_box("top", BOXES) == (0, 0.5, 0, 1)
    with pytest.raises(ValueError, match="unknown crop 'waist'"):
        crop_box("waist", BOXES)
    with pytest.raises(ValueError, match="fractions"):
        crop_box("bad", {"bad": [0.6, 0.5, 0, 1]})


def test_views_cut_the_right_region(tmp_path):
    from PIL import Image

    img = np.zeros((40, 20, 3), np.uint8)
    img[:20, :, 0] = 255   # top half red
    img[20:, :, 2] = 255   # bottom half blue
    Image.fromarray(img).save(tmp_path / "p.png")
    boxes = {c: crop_box(c, BOXES) for c in ("full", "top", "bottom")}
    v = load_views(tmp_path / "p.png", boxes, (16, 8), "nearest")
    assert v["top"].shape == (3, 16, 8)
    assert (v["top"][0] == 255).all() and (v["top"][2] == 0).all()
    assert (v["bottom"][2, 4:] == 255).all() and (v["bottom"][0, 4:] == 0).all()
    assert (v["full"][0, :8] == 255).all() and (v["full"][2, 8:] == 255).all()


# --------------------------------------------------------------------------- masked loss

def test_keep_aspect_letterboxes_instead_of_stretching(tmp_path):
    """The router's view keeps the shape: a portrait crop gets grey bars left and right."""
    from PIL import Image

    path = tmp_path / "portrait.jpg"
    Image.new("RGB", (20, 60), (250, 10, 10)).save(path, quality=95)
    full = {"full": (0.0, 1.0, 0.0, 1.0)}
    boxed = load_views(path, full, (32, 32), keep_aspect=True)["full"]
    stretched = load_views(path, full, (32, 32))["full"]
    assert boxed.shape == stretched.shape == (3, 32, 32)
    assert np.all(np.abs(boxed[:, :, :3].astype(int) - 128) <= 1)  # padding at the sides
    assert boxed[0, 16, 16] > 200 and boxed[1, 16, 16] < 60  # the red object in the middle
    assert stretched[0, :, 0].min() > 200  # stretching fills the width with the object


def test_masked_loss_ignores_missing_labels_and_their_gradient():
    logits = torch.randn(5, 3, requires_grad=True)
    target = torch.tensor([0, MISSING, 2, MISSING, 1])
    loss = masked_cross_entropy(logits, target)
    keep = target != MISSING
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits[keep], target[keep]))
    loss.backward()
    assert torch.all(logits.grad[~keep] == 0)
    assert torch.all(logits.grad[keep].abs().sum(1) > 0)


def test_masked_loss_all_missing_is_zero_and_differentiable():
    logits = torch.randn(3, 4, requires_grad=True)
    loss = masked_cross_entropy(logits, torch.full((3,), MISSING))
    loss.backward()
    assert float(loss.detach()) == 0 and torch.all(logits.grad == 0)


def test_masked_loss_weighted_matches_torch():
    logits = torch.randn(6, 2)
    target = torch.tensor([0, 1, 1, MISSING, 1, 1])
    w = torch.tensor([3.0, 1.0])
    keep = target != MISSING
    torch.testing.assert_close(masked_cross_entropy(logits, target, w),
                               torch.nn.functional.cross_entropy(logits[keep], target[keep], weight=w))


# --------------------------------------------------------------------------- class weights

def test_class_weights_lift_rare_classes():
    y = np.array([0] * 96 + [1] * 4 + [MISSING] * 10)
    w = class_weights(y, 3, 1.0)
    np.testing.assert_allclose(w, [100 / (2 * 96), 100 / (2 * 4), 0.0], rtol=1e-6)
    np.testing.assert_allclose(class_weights(y, 3, 0.5), np.sqrt(w))
    np.testing.assert_allclose(class_weights(y, 3, 0.0), [1, 1, 0])


# --------------------------------------------------------------------------- the cache

@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_imgs")
    prepared = make_prepared(root, n_ped=10, n_veh=6, n_val=4, n_test=4)
    import pandas as pd
    return list(pd.read_parquet(prepared / "images.parquet")["path"])


@pytest.mark.parametrize("mode", ["memory", "disk", "off"])
def test_cache_features_equal_a_direct_forward(mode, tiny_images, tmp_path):
    prefix, _ = split_backbone(TinyNet(), 2)
    boxes = {c: crop_box(c, BOXES) for c in ("full", "top")}
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    src = cache_mod.build_features(mode, prefix, tiny_images, boxes, (16, 8), mean, std,
                                   batch_size=5, workers=2, disk_dir=tmp_path)
    idx = np.array([7, 0, 3, 12])
    for crop in boxes:
        px = np.stack([load_views(tiny_images[i], {crop: boxes[crop]}, (16, 8))[crop] for i in idx])
        x = (torch.from_numpy(px).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        with torch.no_grad():
            direct, direct_flip = prefix(x), prefix(x.flip(-1))
        torch.testing.assert_close(src.features(crop, False, idx), direct, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(src.features(crop, True, idx), direct_flip, rtol=1e-5, atol=1e-5)
        mask = torch.tensor([True, False, False, True])
        expect = torch.where(mask.view(-1, 1, 1, 1), direct_flip, direct)
        torch.testing.assert_close(src.mixed(crop, idx, mask), expect, rtol=1e-5, atol=1e-5)
    src.close()


def test_cache_runs_the_prefix_once_per_image_and_view(tiny_images):
    prefix, _ = split_backbone(TinyNet(), 2)
    boxes = {c: crop_box(c, BOXES) for c in ("full", "top", "bottom")}
    src = cache_mod.build_features("memory", prefix, tiny_images, boxes, (16, 8), (0.5,) * 3, (0.25,) * 3)
    n = src.prefix_images
    for _ in range(3):
        src.features("top", True, np.arange(5))
    assert n == len(tiny_images) * 3 * 2 and src.prefix_images == n


def test_cache_flips_only_the_rows_asked_for(tiny_images):
    prefix, _ = split_backbone(TinyNet(), 2)
    src = cache_mod.build_features("memory", prefix, tiny_images, {"full": (0, 1, 0, 1)}, (16, 8),
                                   (0.5,) * 3, (0.25,) * 3, flip_rows=np.array([1, 2]))
    assert src.prefix_images == len(tiny_images) + 2
    assert src.features("full", True, np.array([2, 1])).shape[0] == 2
    with pytest.raises(ValueError, match="flipped features requested"):
        src.features("full", True, np.array([0, 1]))


def test_unknown_cache_mode_fails():
    with pytest.raises(ValueError, match="unknown cache mode 'fast'"):
        cache_mod.build_features("fast", None, [], {}, (8, 8), (0,) * 3, (1,) * 3)


# --------------------------------------------------------------------------- tables -> labels

def test_load_domain_labels(tmp_path):
    prepared = make_prepared(tmp_path, n_ped=6, n_veh=6, n_val=4, n_test=2)
    veh = load_domain(prepared, "vehicle")
    train = veh.index("train")
    assert len(train) == 6 and len(veh.index("val")) == 4 and len(veh.index("test")) == 2
    y = veh.labels[train]
    # every training vehicle has either colour + brand or type, never all three
    assert ((y[:, 0] != MISSING) == (y[:, 2] != MISSING)).all()
    assert ((y[:, 0] != MISSING) ^ (y[:, 1] != MISSING)).all()
    val_ped = veh.index("val")[np.char.startswith(veh.names[veh.index("val")].astype(str), "1")]
    assert (veh.labels[val_ped] == MISSING).all()
    assert (veh.labels[veh.index("test")] == MISSING).all()
    ped = load_domain(prepared, "pedestrian")
    assert ped.labels.shape[1] == len(schema.PEDESTRIAN_GROUPS)
    assert (ped.labels[ped.index("train")] >= 0).all()
    router = load_domain(prepared, "router")
    assert len(router.index("train")) == 12
    assert set(router.labels[router.index("train"), 0]) == {0, 1}


def test_load_domain_fails_clearly_without_tables(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the ingest stage"):
        load_domain(tmp_path, "pedestrian")
    with pytest.raises(ValueError, match="unknown domain"):
        load_domain(tmp_path, "bicycle")


# --------------------------------------------------------------------------- schedule, pseudo-labels

def test_cosine_schedule_warms_up_then_decays():
    f = cosine_with_warmup(100, 10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)


def test_pseudo_labels_fill_only_confident_missing_entries():
    groups = schema.VEHICLE_GROUPS[:2]
    labels = np.array([[3, MISSING], [MISSING, 2], [MISSING, MISSING]])
    k0, k1 = groups[0].n_classes, groups[1].n_classes
    p0 = np.full((3, k0), 0.01); p0[:, 5] = 0.95
    p1 = np.full((3, k1), 0.1); p1[:, 1] = 0.5
    out, added = fill_missing(labels, {"color": p0, "type": p1}, groups, {"color": 0.9, "type": 0.9})
    np.testing.assert_array_equal(out, [[3, MISSING], [5, 2], [5, MISSING]])
    assert added == {"color": 2, "type": 0}


# --------------------------------------------------------------------------- CLI

def test_cli_rejects_unknown_domain_and_backbone(monkeypatch):
    from typer.testing import CliRunner

    from pipeline.cli import app
    from tests.code.test_train_support import install_fake_backbones

    install_fake_backbones(monkeypatch)
    runner = CliRunner()
    files = ["--prepared", "p", "--gate", "g.json", "--models", "m", "--predictions", "q", "--report", "r.json",
             "--checkpoints", "c"]
    res = runner.invoke(app, ["train", "--domain", "bicycle", "--backbone", "tiny_cnn", *files])
    assert res.exit_code == 2 and "unknown domain 'bicycle'" in res.output
    res = runner.invoke(app, ["train", "--domain", "vehicle", "--backbone", "resnet9000", *files])
    assert res.exit_code == 2 and "unknown backbone 'resnet9000'" in res.output
