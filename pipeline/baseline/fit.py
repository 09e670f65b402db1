"""The baseline's training loop and its similarity ranking.

The frozen prefix of the image tower ran once per image (``pipeline.train.cache``); with a
frozen text transformer the pooled MiniLM features were computed once per caption. A step then
runs the image tail + projection and the text projection on a batch of pairs, and the
multi-positive InfoNCE of their similarities. AdamW, linear warm-up then cosine decay, no weight
decay on biases, norms and the logit scale (as open_clip's training). Every random draw comes
from a generator seeded by ``(seed, epoch)``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np
import torch
from torch.nn import functional as F

from pipeline.baseline.data import Pairs
from pipeline.baseline.model import clamp_logit_scale, multi_positive_infonce, positives
# The decoupled subtasks' settings and schedule: the two models train alike and compare fairly.
from pipeline.train.loop import FitConfig, cosine_with_warmup

log = logging.getLogger(__name__)


def param_groups(clip: Any, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters: matrices and kernels decay, biases, norms and the logit scale do not."""
    decay, no_decay = [], []
    for name, p in clip.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def fit(clip: Any, image_tail: torch.nn.Module, source: Any, rows: np.ndarray, text_embed: Callable,
        pairs: Pairs, cfg: FitConfig, evaluate: Callable[[int], dict[str, float]] | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Train on the pairs (image ``rows[i]`` of ``source`` with caption i of ``pairs``).

    ``text_embed(indices)`` returns the unnormalised text embeddings of captions ``indices``
    (the projection of cached pooled features, or the live text tower). Returns the per-epoch
    history: loss, the learned temperature, seconds and whatever ``evaluate(epoch)`` gives.
    """
    device = source.device
    n = len(pairs)
    if n < 2:
        raise ValueError(f"contrastive training needs at least 2 pairs, got {n}")
    labels = torch.tensor(pairs.labels, device=device)
    stated = torch.tensor(pairs.stated, device=device)
    domain = torch.tensor(pairs.domain, device=device)
    rows_t = torch.as_tensor(rows)
    opt = torch.optim.AdamW(param_groups(clip, cfg.weight_decay), lr=cfg.lr)
    per_epoch = max(1, n // cfg.batch_size) if n >= cfg.batch_size else 1
    total = cfg.epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(total, max(1, round(cfg.warmup_frac * total))))
    history = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(n, generator=gen)
        clip.train()
        losses = []
        for s in range(per_epoch):
            b = order[s * cfg.batch_size:(s + 1) * cfg.batch_size] if n >= cfg.batch_size else order
            flip = (torch.rand(len(b), generator=gen) < 0.5) if cfg.train_flip else \
                torch.zeros(len(b), dtype=torch.bool)
            img = F.normalize(image_tail(source.mixed("full", rows_t[b], flip)), dim=-1)
            txt = F.normalize(text_embed(b), dim=-1)
            logits = clip.logit_scale.exp() * img @ txt.T
            bd = b.to(device)
            pos = positives(labels[bd], labels[bd], stated[bd], domain[bd], domain[bd])
            loss = multi_positive_infonce(logits, pos)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            clamp_logit_scale(clip)
            losses.append(float(loss.detach()))
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
               "temperature": float(1.0 / clip.logit_scale.detach().exp()), "seconds": time.perf_counter() - t0}
        clip.eval()
        if evaluate is not None:
            row.update(evaluate(epoch + 1))
        history.append(row)
        log.info("baseline epoch %d/%d: %s", epoch + 1, cfg.epochs,
                 ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
        if on_epoch is not None:
            on_epoch(epoch + 1, row)
    return history


# --------------------------------------------------------------------------- embeddings + ranking

def embed_images(image_tail: torch.nn.Module, source: Any, rows: np.ndarray, batch_size: int = 256,
                 tta: bool = False) -> np.ndarray:
    """L2-normalised image embeddings (N, D) float32 of ``source`` rows (optionally flip-averaged)."""
    image_tail.eval()
    parts = []
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            idx = torch.as_tensor(rows[s:s + batch_size])
            z = image_tail(source.features("full", False, idx))
            if tta:
                z = z + image_tail(source.features("full", True, idx))
            parts.append(F.normalize(z.float(), dim=-1).cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

