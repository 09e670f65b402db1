"""Benchmarks of the train stage -> bench/results/train.json (+ reports/train/summary.md).

1. ``cache``: the 12 pedestrian subtasks trained side by side, same seed, with the shared
   frozen-prefix cache and with naive recompute (``cache: off``), on a subset of the default
   release; speed ratio and whether the validation figures are equal.
2. ``default``: the default params on the default profile, every (domain, backbone) of
   ``train.backbones``: wall time each and the per-subtask val accuracy / mA next to the
   majority-class baseline.
3. ``imbalance``: pedestrian mA with class weights (the default power) and without (power 0).
4. ``multitask``: the "no decoupling" ablation (one net, all heads, full image) for pedestrians.
5. ``pseudo``: vehicles with a lower pseudo-label threshold: labels added, first vs second round.
6. ``batched`` (not in the default ``--parts``): naive recompute, shared cache per subtask and
   shared cache with batched tails (``train.batched_tails``) on the ``cache`` subset, at 2 and 1
   trainable units, with the seed-to-seed noise of the per-subtask path beside the accuracy delta.

Runs with its own data (a synthetic default release + ingest under ``--work``), its own MLflow
store and output folders; nothing touches the repository's data/ or mlflow.db.

    python bench/bench_train.py [--parts default,cache,pseudo,imbalance,multitask,batched] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

# Before torch is imported: idle OpenMP threads sleep instead of spinning, which keeps 2-core
# machines shared with other processes from slowing down ~10x (see docs/training.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for key, value in {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "DVC_NO_ANALYTICS": "1",
                   "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():
    os.environ.setdefault(key, value)

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("bench_train")


def prepare(work: Path, profile: str = "default", seed: int = 0) -> Path:
    """A synthetic release + ingested tables under ``work`` (reused when present)."""
    prepared = work / f"prepared-{profile}"
    if (prepared / "labels.parquet").exists():
        return prepared
    from pipeline.ingest import ingest_release
    from pipeline.synth import synthesize

    release = work / f"release-{profile}"
    if not (release / "train" / "train_label.txt").exists():
        synthesize(release, profile, seed=seed, workers=2, force=True)
    ingest_release(release, prepared)
    return prepared


def subset(prepared: Path, out: Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """The first ``n_train`` training and ``n_val`` val pedestrians (and one test image)."""
    import pandas as pd

    if (out / "labels.parquet").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    images = pd.read_parquet(prepared / "images.parquet")
    train = images[(images["split"] == "train") & (images["domain"] == "pedestrian")].head(n_train)
    val = images[(images["split"] == "val") & (images["domain"] == "pedestrian")].head(n_val)
    test = images[images["split"] == "test"].head(1)
    keep = pd.concat([train, val, test])
    keep.to_parquet(out / "images.parquet", index=False)
    labels = pd.read_parquet(prepared / "labels.parquet")
    labels.merge(keep[["name", "split"]], on=["name", "split"]).to_parquet(out / "labels.parquet", index=False)
    return out


def params_for(prepared: Path, work: Path, tag: str, **train):
    """Default params, pointed at ``prepared`` and at output folders of their own (``work/tag``)."""
    from pipeline.config import load_params

    out = work / tag
    base = {"prepared_dir": str(prepared), "reports_dir": str(out / "reports"), "experiment": "bench-train",
            "models_dir": str(out / "models"), "predictions_dir": str(out / "predictions"),
            "checkpoint_dir": str(out / "ckpt")}
    return load_params(ROOT / "params.yaml", {"base": base, "train": train})


def run(params, domain: str, backbone: str) -> dict:
    """The train stage with its paths as dvc.yaml names them under ``params.base``'s roots."""
    from pipeline.stage import execute
    from pipeline.train.stage import TrainIO
    from pipeline.train.stage import run as train

    b = params.base
    gate = Path(b.reports_dir) / "validation" / "gate.json"
    gate.parent.mkdir(parents=True, exist_ok=True)
    gate.write_text(json.dumps({"status": "passed"}))  # synthetic data the benchmark made itself
    io = TrainIO(domain, backbone, Path(b.prepared_dir), gate, Path(b.models_dir) / domain / backbone,
                 Path(b.predictions_dir) / domain / backbone,
                 Path(b.reports_dir) / "train" / f"{domain}-{backbone}.json",
                 Path(b.checkpoint_dir) / domain / backbone)
    t0 = time.perf_counter()
    report = execute(f"train-{domain}-{backbone}", train, params, io, section="train", data=(io.prepared,))
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    return report


