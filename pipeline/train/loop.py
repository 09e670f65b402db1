"""The training loop: AdamW, linear warm-up then cosine decay, a checkpoint every epoch.

Every random draw of an epoch (shuffle order, flips, dropout) comes from a generator seeded by
``(seed, epoch)``, and the optimiser and scheduler state are in the checkpoint, so a run killed
after any epoch and resumed ends with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from pipeline.train.cache import FeatureSource
from pipeline.train.data import MISSING
from pipeline.train.model import SubtaskNet, masked_cross_entropy

log = logging.getLogger(__name__)

#: Stop the process (as if killed) after this many epochs - the resume tests' crash hook.
STOP_ENV = "TRACK2_TRAIN_STOP_AFTER_EPOCHS"


class Interrupted(RuntimeError):
    """Raised by the crash hook after a checkpoint was written."""


@dataclass(frozen=True)
class FitConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_frac: float
    seed: int
    train_flip: bool = True  # random horizontal flips (needs flipped views of the training rows)


class EpochBudget:
    """Counts epochs run in this process; raises :class:`Interrupted` when ``limit`` is reached."""

    def __init__(self, limit: int | None = None):
        if limit is None and os.environ.get(STOP_ENV):
            limit = int(os.environ[STOP_ENV])
        self.limit, self.used = limit, 0

    def tick(self) -> None:
        self.used += 1
        if self.limit is not None and self.used >= self.limit:
            raise Interrupted(f"stopped after {self.used} epoch(s) ({STOP_ENV})")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of every random draw of one epoch (order, flips, dropout): what makes a resumed
    run, and the batched path (pipeline/train/batched.py), draw exactly what an uninterrupted
    per-subtask run draws."""
    return seed * 1_000_003 + epoch


def cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear ramp over ``warmup_steps``, then cosine from 1 to 0."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return f


