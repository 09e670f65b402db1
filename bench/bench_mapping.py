"""Benchmark the caption mapping: parsing speed on one core and mining time on a full-size split.

    python bench/bench_mapping.py [--repeats 3] [--parse-captions 100000]

Writes bench/results/mapping.json.

- Parsing: ``CaptionMapping.parse_many`` pinned to one CPU core over real captions
  (``../shared/track2``) drawn in the test set's mix (57% pedestrian), and over pedestrian captions
  only (the long ones); captions/s (wall: best and median of ``--repeats`` runs; and per CPU second).
- Mining: ``mine_rules`` (plus building the pairs) over full-size training splits of 126,117 lines
  (83,413 pedestrians + 42,704 vehicles): the synthetic ``full`` profile's labels (no images), and
  the real lines resampled to that size (all real training vehicles, real pedestrians drawn with
  replacement). Target 60 s.

The machine is shared, so the load average is recorded with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import load_params
from pipeline.formats import labels_from_files
from pipeline.mapping import CaptionMapping, mine_rules, pairs_from_frame

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("TRACK2_SHARED_DIR", ROOT.parent / "shared" / "track2"))
N_PED, N_VEH = 83_413, 42_704


def timed(fn, repeats: int, clock=time.perf_counter) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        start = clock()
        out = fn()
        times.append(clock() - start)
    return times, out


def synthetic_full_train() -> pd.DataFrame:
    from pipeline.synth.release import PROFILES, plan_release, write_labels

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for split in ("train", "val", "test"):
            (root / split).mkdir()
        write_labels(root, plan_release(PROFILES["full"], seed=0))
        return labels_from_files([root / "train" / "train_label.txt"])


def real_resampled_train(seed: int = 0) -> pd.DataFrame:
    vehicles = labels_from_files([REAL / "train_vehicle_label.txt"])
    val = labels_from_files([REAL / "val_label_dev.txt"])
    peds = val[val["domain"] == "pedestrian"]
    rng = np.random.default_rng(seed)
    peds = peds.iloc[rng.integers(0, len(peds), N_PED)]
    return pd.concat([vehicles.iloc[:N_VEH], peds], ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parse-captions", type=int, default=100_000)
    args = ap.parse_args()
    if not (REAL / "val_label_dev.txt").is_file():
        raise SystemExit(f"the real Track-2 text is missing: expected {REAL}/val_label_dev.txt")
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "loadavg_before": os.getloadavg()[0]}}

    config = load_params(ROOT / "params.yaml").mapping
    mining = {}
    for name, build in (("synthetic_full", synthetic_full_train), ("real_resampled", real_resampled_train)):
        frame = build()
        times, rules = timed(lambda: mine_rules(pairs_from_frame(frame), config), args.repeats)
        mining[name] = {"lines": len(frame), "rules": len(rules), "seconds_min": round(min(times), 2),
                        "seconds_median": round(statistics.median(times), 2), "target_seconds": 60}
        print(f"mining {name}: {len(frame)} lines -> {len(rules)} rules in {min(times):.1f} s (min)")
        if name == "synthetic_full":
            mapping = CaptionMapping(rules)
    results["mining"] = mining

    # The test set's mix: 10,000 pedestrian and 7,611 vehicle captions (pedestrian ones are longer).
    val = labels_from_files([REAL / "val_label_dev.txt"])
    peds = val[val["domain"] == "pedestrian"]["caption"].tolist()
    vehicles = (labels_from_files([REAL / "train_vehicle_label.txt"])["caption"].tolist()
                + val[val["domain"] == "vehicle"]["caption"].tolist())
    rng = np.random.default_rng(0)
    n_ped = round(args.parse_captions * 10_000 / 17_611)
    pools = {"test_mix": [peds[i] for i in rng.integers(0, len(peds), n_ped)]
             + [vehicles[i] for i in rng.integers(0, len(vehicles), args.parse_captions - n_ped)],
             "pedestrian_only": [peds[i] for i in rng.integers(0, len(peds), args.parse_captions)]}
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    results["parse"] = {"cores": 1, "target_per_s": 50_000, "rules": len(mapping)}
    for name, captions in pools.items():
        rng.shuffle(captions)
        mapping.parse_many(captions[:1000])  # warm the surface cache
        times, _ = timed(lambda: mapping.parse_many(captions), args.repeats)
        rates = [len(captions) / t for t in times]
        # CPU time of this process: what one core does when the shared machine lets it run.
        cpu_times, _ = timed(lambda: mapping.parse_many(captions), args.repeats, clock=time.process_time)
        cpu_rates = [len(captions) / t for t in cpu_times]
        results["parse"][name] = {"captions": len(captions), "captions_per_s_best": round(max(rates)),
                                  "captions_per_s_median": round(statistics.median(rates)),
                                  "captions_per_cpu_s_median": round(statistics.median(cpu_rates))}
        print(f"parsing {name}: {max(rates):,.0f} captions/s best, {statistics.median(rates):,.0f} median wall, "
              f"{statistics.median(cpu_rates):,.0f} per CPU second (1 core)")
    results["machine"]["loadavg_after"] = os.getloadavg()[0]

    out = ROOT / "bench" / "results" / "mapping.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