def bench_cache(work: Path, prepared: Path, backbone: str, n_train: int, n_val: int, epochs: int) -> dict:
    import numpy as np
    import pandas as pd

    small = subset(prepared, work / "prepared-cache-subset", n_train, n_val)
    # Import everything both runs use first, so the first run timed does not pay for it (~5 s).
    import matplotlib.pyplot  # noqa: F401
    import mlflow  # noqa: F401
    import timm  # noqa: F401

    from pipeline import backbones
    from pipeline.train import stage  # noqa: F401

    backbones.create_backbone(backbone)
    out = {"backbone": backbone, "n_train": n_train, "n_val": n_val, "epochs": epochs, "subtasks": 12}
    reports = {}
    for mode in ("memory", "off"):
        p = params_for(small, work, f"cache-{mode}", cache=mode, log_models=False,
                       epochs={"pedestrian": epochs, "vehicle": 1, "router": 1})
        reports[mode] = run(p, "pedestrian", backbone)
        out[f"{mode}_s"] = reports[mode]["wall_s"]
        out[f"{mode}_cpu_s"] = reports[mode]["cpu_s"]
    # The training phase alone (prefix/cache, fits, predictions), without the MLflow logging both share.
    out["train_phase_s"] = {m: reports[m]["train_time_s"] for m in reports}
    out["speedup_train_phase"] = round(reports["off"]["train_time_s"] / reports["memory"]["train_time_s"], 2)
    out["speedup_wall"] = round(out["off_s"] / out["memory_s"], 2)
    out["speedup_cpu"] = round(out["off_cpu_s"] / out["memory_cpu_s"], 2)
    a, b = reports["memory"]["subtasks"], reports["off"]["subtasks"]
    out["accuracy_equal"] = all(a[g]["val_acc"] == b[g]["val_acc"] and a[g]["val_mA"] == b[g]["val_mA"] for g in a)
    out["max_abs_val_acc_diff"] = max(abs(a[g]["val_acc"] - b[g]["val_acc"]) for g in a)
    pa = pd.read_parquet(work / "cache-memory" / "predictions" / "pedestrian" / backbone / "val.parquet")
    pb = pd.read_parquet(work / "cache-off" / "predictions" / "pedestrian" / backbone / "val.parquet")
    out["max_abs_val_prob_diff"] = float(np.abs(pa.drop(columns="name").to_numpy()
                                                - pb.drop(columns="name").to_numpy()).max())
    out["val_acc_cached"] = {g: m["val_acc"] for g, m in a.items()}
    return out


def _acc_diff(a: dict, b: dict) -> dict:
    """Per-subtask val accuracy / mA differences of two reports: mean and max absolute."""
    d_acc = [abs(a[g]["val_acc"] - b[g]["val_acc"]) for g in a]
    d_ma = [abs(a[g]["val_mA"] - b[g]["val_mA"]) for g in a]
    return {"mean_abs_val_acc_diff": round(sum(d_acc) / len(d_acc), 4), "max_abs_val_acc_diff": round(max(d_acc), 4),
            "mean_abs_val_mA_diff": round(sum(d_ma) / len(d_ma), 4), "max_abs_val_mA_diff": round(max(d_ma), 4)}


