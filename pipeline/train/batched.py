"""Batched tails (``train.batched_tails``): every subtask of a group trained in one pass.

The per-subtask path (:func:`pipeline.train.stage.train_subtask`) runs each subtask's own copy of
the tail over its own batches, one subtask after the other: twelve small forward/backward passes
per step for pedestrians. Here the K tails of a group are stacked
(``torch.func.stack_module_state``) and run as one module (:class:`StackedTails`: the shipped
convolutional tails on a flat channels-last layout, anything else under ``vmap``), so one pass
serves every subtask of the group; the heads (a Linear each, with differing class counts) run in a
short loop.

What stays as in the per-subtask path, so the result is the same training up to the order of
float sums:
- each subtask keeps its own seed, initial weights, row set, shuffle order and flips
  (``(seed, epoch)`` generators, as in :func:`pipeline.train.loop.fit`), and reads its own crop;
- each subtask's dropout masks come from its own RNG stream, swapped in around its head, so they
  equal the masks it draws when trained alone;
- AdamW is elementwise, so one optimiser over the stacked tensors is K independent optimisers;
  one LR schedule serves all because a group shares its step count: subtasks are grouped by their
  number of labelled training rows (for pedestrians all twelve);
- BatchNorm keeps running statistics per subtask (the buffers are stacked too).
Differences: the K convolutions run as one grouped convolution or batched matrix product (other
float sums), and on CUDA with AMP one GradScaler serves the group (an overflow in one subtask skips
the step of all).

The group checkpoints every epoch (stacked state, optimiser, schedule, per-subtask histories) and
resumes from it; the trained tails are unstacked into ordinary :class:`SubtaskNet` objects, so
saving, prediction and the MLflow child runs are those of the per-subtask path.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from pipeline.train.cache import FeatureSource
from pipeline.train.loop import EpochBudget, FitConfig, _save, cosine_with_warmup, epoch_seed
from pipeline.train.model import SubtaskNet, masked_cross_entropy

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One subtask of a batched group: what :func:`pipeline.train.loop.fit` would get."""

    name: str
    net: SubtaskNet
    crop: str
    index: np.ndarray          # its labelled training rows
    targets: np.ndarray        # (len(index), n_heads), -1 = missing
    weights: Sequence[torch.Tensor | None]
    cfg: FitConfig
    evaluate: Callable[[SubtaskNet], dict[str, float]] | None = None


def group_key(m: Member) -> tuple:
    """Subtasks train together when they take the same steps with the same schedule."""
    c = m.cfg
    return (len(m.index), c.epochs, c.batch_size, c.lr, c.weight_decay, c.warmup_frac, c.train_flip)


def checkpoint_name(names: Sequence[str]) -> str:
    return "batched-" + hashlib.sha256(",".join(names).encode()).hexdigest()[:12] + ".pt"


class _RngStreams:
    """Per-member global RNG state (CPU + the device's CUDA generator), swapped in around the
    member's random ops so that each draws what it would draw when trained alone."""

    def __init__(self, seeds: Sequence[int], device: str):
        self.cuda = device.startswith("cuda")
        self.states = []
        for s in seeds:
            torch.manual_seed(s)
            self.states.append(self._get())

    def _get(self):
        return (torch.get_rng_state(), torch.cuda.get_rng_state() if self.cuda else None)

    def run(self, k: int, fn: Callable[[], Any]) -> Any:
        cpu, cuda = self.states[k]
        torch.set_rng_state(cpu)
        if self.cuda:
            torch.cuda.set_rng_state(cuda)
        out = fn()
        self.states[k] = self._get()
        return out


class _MatmulConv2d(torch.nn.Conv2d):
    """A 1x1 convolution (stride 1, no padding, one group) as a matrix product, for ``vmap``.

    Under ``vmap`` with stacked weights a convolution becomes one grouped convolution (K groups),
    which the CPU kernels run about 3x slower than K separate convolutions; a matrix product
    becomes a batched one, about 2x faster than them (docs/training.md, "Batched tails").
    """

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        out = torch.einsum("bchw,oc->bohw", x, weight.flatten(1))
        return out if bias is None else out + bias.view(1, -1, 1, 1)


class _FlatPointwiseConv2d(torch.nn.Conv2d):
    """K 1x1 convolutions on the flat layout ``(B, K*C, H, W)`` (channels last) as one batched
    matrix product; a K-group convolution gives the same result, about 3x slower on CPU."""

    k: int

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, _, h, w = x.shape
        wk = weight.view(self.k, -1, weight.shape[1])  # (K, O, C)
        xs = x.permute(0, 2, 3, 1).reshape(b * h * w, self.k, -1)  # a view when x is channels last
        out = torch.einsum("pkc,koc->pko", xs, wk).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return out if bias is None else out + bias.view(1, -1, 1, 1)


def _is_pointwise(m: torch.nn.Module) -> bool:
    return (type(m) is torch.nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (1, 1)
            and m.padding == (0, 0) and m.dilation == (1, 1) and m.groups == 1 and m.padding_mode == "zeros")


