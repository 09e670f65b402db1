"""Benchmark the synthetic release generator; writes bench/results/synth.json.

1. The `default` profile, end to end, with 1 and 2 workers side by side.
2. The `full` profile projected: its plan and text files (labels, captions, test ground truth)
   are made and timed for real; its images are timed on a slice (1/``--slice`` of every split)
   with 2 workers and extrapolated linearly. The JSON says which figure is measured and which
   is projected. Target: full profile in under 10 minutes on 2 cores.

Run: ``python bench/bench_synth.py [--slice 20]``. The machine's load is recorded with the
figures, since other work on the same cores slows every number down.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from pipeline.synth import release as R

RESULTS = Path(__file__).resolve().parent / "results" / "synth.json"
TARGET_S = 600.0


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the render workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _timed_release(sizes, workers: int, root: Path) -> dict:
    out = root / f"release-{workers}w"
    cpu = _cpu_seconds()
    summary = R.synthesize(out, sizes=sizes, seed=0, workers=workers)
    cpu = _cpu_seconds() - cpu
    shutil.rmtree(out)
    return {"workers": workers, "images": summary["images"], "seconds": round(summary["seconds"], 2),
            "images_per_s": round(summary["images_per_s"], 1), "cpu_seconds": round(cpu, 2),
            "cpu_ms_per_image": round(1000 * cpu / summary["images"], 2)}


def _timed_text_only(sizes, root: Path) -> float:
    """CPU seconds to plan a release and write its text files (no images; one process)."""
    start = time.process_time()
    plan = R.plan_release(sizes, 0)
    for split in R.SPLITS:
        (root / "text" / split).mkdir(parents=True)
    R.write_labels(root / "text", plan)
    seconds = time.process_time() - start
    shutil.rmtree(root / "text")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slice", type=int, default=20,
                        help="Full-profile images timed: 1/SLICE of each split.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        root = Path(tmp)
        default = [_timed_release(R.PROFILES["default"], w, root) for w in (1, 2)]

        full = R.PROFILES["full"]
        n_full = sum(map(sum, full.values()))
        text_s = _timed_text_only(full, root)
        part = {s: (max(1, p // args.slice), max(1, v // args.slice)) for s, (p, v) in full.items()}
        sliced = _timed_release(part, 2, root)
        text_part_s = _timed_text_only(part, root)
        image_rate = sliced["images"] / max(sliced["seconds"] - text_part_s, 1e-9)
        projected_wall = text_s + n_full / image_rate
        # On a shared machine wall time measures the neighbours; CPU time measures this code.
        cpu_per_image = (sliced["cpu_seconds"] - text_part_s) / sliced["images"]
        projected_free = text_s + n_full * cpu_per_image / 2

    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m_before": round(load_before[0], 2),
                    "load_avg_1m_after": round(os.getloadavg()[0], 2)},
        "default_profile_measured": default,
        "full_profile": {
            "images": n_full,
            "text_files_cpu_seconds_measured": round(text_s, 2),
            "image_slice_measured": {**sliced, "slice": f"1/{args.slice}",
                                     "text_cpu_seconds": round(text_part_s, 2)},
            "images_per_s_2_workers_measured_on_slice": round(image_rate, 1),
            "projected_wall_seconds_2_workers_at_measured_load": round(projected_wall, 1),
            "projected_seconds_2_free_cores": round(projected_free, 1),
            "projection": ("text files (plan, labels, captions, test ground truth) made for the full "
                           "profile (one process, CPU time); images extrapolated linearly from the slice, "
                           "either at the wall-clock rate measured under the recorded load or as CPU time "
                           "spread on 2 free cores"),
            "target_seconds": TARGET_S,
            "meets_target_on_2_free_cores": projected_free < TARGET_S,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