def bench_batched(work: Path, prepared: Path, backbone: str, n_train: int, n_val: int, epochs: int,
                  units: tuple[int, ...] = (2, 1)) -> dict:
    """Naive recompute, shared cache per subtask and shared cache with batched tails
    (``train.batched_tails``), side by side on the `cache` part's subset, per trainable units;
    plus the per-subtask path with another ``train.seed``: the seed-to-seed noise the batched
    path's accuracy difference is compared with."""
    small = subset(prepared, work / f"prepared-batched-{n_train}-{n_val}", n_train, n_val)
    import matplotlib.pyplot  # noqa: F401  (imports paid before the first timed run)
    import mlflow  # noqa: F401
    import timm  # noqa: F401

    from pipeline import backbones
    from pipeline.train import stage  # noqa: F401

    backbones.create_backbone(backbone)
    out: dict = {"backbone": backbone, "n_train": n_train, "n_val": n_val, "epochs": epochs, "subtasks": 12,
                 "load_avg_at_start": round(os.getloadavg()[0], 2), "by_trainable": {}}
    runs = {"naive": {"cache": "off"}, "per_subtask": {"cache": "memory"},
            "batched": {"cache": "memory", "batched_tails": True},
            "per_subtask_seed1": {"cache": "memory", "seed": 1}}
    for n_units in units:
        reports, row = {}, {}
        for tag, extra in runs.items():
            p = params_for(small, work, f"batched-{n_units}-{tag}", log_models=False,
                           trainable={"pedestrian": n_units, "vehicle": 1, "router": 1},
                           epochs={"pedestrian": epochs, "vehicle": 1, "router": 1}, **extra)
            reports[tag] = r = run(p, "pedestrian", backbone)
            row[tag] = {"wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "train_phase_s": round(r["train_time_s"], 2),
                        "load_avg": round(os.getloadavg()[0], 2),
                        "mean_val_acc": round(sum(m["val_acc"] for m in r["subtasks"].values()) / 12, 4),
                        "mean_val_mA": round(sum(m["val_mA"] for m in r["subtasks"].values()) / 12, 4)}
            log.info("batched bench, trainable %d, %s: %s", n_units, tag, row[tag])
        t = {k: v["train_phase_s"] for k, v in row.items()}
        c = {k: v["cpu_s"] for k, v in row.items()}
        row["speedup_train_phase"] = {"per_subtask_vs_naive": round(t["naive"] / t["per_subtask"], 2),
                                      "batched_vs_naive": round(t["naive"] / t["batched"], 2),
                                      "batched_vs_per_subtask": round(t["per_subtask"] / t["batched"], 2)}
        row["speedup_cpu"] = {"per_subtask_vs_naive": round(c["naive"] / c["per_subtask"], 2),
                              "batched_vs_naive": round(c["naive"] / c["batched"], 2),
                              "batched_vs_per_subtask": round(c["per_subtask"] / c["batched"], 2)}
        ps = reports["per_subtask"]["subtasks"]
        row["accuracy"] = {"batched_vs_per_subtask": _acc_diff(reports["batched"]["subtasks"], ps),
                           "seed1_vs_seed0_per_subtask": _acc_diff(reports["per_subtask_seed1"]["subtasks"], ps),
                           "naive_vs_per_subtask": _acc_diff(reports["naive"]["subtasks"], ps),
                           "val_acc": {tag: {g: m["val_acc"] for g, m in r["subtasks"].items()}
                                       for tag, r in reports.items()},
                           "val_mA": {tag: {g: m["val_mA"] for g, m in r["subtasks"].items()}
                                      for tag, r in reports.items()}}
        out["by_trainable"][str(n_units)] = row
    return out