def _pointwise_as_matmul(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with its plain 1x1 convolutions switched to :class:`_MatmulConv2d` (in place)."""
    for m in module.modules():
        if _is_pointwise(m):
            m.__class__ = _MatmulConv2d
    return module


#: Modules the flat layout runs as they are: per channel or elementwise, or containers of such
#: (timm's InvertedResidual: convolutions, norms, a residual add).
_FLAT_AS_IS = (torch.nn.Identity, torch.nn.ReLU, torch.nn.ReLU6, torch.nn.SiLU, torch.nn.Hardswish,
               torch.nn.Hardsigmoid, torch.nn.Sigmoid, torch.nn.GELU, torch.nn.Hardtanh,
               torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveMaxPool2d, torch.nn.Flatten, torch.nn.Sequential)
_FLAT_CONTAINERS = ("InvertedResidual", "DepthwiseSeparableConv", "SelectAdaptivePool2d")


def _flat_supported(tail: torch.nn.Module) -> bool:
    """Whether every module of ``tail`` keeps the K subtasks' channels apart on ``(B, K*C, H, W)``."""
    for m in tail.modules():
        if type(m).__name__ in _FLAT_CONTAINERS:
            if getattr(m, "pool_type", "avg").endswith("catavgmax"):  # concatenates channels
                return False
        elif isinstance(m, torch.nn.Conv2d):
            if type(m) is not torch.nn.Conv2d or m.padding_mode != "zeros":
                return False
        elif isinstance(m, torch.nn.BatchNorm2d):
            if not m.affine or not m.track_running_stats or m.momentum is None:  # None: a K-vector count
                return False
        elif not isinstance(m, _FLAT_AS_IS):
            return False
    return True


def _flat_module(tail: torch.nn.Module, k: int) -> torch.nn.Module:
    """A copy of ``tail`` for the flat layout: the K subtasks' channels side by side, each
    convolution grouped per subtask (1x1 ones as :class:`_FlatPointwiseConv2d`), each BatchNorm
    over K times the channels (per channel, so exactly K separate BatchNorms)."""
    base = copy.deepcopy(tail)
    for m in base.modules():
        if isinstance(m, torch.nn.Conv2d):
            if _is_pointwise(m):
                m.__class__ = _FlatPointwiseConv2d
                m.k = k
            else:
                m.groups *= k
            m.in_channels, m.out_channels = m.in_channels * k, m.out_channels * k
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.num_features *= k
    return base


class StackedTails(torch.nn.Module):
    """K copies of one tail architecture as stacked tensors, run in one pass.

    Convolutional tails of the shipped kind (convolutions, BatchNorm, activations, residual
    blocks, pooling: :func:`_flat_supported`) run on the flat layout ``(B, K*C, H, W)`` in
    channels-last memory, where every op is one native call over all K subtasks; other tails run
    under ``vmap`` (slower: vmap's convolution and BatchNorm rules move and re-scale the
    activations in extra passes; docs/training.md, "Batched tails").
    """

    def __init__(self, tails: Sequence[torch.nn.Module], flat: bool | None = None):
        """``flat``: None picks the flat layout where :func:`_flat_supported`; False forces vmap."""
        super().__init__()
        from torch.func import stack_module_state

        params, buffers = stack_module_state(list(tails))
        # Registered under flat names so that .to(), state_dict() and the optimiser see them.
        self._pnames = list(params)
        self._bnames = list(buffers)
        for i, n in enumerate(self._pnames):
            self.register_parameter(f"p{i}", torch.nn.Parameter(params[n].detach().clone()))
        for i, n in enumerate(self._bnames):
            self.register_buffer(f"b{i}", buffers[n].clone())
        self.k = len(tails)
        self.flat = _flat_supported(tails[0]) if flat is None else flat and _flat_supported(tails[0])
        # Not a submodule: only its structure is used.
        self.__dict__["_base"] = _flat_module(tails[0], self.k) if self.flat else \
            _pointwise_as_matmul(copy.deepcopy(tails[0]))

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call

        return functional_call(self._base, (params, buffers), (x,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (K, B, ...) -> (K, B, num_features)."""
        from torch.func import vmap

        self._base.train(self.training)
        params = {n: getattr(self, f"p{i}") for i, n in enumerate(self._pnames)}
        buffers = {n: getattr(self, f"b{i}") for i, n in enumerate(self._bnames)}
        if self.flat:
            # (K, ...) -> (K * first dim, ...): views, so BatchNorm's in-place running-statistics
            # updates land in the stacked buffers.
            def flat(t: torch.Tensor) -> torch.Tensor:
                return t.view(-1, *t.shape[2:]) if t.dim() > 1 else t

            k, b, c, h, w = x.shape
            # (K, B, C, H, W) -> (B, K*C, H, W) in channels-last memory: BatchNorm and the
            # matrix products run about 1.5x faster on it than on NCHW here.
            x = x.permute(1, 3, 4, 0, 2).reshape(b, h, w, k * c).permute(0, 3, 1, 2)
            z = self._call({n: flat(t) for n, t in params.items()},
                           {n: flat(t) for n, t in buffers.items()}, x)
            return z.reshape(b, k, -1).transpose(0, 1)
        # "different": a tail with dropout would draw per member from the global stream (the
        # shipped tails have none; the heads' dropout runs outside vmap, per member).
        return vmap(self._call, in_dims=(0, 0, 0), randomness="different")(params, buffers, x)

    def unstack_into(self, tails: Sequence[torch.nn.Module]) -> None:
        """Copy member k's slice back into ``tails[k]`` (an ordinary module again)."""
        with torch.no_grad():
            for k, tail in enumerate(tails):
                state = {n: getattr(self, f"p{i}")[k] for i, n in enumerate(self._pnames)}
                state.update({n: getattr(self, f"b{i}")[k] for i, n in enumerate(self._bnames)})
                tail.load_state_dict(state, strict=True)


def fit_group(members: Sequence[Member], source: FeatureSource, checkpoint: Path, *,
              budget: EpochBudget | None = None, desc: str = "batched") -> list[list[dict[str, float]]]:
    """Train every member at once; returns each member's per-epoch history (as ``fit`` does).

    Resumes from ``checkpoint`` when it exists. ``budget`` ticks once per group epoch.
    """
    from tqdm import tqdm

    device = source.device
    cfg = members[0].cfg
    assert all(group_key(m) == group_key(members[0]) for m in members), "members differ in schedule"
    for m in members:
        m.net.to(device)
    stacked = StackedTails([m.net.tail for m in members]).to(device)
    heads = [m.net.heads for m in members]
    params = [p for p in stacked.parameters() if p.requires_grad] + \
             [p for h in heads for p in h.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(members[0].index)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, cosine_with_warmup(total, max(1, round(cfg.warmup_frac * total))))
    scaler = torch.amp.GradScaler("cuda", enabled=source.amp)
    ys = [torch.as_tensor(m.targets, dtype=torch.long) for m in members]
    ws = [[None if x is None else x.to(device) for x in m.weights] for m in members]
    idx = [torch.as_tensor(m.index) for m in members]
    histories: list[list[dict[str, float]]] = [[] for _ in members]
    start = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        stacked.load_state_dict(state["tails"])
        for h, s in zip(heads, state["heads"]):
            h.load_state_dict(s)
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        scaler.load_state_dict(state["scaler"])
        histories, start = state["history"], state["epoch"]
        if start < cfg.epochs:
            log.info("%s: resuming from %s after epoch %d", desc, checkpoint, start)
    for epoch in range(start, cfg.epochs):
        seeds = [epoch_seed(m.cfg.seed, epoch) for m in members]
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        rng = _RngStreams(seeds, device)  # dropout, as fit's torch.manual_seed per epoch
        orders = [torch.randperm(n, generator=g) for g in gens]
        flips = [torch.randint(0, 2, (n,), generator=g).bool() if cfg.train_flip
                 else torch.zeros(n, dtype=torch.bool) for g in gens]
        stacked.train()
        for h in heads:
            h.train()
        t0, seen, losses = time.perf_counter(), 0, [0.0] * len(members)
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False, unit="batch")
        for step in bar:
            sl = slice(step * cfg.batch_size, (step + 1) * cfg.batch_size)
            rows = [o[sl] for o in orders]
            x = torch.stack([source.mixed(m.crop, idx[k][rows[k]], flips[k][rows[k]])
                             for k, m in enumerate(members)])
            with torch.autocast("cuda", enabled=source.amp):
                z = stacked(x)
                per = []
                for k, m in enumerate(members):
                    logits = rng.run(k, lambda: [h(z[k]) for h in heads[k]])
                    y = ys[k][rows[k]].to(device)
                    per.append(sum(masked_cross_entropy(lg, y[:, j], ws[k][j]) for j, lg in enumerate(logits)))
            loss = torch.stack(per).sum()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            b = len(rows[0])
            seen += b
            for k, v in enumerate(torch.stack(per).detach().cpu().tolist()):
                losses[k] += v * b
            bar.set_postfix(img_s=f"{seen * len(members) / (time.perf_counter() - t0):.0f}")
        bar.close()
        epoch_s = time.perf_counter() - t0
        stacked.unstack_into([m.net.tail for m in members])
        for k, m in enumerate(members):
            # epoch_s: the group's epoch (every member's epoch ran in it)
            record = {"epoch": epoch + 1, "loss": losses[k] / max(1, seen), "epoch_s": epoch_s,
                      "lr": sched.get_last_lr()[0]}
            if m.evaluate is not None:
                record.update(m.evaluate(m.net))
            histories[k].append(record)
        log.info("%s epoch %d/%d: %d subtasks in %.1fs, mean loss %.4g", desc, epoch + 1, cfg.epochs,
                 len(members), epoch_s, float(np.mean([h[-1]["loss"] for h in histories])))
        _save({"tails": stacked.state_dict(), "heads": [h.state_dict() for h in heads],
               "opt": opt.state_dict(), "sched": sched.state_dict(), "scaler": scaler.state_dict(),
               "history": histories, "epoch": epoch + 1}, checkpoint)
        if budget is not None:
            budget.tick()
    stacked.unstack_into([m.net.tail for m in members])
    for m in members:
        m.net.eval()
    return histories
