"""Tests of the backbone registry (pipeline/backbones.py): offline ImageNet weights that reproduce
their reference models on real photos, preprocessing configs, the "last N blocks" split, and the
missing-weights error of the paper's backbones."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pipeline import backbones as B

CPU_BACKBONES = [name for name, spec in B.BACKBONES.items() if spec.cpu]
FILE_BACKBONES = [name for name, spec in B.BACKBONES.items() if not spec.cpu]


# --- real photos shipped in installed packages -------------------------------------------------

def _package_file(package: str, *parts: str) -> Path:
    mod = pytest.importorskip(package)
    path = Path(mod.__file__).parent.joinpath(*parts)
    assert path.is_file(), f"{path} missing from the installed {package}"
    return path


# Real photos shipped in installed wheels, with the ImageNet-1k class a person labels them with
# (not what any model answered) and how far down the ranking it may sit. No cat photo ships in the
# environment. Grace Hopper's portrait is hard for the smallest models (Lite0 ranks "academic
# gown" first, Lite1 "comic book"): the class must be in their top 5; the Summer Palace tower
# must be top 1.
PHOTOS = {
    # name: (package and path inside it, ImageNet class, the rank it must reach)
    "grace_hopper": (("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"), 652, 5),  # uniform
    "summer_palace": (("sklearn", "datasets", "images", "china.jpg"), 698, 1),  # palace
}


def imagenet_input(path: Path, cfg: dict) -> torch.Tensor:
    """The photo preprocessed as the backbone's own config says (timm eval transform)."""
    from timm.data import create_transform

    tf = create_transform(input_size=cfg["input_size"], interpolation=cfg["interpolation"],
                          mean=cfg["mean"], std=cfg["std"], crop_pct=cfg["crop_pct"])
    return tf(Image.open(path).convert("RGB")).unsqueeze(0)


# --- reference models: the weights' own architectures, independent of timm ---------------------

class SameConv2d(nn.Conv2d):
    """Conv with TF 'SAME' padding, as efficientnet_pytorch's Conv2dDynamicSamePadding."""

    def forward(self, x):
        (ih, iw), (kh, kw), (sh, sw) = x.shape[-2:], self.weight.shape[-2:], self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


