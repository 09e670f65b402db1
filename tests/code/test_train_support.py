"""Helpers for the train tests: a tiny stand-in backbone and a tiny prepared data set.

The stand-in implements the pipeline/backbones.py API (create_backbone, data_config,
split_backbone, count_blocks, list_backbones) on a 4-block CNN, so the training tests run in
seconds and do not depend on pretrained weights. No tests live here.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline import schema

TINY = "tiny_cnn"


class TinyNet(nn.Module):
    def __init__(self, width: int = 8, n_blocks: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width),
                                                    nn.ReLU()) for _ in range(n_blocks)])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = width

    def forward(self, x):
        return self.pool(self.blocks(self.stem(x)))


def create_backbone(name, pretrained=True, weights_path=None):
    if name != TINY:
        raise KeyError(name)
    torch.manual_seed(123)
    return TinyNet().eval()


def data_config(name):
    return {"input_size": (3, 16, 8), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25),
            "interpolation": "bilinear", "crop_pct": 1.0}


def count_blocks(name_or_model):
    return 4  # stem + 3 blocks


def split_backbone(model, trainable):
    parts = [model.stem, *model.blocks]
    k = len(parts) if trainable == "full" else 0 if trainable == "linear" else int(trainable)
    prefix = nn.Sequential(*parts[:len(parts) - k]) if k < len(parts) else nn.Identity()
    if k == 0:
        prefix = nn.Sequential(*parts, model.pool)
        tail = nn.Identity()
    else:
        tail = nn.Sequential(*parts[len(parts) - k:], model.pool)
    for p in prefix.parameters():
        p.requires_grad_(False)
    return prefix.eval(), tail


def fake_backbones_module() -> types.ModuleType:
    mod = types.ModuleType("pipeline.backbones")
    mod.list_backbones = lambda: [TINY]
    mod.create_backbone = create_backbone
    mod.data_config = data_config
    mod.split_backbone = split_backbone
    mod.count_blocks = count_blocks
    return mod


def install_fake_backbones(monkeypatch) -> None:
    import pipeline

    mod = fake_backbones_module()
    monkeypatch.setitem(sys.modules, "pipeline.backbones", mod)
    monkeypatch.setattr(pipeline, "backbones", mod, raising=False)


def _image(rng: np.random.Generator, h: int, w: int, level: float) -> np.ndarray:
    """Noise around a brightness ``level``, so labels are learnable from pixels."""
    img = rng.normal(level * 255, 25, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_prepared(root: Path, n_ped: int = 40, n_veh: int = 24, n_val: int = 16, n_test: int = 12,
                  seed: int = 0) -> Path:
    """Write images + ``images.parquet`` + ``labels.parquet`` (docs/architecture.md) under ``root``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, labels = [], []

    def add(name, split, domain, label):
        level = 0.2 + 0.6 * label.get("_level", rng.random())
        h, w = (24, 12) if domain == "pedestrian" else (16, 16)
        path = img_dir / f"{split}_{name}.png"
        Image.fromarray(_image(rng, h, w, level)).save(path)
        images.append({"name": name, "path": str(path), "split": split,
                       "domain": None if split == "test" else domain, "width": w, "height": h})
        if split == "test":
            return
        row = {"name": name, "split": split, "domain": domain, "attribute": "", "caption": ""}
        for b in schema.PEDESTRIAN_BITS:
            row[b] = 0
        for g in schema.PEDESTRIAN_GROUPS:
            row[g.name] = pd.NA
        for k in ("color", "type", "brand"):
            row[k] = None
        row.update({k: v for k, v in label.items() if not k.startswith("_")})
        labels.append(row)

    def ped_label():
        female = int(rng.random() < 0.5)
        idx = {g.name: int(rng.integers(g.n_classes)) for g in schema.PEDESTRIAN_GROUPS}
        idx["gender"] = 0 if female else 1
        idx["hat"] = 0 if rng.random() < 0.1 else 1  # imbalanced, as in the real data
        bits = schema.groups_to_bits(idx)
        return {**idx, **dict(zip(schema.PEDESTRIAN_BITS, bits.tolist())), "_level": float(female)}

    def veh_label(i):
        color = schema.VEHICLE_COLORS[i % 2 * 9]  # black or white: learnable from brightness
        if i % 3 == 0:
            return {"type": schema.VEHICLE_TYPES[i % 2 * 4], "_level": float(i % 2)}
        return {"color": color, "brand": schema.VEHICLE_BRANDS[i % 2], "_level": float(i % 2)}

    for i in range(n_ped):
        add(f"{i:06d}.jpg", "train", "pedestrian", ped_label())
    for i in range(n_veh):
        add(f"veh{i:07d}.jpg", "train", "vehicle", veh_label(i))
    for i in range(n_val):
        if i % 2:
            add(f"{100000 + i:06d}.jpg", "val", "pedestrian", ped_label())
        else:
            add(f"vval{i:06d}.jpg", "val", "vehicle", veh_label(i))
    for i in range(n_test):
        add(f"test{i:06d}.jpg", "test", "pedestrian" if i % 2 else "vehicle", {})

    prepared = root / "prepared"
    prepared.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(images).to_parquet(prepared / "images.parquet", index=False)
    lab = pd.DataFrame(labels)
    for g in schema.PEDESTRIAN_GROUPS:
        lab[g.name] = lab[g.name].astype("Int8")
    for k in ("color", "type", "brand"):
        lab[k] = lab[k].astype("string")
    lab.to_parquet(prepared / "labels.parquet", index=False)
    return prepared
