"""The batched-tails training loop against the per-subtask one, side by side in one process.

The pedestrian stage's 12 subtasks on a subset of the default release, one shared memory cache,
trained four ways with the stage's own members (``prepare_subtask``: seeds, rows, val evaluation
every epoch, checkpoint every epoch) and nothing else of the stage (no MLflow, no saving):

- ``per_subtask``: :func:`pipeline.train.loop.fit`, one subtask after the other;
- ``before``: ``fit_group`` of ``--before-rev`` (git), the vmap path as it was;
- ``vmap_matmul``: today's ``fit_group`` with the flat layout switched off (vmap, 1x1
  convolutions as matrix products);
- ``flat``: today's ``fit_group`` (the flat channels-last layout);
- ``flat_bf16`` (not in the default ``--modes``): ``flat`` under CPU bf16 autocast
  (``torch.autocast("cpu", dtype=torch.bfloat16)``), the issue's "bf16 where accuracy holds".

Writes fit time, CPU time, mean final val accuracy / mA and the largest parameter difference
to the per-subtask nets (BatchNorm statistics excluded) to bench/results/batched_fit.json.

    python bench/bench_batched_fit.py [--prepared DIR] [--units 2] [--epochs 3] [--modes ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
log = logging.getLogger("bench_batched_fit")
MODES = ("per_subtask", "before", "vmap_matmul", "flat")


def module_at(rev: str, path: str, name: str, folder: Path):
    """``path`` as it was at git ``rev``, imported as module ``name``."""
    src = folder / f"{name}.py"
    src.write_text(subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
                                  text=True).stdout)
    spec = importlib.util.spec_from_file_location(name, src)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", type=Path,
                    default=ROOT / "bench" / ".work" / "train" / "prepared-batched-192-64",
                    help="ingested tables (the train benchmark's batched subset by default)")
    ap.add_argument("--units", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--before-rev", default="b838af5", help="git revision of the `before` fit_group")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {MODES + ('flat_bf16',)}")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "batched_fit.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    import numpy as np

    from bench_train import params_for
    from pipeline.train import batched
    from pipeline.train import stage as st
    from pipeline.train.cache import build_features
    from pipeline.train.loop import fit

    work = Path(tempfile.mkdtemp(prefix="batched-fit-", dir=ROOT / "bench" / ".work"))
    before = module_at(args.before_rev, "pipeline/train/batched.py", "batched_before", work)
    p = params_for(args.prepared, work, "p", log_models=False,
                   trainable={"pedestrian": args.units, "vehicle": 1, "router": 1},
                   epochs={"pedestrian": args.epochs, "vehicle": 1, "router": 1})
    device = st.setup_torch(p)
    data = st.load_domain(args.prepared, "pedestrian")
    bb = st.build_backbone(p, "pedestrian", p.train.backbones[0])
    tp = p.train
    boxes = {c: st.crop_box(c, tp.crop_boxes) for c in sorted({c for _, _, c in st._subtasks(p, data)})}
    source = build_features("memory", bb.prefix, list(data.paths), boxes, bb.size, *bb.norm,
                            interpolation=bb.interpolation, device=device, batch_size=tp.cache_batch_size,
                            workers=tp.workers, flip_rows=st.flip_rows(p, data))
    res: dict = {"backbone": tp.backbones[0], "trainable": args.units, "epochs": args.epochs,
                 "n_train": int(len(data.index("train"))), "n_val": int(len(data.index("val"))),
                 "feature_shape": list(source.shape[1:]), "subtasks": len(st._subtasks(p, data)),
                 "before_rev": args.before_rev, "cpus": os.cpu_count(),
                 "load_avg_at_start": round(os.getloadavg()[0], 2)}
    nets = {}
    supported = batched._flat_supported
    for mode in args.modes.split(","):
        members = [st.prepare_subtask(p, data, source, bb.tail, bb.num_features, n, g, c, data.labels)[0]
                   for n, g, c in st._subtasks(p, data)]
        ckpt = work / mode
        batched._flat_supported = (lambda tail: False) if mode == "vmap_matmul" else supported
        t0, c0 = time.perf_counter(), time.process_time()
        if mode == "flat_bf16":
            import torch

            with torch.autocast("cpu", dtype=torch.bfloat16):
                hist = batched.fit_group(members, source, ckpt / "group.pt")
        elif mode == "per_subtask":
            hist = [fit(m.net, source, m.crop, m.index, m.targets, m.weights, m.cfg, ckpt / f"{m.name}.pt",
                        evaluate=m.evaluate) for m in members]
        else:
            hist = (before if mode == "before" else batched).fit_group(members, source, ckpt / "group.pt")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        nets[mode] = {m.name: m.net.state_dict() for m in members}
        row = {"fit_s": round(wall, 2), "cpu_s": round(cpu, 2), "load_avg": round(os.getloadavg()[0], 2),
               "mean_final_val_acc": round(float(np.mean([h[-1]["val_acc"] for h in hist])), 4),
               "mean_final_val_mA": round(float(np.mean([h[-1]["val_mA"] for h in hist])), 4)}
        if mode != "per_subtask" and "per_subtask" in nets:
            ref = nets["per_subtask"]
            row["max_abs_param_diff_vs_per_subtask"] = max(
                float((ref[n][k].double() - nets[mode][n][k].double()).abs().max())
                for n in ref for k in ref[n] if "running" not in k and "num_batches" not in k)
            row["speedup_vs_per_subtask"] = round(res["per_subtask"]["fit_s"] / wall, 2)
        res[mode] = row
        log.info("%s: %s", mode, row)
    batched._flat_supported = supported
    source.close()
    shutil.rmtree(work, ignore_errors=True)  # checkpoints
    if "before" in res and "flat" in res:
        res["flat_vs_before"] = round(res["before"]["fit_s"] / res["flat"]["fit_s"], 2)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