class LiteBlock(nn.Module):
    """MBConv without SE, ReLU6, BN eps 1e-3 - efficientnet_lite_pytorch's MBConvBlock."""

    def __init__(self, k: int, s: int, e: int, i: int, o: int) -> None:
        super().__init__()
        mid, self.expand, self.skip = i * e, e != 1, s == 1 and i == o
        if self.expand:
            self._expand_conv = SameConv2d(i, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3)
        self._depthwise_conv = SameConv2d(mid, mid, k, stride=s, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self._project_conv = SameConv2d(mid, o, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(o, eps=1e-3)

    def forward(self, inputs):
        x = F.relu6(self._bn0(self._expand_conv(inputs))) if self.expand else inputs
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.skip else x


class ReferenceEfficientNetLite(nn.Module):
    """EfficientNet-Lite as in ml-illustrated/EfficientNet-Lite-PyTorch (the weights' source):
    TF block strings, width/depth scaling with stem, head and first/last stage repeats fixed."""

    STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
              (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
    SCALING = {"tf_efficientnet_lite0": (1.0, 1.0), "tf_efficientnet_lite1": (1.0, 1.1),
               "tf_efficientnet_lite2": (1.1, 1.2)}

    def __init__(self, name: str) -> None:
        super().__init__()
        width, depth = self.SCALING[name]

        def filters(c: int) -> int:
            c *= width
            new = max(8, int(c + 4) // 8 * 8)
            return int(new + 8 if new < 0.9 * c else new)

        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks = []
        for idx, (r, k, s, e, i, o) in enumerate(self.STAGES):
            first_or_last = idx in (0, len(self.STAGES) - 1)
            i = 32 if idx == 0 else filters(i)
            o = filters(o)
            r = r if first_or_last else int(math.ceil(depth * r))
            blocks += [LiteBlock(k, s, e, i, o)] + [LiteBlock(k, 1, e, o, o) for _ in range(r - 1)]
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(o, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


def reference_model(name: str) -> nn.Module:
    """The reference classifier with the packaged weights loaded strictly, by name."""
    if name == "mobilenetv2_100":
        from torchvision.models import mobilenet_v2

        model = mobilenet_v2(weights=None)
    else:
        model = ReferenceEfficientNetLite(name)
    state = torch.load(B.packaged_weights_file(name), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


# --- the registry and ImageNet weights --------------------------------------------------------

def test_registry_lists_cpu_and_paper_backbones():
    assert B.list_backbones() == list(B.BACKBONES)
    assert set(CPU_BACKBONES) == {"tf_efficientnet_lite0", "tf_efficientnet_lite1",
                                  "tf_efficientnet_lite2", "mobilenetv2_100"}
    assert set(FILE_BACKBONES) == {"EVA02-L-14", "EVA02-L-14-336", "eva02_large_patch14_448",
                                   "convnext_xxlarge"}
    with pytest.raises(KeyError, match="registered"):
        B.get_spec("resnet50")


def test_import_does_not_load_torch():
    import subprocess
    import sys

    code = "import sys, pipeline.backbones; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


@pytest.fixture(scope="module", params=CPU_BACKBONES)
def classifier_pair(request):
    """(name, timm classifier with the mapped weights, reference model with the same file)."""
    torch.manual_seed(0)
    return request.param, B.create_imagenet_classifier(request.param), reference_model(request.param)


@pytest.mark.parametrize("photo", PHOTOS)
def test_logits_equal_reference_on_real_photo(classifier_pair, photo):
    name, model, reference = classifier_pair
    parts, label, top_k = PHOTOS[photo]
    x = imagenet_input(_package_file(parts[0], *parts[1:]), B.data_config(name))
    with torch.no_grad():
        logits, expected = model(x), reference(x)
    assert logits.shape == (1, 1000)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    ranking = logits[0].argsort(descending=True).tolist()
    assert label in ranking[:top_k], f"{name}: class {label} ranked {ranking.index(label) + 1}"


def test_feature_extractor_is_the_classifier_without_head(classifier_pair):
    name, model, _ = classifier_pair
    features = B.create_backbone(name)
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        out = features(x)
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
    assert out.shape == (2, features.num_features) == (2, 1280)
    torch.testing.assert_close(out, expected)
    assert not features.training


def test_weights_path_overrides_the_packaged_file(tmp_path):
    name = "mobilenetv2_100"
    state = torch.load(B.packaged_weights_file(name), map_location="cpu", weights_only=True)
    state = {k: (v * 0 if k == "classifier.1.bias" else v) for k, v in state.items()}
    torch.save(state, tmp_path / "w.pth")
    model = B.create_backbone(name, weights_path=str(tmp_path / "w.pth"))
    assert model.num_features == 1280
    with pytest.raises(FileNotFoundError, match="does not exist"):
        B.create_backbone(name, weights_path=str(tmp_path / "missing.pth"))


def test_load_by_order_names_the_first_mismatch():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    good = {"a.weight": torch.zeros(8, 3, 3, 3), "a.bias": torch.zeros(8), "b.weight": torch.ones(8),
            "b.bias": torch.zeros(8), "b.running_mean": torch.zeros(8), "b.running_var": torch.ones(8),
            "b.num_batches_tracked": torch.tensor(0)}
    B.load_by_order(model, good, "good")
    bad_shape = dict(good, **{"a.bias": torch.zeros(9)})
    with pytest.raises(ValueError, match=r"tensor #1 'a.bias' \(9,\).*'0.bias' \(8,\)"):
        B.load_by_order(model, bad_shape, "bad")
    swapped = dict(list(good.items())[:4] + [("b.running_var", torch.ones(8)),
                                             ("b.running_mean", torch.zeros(8))] + list(good.items())[6:])
    with pytest.raises(ValueError, match="tensor #4 'b.running_var'"):
        B.load_by_order(model, swapped, "swapped")
    with pytest.raises(ValueError, match="6 tensors but"):
        B.load_by_order(model, dict(list(good.items())[:6]), "short")


# --- preprocessing ----------------------------------------------------------------------------

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
EXPECTED_CONFIG = {  # from each model's published preprocessing
    "tf_efficientnet_lite0": (224, (0.5,) * 3),
    "tf_efficientnet_lite1": (240, (0.5,) * 3),
    "tf_efficientnet_lite2": (260, (0.5,) * 3),
    "mobilenetv2_100": (224, B.IMAGENET_MEAN),
    "EVA02-L-14": (224, CLIP_MEAN),
    "EVA02-L-14-336": (336, CLIP_MEAN),
    "eva02_large_patch14_448": (448, CLIP_MEAN),
    "convnext_xxlarge": (256, CLIP_MEAN),
}


@pytest.mark.parametrize("name", list(B.BACKBONES))
def test_data_config(name):
    cfg = B.data_config(name)
    assert set(cfg) == {"input_size", "mean", "std", "interpolation", "crop_pct"}
    size, mean = EXPECTED_CONFIG[name]
    assert cfg["input_size"] == (3, size, size)
    assert cfg["mean"] == pytest.approx(mean)
    assert len(cfg["std"]) == 3 and all(0 < s <= 1 for s in cfg["std"])
    if name.startswith("tf_efficientnet_lite"):
        assert cfg["std"] == (0.5, 0.5, 0.5)
    assert cfg["interpolation"] in ("bilinear", "bicubic")
    assert 0.8 <= cfg["crop_pct"] <= 1.0


# --- the paper's backbones: weights from a user-supplied file ---------------------------------

@pytest.mark.parametrize("name", FILE_BACKBONES)
def test_missing_paper_weights_say_what_to_download(name, tmp_path):
    spec = B.get_spec(name)
    for weights_path in (None, str(tmp_path / "nope.safetensors")):
        with pytest.raises(FileNotFoundError) as err:
            B.create_backbone(name, weights_path=weights_path)
        message = str(err.value)
        assert spec.hub_repo in message and spec.hub_file in message
        assert "huggingface-cli download" in message and "weights_path" in message
        assert (weights_path or "no weights_path") in message


@pytest.mark.parametrize("name,blocks", [("EVA02-L-14", 24 + 2), ("EVA02-L-14-336", 24 + 2),
                                         ("eva02_large_patch14_448", 24 + 2),
                                         ("convnext_xxlarge", 3 + 4 + 30 + 3 + 2)])
def test_count_blocks_of_paper_backbones_without_weights(name, blocks):
    """Built on the meta device: the architecture only, no memory and no weights."""
    assert B.count_blocks(name) == blocks


def tiny_paper_trunk(name: str) -> nn.Module:
    """The registered timm architecture of a paper backbone at a tiny width and depth."""
    import timm

    spec = B.get_spec(name)
    if "convnext" in spec.timm_name:
        small = dict(depths=(1, 2, 1, 1), dims=(8, 16, 16, 24))
    else:
        small = dict(depth=3, embed_dim=32, num_heads=2, img_size=56)
    torch.manual_seed(0)
    return timm.create_model(spec.timm_name, pretrained=False, num_classes=0,
                             **dict(spec.timm_kwargs), **small).eval()


# --- the split --------------------------------------------------------------------------------

SPLIT_MODELS = [(n, 64) for n in CPU_BACKBONES] + [(n, 56) for n in FILE_BACKBONES]


@pytest.fixture(scope="module", params=SPLIT_MODELS, ids=[n for n, _ in SPLIT_MODELS])
def split_model(request):
    """(model, input): CPU backbones with their weights, paper backbones tiny and random."""
    name, size = request.param
    model = B.create_backbone(name) if B.get_spec(name).cpu else tiny_paper_trunk(name)
    torch.manual_seed(1)
    return model, torch.randn(2, 3, size, size)


def _units_params(model, n):
    units, _ = B._units(model)
    return {id(p) for u in (units[len(units) - n:] if n else []) for p in u.parameters()}


@pytest.mark.parametrize("trainable", [0, 1, 3, "full", "linear"])
def test_split_composes_to_the_model_and_freezes_the_prefix(split_model, trainable):
    model, x = split_model
    n_units = B.count_blocks(model)
    prefix, tail = B.split_backbone(model, trainable)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(tail(prefix(x)), expected, rtol=1e-5, atol=1e-5)
    n = {"full": n_units, "linear": 0}.get(trainable, trainable)
    trainable_ids = {id(p) for p in tail.parameters() if p.requires_grad}
    assert trainable_ids == _units_params(model, n)
    assert not any(p.requires_grad for p in prefix.parameters())
    all_ids = {id(p) for p in model.parameters()}
    assert trainable_ids | {id(p) for p in prefix.parameters()} == all_ids  # nothing lost
    if trainable == "full":
        assert len(prefix) == 0 and trainable_ids == all_ids
    if trainable in (0, "linear"):
        assert not trainable_ids


def test_prefix_stays_in_eval_mode_and_keeps_its_statistics():
    model = B.create_backbone("mobilenetv2_100")
    prefix, tail = B.split_backbone(model, 2)
    wrapper = nn.Sequential(prefix, tail)
    wrapper.train()  # what a training loop calls on the whole model
    assert tail.training and not prefix.training
    assert not any(m.training for m in prefix.modules())
    bn = prefix[0][1]
    before = bn.running_mean.clone()
    out = wrapper(torch.randn(4, 3, 64, 64))
    out.sum().backward()
    torch.testing.assert_close(bn.running_mean, before)
    assert all(p.grad is None for p in prefix.parameters())
    assert any(p.grad is not None for p in tail.parameters())


def test_model_train_cannot_unfreeze_the_prefix_and_a_new_split_replaces_the_old():
    model = B.create_backbone("tf_efficientnet_lite0")
    prefix, tail = B.split_backbone(model, 1)
    model.train()  # the original model shares the prefix's modules
    assert not any(m.training for m in prefix.modules())
    assert all(m.training for m in tail.modules())
    prefix, tail = B.split_backbone(model, "full")
    model.train()
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", CPU_BACKBONES)
def test_count_blocks_is_stem_blocks_head(name):
    model = B.create_backbone(name, pretrained=False)
    n_blocks = sum(len(stage) for stage in model.blocks)
    assert B.count_blocks(name) == B.count_blocks(model) == n_blocks + 2


@pytest.mark.parametrize("bad", [-1, 10_000, "half", True, 1.5])
def test_split_rejects_bad_trainable(bad):
    model = B.create_backbone("mobilenetv2_100", pretrained=False)
    with pytest.raises(ValueError, match="trainable must be"):
        B.split_backbone(model, bad)


def test_split_rejects_unknown_architecture():
    with pytest.raises(NotImplementedError, match="Linear"):
        B.split_backbone(nn.Linear(2, 2), 1)


@pytest.mark.parametrize("name", ["mobilenetv2_100", "EVA02-L-14"])
def test_split_parts_survive_pickling(name, tmp_path):
    """MLflow logs whole modules with torch.save: the lazily defined wrappers must pickle."""
    model = B.create_backbone(name, pretrained=False) if name == "mobilenetv2_100" \
        else tiny_paper_trunk(name)
    prefix, tail = B.split_backbone(model, 2)
    torch.save((prefix, tail), tmp_path / "parts.pt")
    prefix2, tail2 = torch.load(tmp_path / "parts.pt", weights_only=False)
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(tail2(prefix2(x)), model(x))
    prefix2.train()
    assert not prefix2.training


def test_timm_file_backbone_loads_the_given_file_offline(tmp_path):
    """The loading path of eva02_large_patch14_448, exercised on a small timm model: the weights
    must come from the file (HF_HUB_OFFLINE is set in tests), the classifier dropped."""
    import dataclasses

    import timm

    spec = dataclasses.replace(B.get_spec("eva02_large_patch14_448"), timm_name="mobilenetv2_050",
                               pretrained_tag="lamb_in1k")
    torch.manual_seed(3)
    source = timm.create_model("mobilenetv2_050", pretrained=False)
    from safetensors.torch import save_file

    save_file(source.state_dict(), tmp_path / "model.safetensors")
    model = B._file_backbone(spec, str(tmp_path / "model.safetensors"), pretrained=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source.eval().forward_head(source.forward_features(x),
                                                                        pre_logits=True))
    assert model.num_classes == 0