def _save(obj: dict, path: Path) -> None:
    """Write atomically: a kill mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def predict(net: SubtaskNet, source: FeatureSource, crop: str, index: np.ndarray,
            batch_size: int = 256, tta: bool = True) -> dict[str, np.ndarray]:
    """Class probabilities per head for ``index``; with ``tta`` the mean over the two flips."""
    net.eval()
    out: dict[str, list[np.ndarray]] = {name: [] for name in net.names}
    with torch.no_grad():
        for s in range(0, len(index), batch_size):
            idx = torch.as_tensor(index[s:s + batch_size])
            flips = (False, True) if tta else (False,)
            acc: dict[str, torch.Tensor] = {}
            for flip in flips:
                with torch.autocast("cuda", enabled=source.amp):
                    logits = net(source.features(crop, flip, idx))
                for name, z in logits.items():
                    p = torch.softmax(z.float(), dim=-1)
                    acc[name] = acc[name] + p if name in acc else p
            for name, p in acc.items():
                out[name].append((p / len(flips)).cpu().numpy())
    return {name: np.concatenate(v) if v else np.zeros((0, net.head(name)[-1].out_features), np.float32)
            for name, v in out.items()}


def _wrap_ddp(net: SubtaskNet, device: str):
    """``net`` in DistributedDataParallel: the gradients are averaged over the ranks in backward.
    Every parameter of tail and heads takes part in each step, so no unused-parameter search."""
    from torch.nn.parallel import DistributedDataParallel

    if device.startswith("cuda"):
        # GPUs only: SyncBatchNorm has no CPU kernel, so on CPU (gloo) each rank normalises over
        # its share of the batch (docs/training.md states what that changes).
        try:
            from timm.layers import convert_sync_batchnorm
        except ImportError:
            convert_sync_batchnorm = torch.nn.SyncBatchNorm.convert_sync_batchnorm
        net.tail = convert_sync_batchnorm(net.tail)
        return DistributedDataParallel(net, device_ids=[torch.device(device).index])
    return DistributedDataParallel(net)


def _shard_loss(model, source: FeatureSource, crop: str, index: np.ndarray, rows: torch.Tensor,
                flips: torch.Tensor, y_all: torch.Tensor, w: Sequence[torch.Tensor | None],
                heads: Sequence[str], device: str) -> torch.Tensor:
    """This rank's part of the global batch ``rows`` (``rows[rank::world]``) and its loss, scaled
    so that DDP's gradient average equals the gradient of one process's masked, weighted mean.

    Each head's denominator (the labelled rows' class weights) is that of the whole global
    batch, known to every rank without communication; the rank's sum over its rows times
    ``world`` over it, averaged over the ranks, is the global mean. A rank left without a row (a
    last batch smaller than the world) still runs one row, weighted 0, as DDP needs every rank
    in every backward.
    """
    from pipeline.train import distributed

    world, rank = distributed.world_size(), distributed.rank()
    mine = rows[rank::world]
    scale = 1.0
    if not len(mine):
        mine, scale = rows[:1], 0.0
    y_global = y_all[rows]
    x = source.mixed(crop, torch.as_tensor(index)[mine], flips[mine])
    y = y_all[mine].to(device)
    with torch.autocast("cuda", enabled=source.amp):
        logits = model(x)
    loss = None
    for j, h in enumerate(heads):
        labelled = y_global[:, j] != MISSING
        weight = w[j]
        den = float(labelled.sum()) if weight is None else float(weight.cpu()[y_global[labelled, j]].sum())
        mask = y[:, j] != MISSING
        z = logits[h]
        if den > 0 and bool(mask.any()):
            part = F.cross_entropy(z[mask].float(), y[mask, j], weight=weight, reduction="sum")
            part = part * (world / den)
        else:
            part = z.sum() * 0.0  # in the graph, so that DDP sees a gradient for every parameter
        loss = part if loss is None else loss + part
    return loss * scale


def fit(net: SubtaskNet, source: FeatureSource, crop: str, index: np.ndarray, targets: np.ndarray,
        weights: Sequence[torch.Tensor | None], cfg: FitConfig, checkpoint: Path, *,
        evaluate: Callable[[SubtaskNet], dict[str, float]] | None = None,
        budget: EpochBudget | None = None, desc: str = "train",
        on_epoch: Callable[[dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Train ``net`` on rows ``index`` (``targets``: ``(len(index), n_heads)``, -1 = missing).

    Resumes from ``checkpoint`` when it exists; returns the per-epoch history (loss, time and
    whatever ``evaluate`` returns), which the checkpoint also keeps. ``on_epoch`` gets each
    epoch's record as it ends (after a resume, first the records of the epochs already done).
    """
    from tqdm import tqdm

    from pipeline.train import distributed

    device = source.device
    net.to(device)
    heads = net.names
    ddp = distributed.is_distributed()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(index) / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, cosine_with_warmup(total, max(1, round(cfg.warmup_frac * total))))
    scaler = torch.amp.GradScaler("cuda", enabled=source.amp)
    y_all = torch.as_tensor(targets, dtype=torch.long)
    w = [None if x is None else x.to(device) for x in weights]
    history: list[dict[str, float]] = []
    start = 0
    distributed.barrier()  # rank 0 wrote the checkpoint every rank now reads
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        scaler.load_state_dict(state["scaler"])
        history, start = state["history"], state["epoch"]
        if start < cfg.epochs:
            log.info("%s: resuming from %s after epoch %d", desc, checkpoint, start)
        for record in history if on_epoch else ():
            on_epoch(record)
    model = _wrap_ddp(net, device) if ddp else net
    for epoch in range(start, cfg.epochs):
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        torch.manual_seed(epoch_seed(cfg.seed, epoch))  # dropout
        order = torch.randperm(len(index), generator=gen)
        flips = torch.randint(0, 2, (len(index),), generator=gen).bool() if cfg.train_flip \
            else torch.zeros(len(index), dtype=torch.bool)
        net.train()
        t0, seen, total_loss = time.perf_counter(), 0, 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False,
                   unit="batch")
        for step in bar:
            rows = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            if ddp:
                loss = _shard_loss(model, source, crop, index, rows, flips, y_all, w, heads, device)
            else:
                x = source.mixed(crop, torch.as_tensor(index)[rows], flips[rows])
                y = y_all[rows].to(device)
                with torch.autocast("cuda", enabled=source.amp):
                    logits = net(x)
                loss = sum(masked_cross_entropy(logits[h], y[:, j], w[j]) for j, h in enumerate(heads))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            seen += len(rows)
            loss_value = float(distributed.all_reduce_mean(loss.detach()))  # the global batch's loss
            total_loss += loss_value * len(rows)
            bar.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}")
        bar.close()
        record = {"epoch": epoch + 1, "loss": total_loss / max(1, seen),
                  "epoch_s": time.perf_counter() - t0, "lr": sched.get_last_lr()[0]}
        distributed.broadcast_state(net)  # rank 0's BatchNorm statistics, as DDP's next forward would
        if evaluate is not None:
            record.update(evaluate(net))
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        log.info("%s epoch %d/%d: %s", desc, epoch + 1, cfg.epochs,
                 ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
        if distributed.is_main():
            _save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                   "scaler": scaler.state_dict(), "history": history, "epoch": epoch + 1}, checkpoint)
        if budget is not None:
            budget.tick()
    net.eval()
    return history
