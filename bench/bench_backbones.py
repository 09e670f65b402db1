"""Benchmark the CPU backbones: units, parameters, ImageNet top-5 on a real photo, forward speed.

    python bench/bench_backbones.py [--threads 2] [--batch 32] [--repeats 3]

Writes bench/results/backbones.json. Speed is the feature extractor's eval forward under
``torch.inference_mode`` at 224x224 and at 128x64 (H x W, a pedestrian crop), in ms per image:
the min and the median wall time of ``--repeats`` timed batches after one warm-up batch, in the
default (NCHW) and the channels-last memory format, and the min CPU time of the process (all
threads; ``cpu_min``). The machine is shared, so the load average is recorded with the figures:
wall time measures contention as much as the model there, CPU time much less so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import matplotlib
import torch
from PIL import Image
from timm.data import ImageNetInfo, create_transform

from pipeline import backbones as B

PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
SIZES = {"224x224": (224, 224), "128x64": (128, 64)}


def top5(name: str, info: ImageNetInfo) -> list[dict]:
    """ImageNet top-5 of ``name`` on the photo, preprocessed as its data_config says."""
    cfg = B.data_config(name)
    tf = create_transform(input_size=cfg["input_size"], interpolation=cfg["interpolation"],
                          mean=cfg["mean"], std=cfg["std"], crop_pct=cfg["crop_pct"])
    x = tf(Image.open(PHOTO).convert("RGB")).unsqueeze(0)
    with torch.inference_mode():
        probs = B.create_imagenet_classifier(name)(x).softmax(-1)[0]
    values, indices = probs.topk(5)
    return [{"class": i, "label": info.index_to_description(i), "p": round(v, 4)}
            for v, i in zip(values.tolist(), indices.tolist())]


def forward_ms_per_image(model: torch.nn.Module, hw: tuple[int, int], batch: int, repeats: int,
                         channels_last: bool) -> dict[str, float]:
    """Min and median ms per image of ``repeats`` timed forward passes."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, 3, *hw).contiguous(memory_format=fmt)
    times, cpu_times = [], []
    with torch.inference_mode():
        model(x)  # warm-up: allocator and kernel selection
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            model(x)
            times.append(1000 * (time.perf_counter() - start) / batch)
            cpu_times.append(1000 * (time.process_time() - cpu_start) / batch)
    return {"min": round(min(times), 2), "median": round(statistics.median(times), 2),
            "cpu_min": round(min(cpu_times), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/backbones.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    info = ImageNetInfo()
    results = {}
    for name in (n for n, spec in B.BACKBONES.items() if spec.cpu):
        model = B.create_backbone(name)
        row = {
            "blocks": B.count_blocks(model),
            "params_feature_extractor": sum(p.numel() for p in model.parameters()),
            "params_with_imagenet_head": sum(
                p.numel() for p in B.create_imagenet_classifier(name).parameters()),
            "num_features": model.num_features,
            "data_config": B.data_config(name),
            "top5_grace_hopper": top5(name, info),
            "loadavg_before": round(os.getloadavg()[0], 2),
            "forward_ms_per_image": {
                f"{size} {fmt}": forward_ms_per_image(model, hw, args.batch, args.repeats,
                                                      channels_last=fmt == "channels_last")
                for size, hw in SIZES.items() for fmt in ("nchw", "channels_last")},
            "loadavg_after": round(os.getloadavg()[0], 2),
        }
        results[name] = row
        print(name, row["blocks"], row["params_feature_extractor"], row["forward_ms_per_image"],
              [t["label"].split(",")[0] for t in row["top5_grace_hopper"]], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"threads": args.threads, "batch": args.batch, "repeats": args.repeats,
            "torch": torch.__version__, "machine": platform.machine(), "cpu_count": torch.get_num_threads(),
            "photo": PHOTO.name, "note": "shared CPU: other processes may inflate the times"}
    args.out.write_text(json.dumps({"meta": meta, "backbones": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
