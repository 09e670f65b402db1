"""Subtask networks: the unfrozen tail plus one linear head per attribute group.

Decoupled mode builds one :class:`SubtaskNet` per group (its own tail copy, one head);
multi-task mode (the "no decoupling" ablation) builds one net with a shared tail and every head.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.train.data import MISSING


def make_head(num_features: int, n_classes: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, n_classes))


class SubtaskNet(nn.Module):
    """``features of the frozen prefix -> {group: logits}``."""

    def __init__(self, tail: nn.Module, heads: dict[str, nn.Module]):
        super().__init__()
        self.tail = tail
        self.names = list(heads)  # a list, not ModuleDict keys: "type" is a Module method name
        self.heads = nn.ModuleList(heads.values())

    def head(self, name: str) -> nn.Module:
        return self.heads[self.names.index(name)]

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.tail(features)
        return {name: head(z) for name, head in zip(self.names, self.heads)}


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                         weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over the rows whose ``target`` is not ``MISSING`` (partial labels).

    Rows without a label contribute neither loss nor gradient; a batch with no label at all
    gives a zero loss that is still part of the graph. With ``weight`` the mean is weighted, as
    in ``F.cross_entropy``.
    """
    mask = target != MISSING
    if not bool(mask.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[mask].float(), target[mask], weight=weight)


class ServingModel(nn.Module):
    """The whole subtask classifier for MLflow: normalised crop ``(B, 3, H, W)`` -> class probabilities."""

    def __init__(self, prefix: nn.Module, tail: nn.Module, head: nn.Module):
        super().__init__()
        self.prefix, self.tail, self.head = prefix, tail, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.tail(self.prefix(x))), dim=-1)