def table(reports: list[dict]) -> tuple[list[dict], str]:
    rows, lines = [], ["| domain | backbone | subtask | val acc | majority acc | val mA | majority mA | beats both |",
                       "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        for g, m in r["subtasks"].items():
            beats = m["val_acc"] > m["majority_acc"] and m["val_mA"] > m["majority_mA"]
            rows.append({"domain": r["domain"], "backbone": r["backbone"], "subtask": g, **m, "beats": beats})
            lines.append(f"| {r['domain']} | {r['backbone']} | {g} | {m['val_acc']:.3f} | {m['majority_acc']:.3f} "
                         f"| {m['val_mA']:.3f} | {m['majority_mA']:.3f} | {'yes' if beats else '**no**'} |")
    return rows, "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="default,cache,pseudo,imbalance,multitask")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / ".work" / "train")
    ap.add_argument("--prepared", type=Path, default=None,
                    help="ingested default-profile tables to use (default: synthesize + ingest under --work)")
    ap.add_argument("--cache-train", type=int, default=600, help="training pedestrians in the cache benchmark")
    ap.add_argument("--cache-val", type=int, default=100)
    ap.add_argument("--cache-epochs", type=int, default=6)
    ap.add_argument("--batched-units", default="2,1", help="trainable units compared by the batched part")
    ap.add_argument("--pseudo-threshold", type=float, default=0.6)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("alembic", "mlflow.store", "urllib3", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{args.work / 'mlflow.db'}"
    os.environ["TRACK2_ROOT"] = str(args.work)  # MLflow artifacts under the work folder

    import torch

    from pipeline.config import load_params

    defaults = load_params(ROOT / "params.yaml").train
    parts = set(args.parts.split(","))
    results_path = ROOT / "bench" / "results" / "train.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "load_avg_at_start": os.getloadavg()[0], "python": platform.python_version(),
                          "torch": torch.__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    prepared = args.prepared or prepare(args.work)

    def save() -> None:
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2) + "\n")

    if "default" in parts:
        reports, times = [], {}
        t0 = time.perf_counter()
        for backbone in defaults.backbones:
            for domain in ("pedestrian", "vehicle", "router"):
                r = run(params_for(prepared, args.work, "default"), domain, backbone)
                reports.append(r)
                times[f"{domain}/{backbone}"] = {"wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
                                                 "load_avg": round(os.getloadavg()[0], 2)}
        rows, md = table(reports)
        results["default_profile"] = {
            "total_s": round(time.perf_counter() - t0, 1),
            "total_cpu_s": round(sum(t["cpu_s"] for t in times.values()), 1), "time_s": times,
            "beats_majority": f"{sum(r['beats'] for r in rows)}/{len(rows)}",
            "pseudo_labels_added": {r["backbone"]: r.get("pseudo_labels_added") for r in reports
                                    if r["domain"] == "vehicle"},
            "pseudo_first_round": {r["backbone"]: r.get("first_round") for r in reports if r["domain"] == "vehicle"},
            "subtasks": rows}
        summary = ROOT / "reports" / "train" / "summary.md"
        summary.parent.mkdir(parents=True, exist_ok=True)
        d = results["default_profile"]
        summary.write_text(f"# Train: default profile, default params\n\nTotal {d['total_s']} s wall, "
                           f"{d['total_cpu_s']} CPU-s on {os.cpu_count()} shared CPUs; per stage {times}.\n"
                           f"{results['default_profile']['beats_majority']} subtasks beat the majority "
                           f"baseline on both val accuracy and mA.\n\n{md}\n")
        save()
    if "batched" in parts:
        results["batched_tails"] = bench_batched(args.work, prepared, defaults.backbones[0], args.cache_train,
                                                 args.cache_val, args.cache_epochs,
                                                 tuple(int(u) for u in args.batched_units.split(",")))
        save()
    if "cache" in parts:
        results["cache_vs_recompute"] = bench_cache(args.work, prepared, defaults.backbones[0],
                                                    args.cache_train, args.cache_val, args.cache_epochs)
        save()
    backbone = defaults.backbones[0]

    def reference() -> dict:
        """The default-params pedestrian run of the first backbone (run here if `default` was not)."""
        path = args.work / "default" / "reports" / "train" / f"pedestrian-{backbone}.json"
        if path.exists():  # made by the `default` part with the same params
            return json.loads(path.read_text())
        return run(params_for(prepared, args.work, "reference", log_models=False), "pedestrian", backbone)

    def summary_of(r: dict, **extra) -> dict:
        return {**extra, "wall_s": r.get("wall_s", r["time_s"]), "cpu_s": r["cpu_s"],
                "mean_val_mA": round(sum(m["val_mA"] for m in r["subtasks"].values()) / len(r["subtasks"]), 4),
                "mean_val_acc": round(sum(m["val_acc"] for m in r["subtasks"].values()) / len(r["subtasks"]), 4),
                "val_mA": {g: m["val_mA"] for g, m in r["subtasks"].items()},
                "val_acc": {g: m["val_acc"] for g, m in r["subtasks"].items()}}

    if "pseudo" in parts:  # vehicles with a lower pseudo-label threshold: labels added, round 1 vs 2
        r = run(params_for(prepared, args.work, "pseudo", log_models=False,
                           pseudo_thresholds={g: args.pseudo_threshold for g in ("color", "type", "brand")}),
                "vehicle", backbone)
        results["pseudo_labels"] = {
            "backbone": backbone, "threshold": args.pseudo_threshold, "added": r.get("pseudo_labels_added"),
            "first_round": r.get("first_round"),
            "second_round": {g: {"val_acc": m["val_acc"], "val_mA": m["val_mA"]} for g, m in r["subtasks"].items()}}
        save()
    if "imbalance" in parts:  # the default run is the weighted side
        r = run(params_for(prepared, args.work, "imbalance-unweighted", class_weight_power=0.0,
                           log_models=False), "pedestrian", backbone)
        results["class_weights"] = {
            "backbone": backbone,
            "weighted": summary_of(reference(), class_weight_power=defaults.class_weight_power),
            "unweighted": summary_of(r, class_weight_power=0.0)}
        save()
    if "multitask" in parts:  # against the decoupled default run
        r = run(params_for(prepared, args.work, "multitask", multitask=True, log_models=False),
                "pedestrian", backbone)
        results["multitask_ablation"] = {"backbone": backbone, "multitask": summary_of(r),
                                         "decoupled": summary_of(reference())}
        save()
    log.info("wrote %s", results_path)


if __name__ == "__main__":
    main()
