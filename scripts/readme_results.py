"""The README's results table, from what `make run` wrote - never typed by hand.

    python scripts/readme_results.py record [--repo .] [--wall-s 512]   # after `make run`
    python scripts/readme_results.py render                              # README block from the record

``record`` copies the headline figures of a finished default-profile run (``<retrieval_dir>/
metrics.json``, ``<baseline_dir>/metrics.json``) into ``docs/results/default_make_run.json`` with
the commit and profile they came from, then renders. ``render`` rewrites the block between the
``results:start`` / ``results:end`` markers of README.md from that record;
tests/code/test_readme_results.py checks the README says exactly what the record says.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "results" / "default_make_run.json"
README = ROOT / "README.md"
START, END = "<!-- results:start (scripts/readme_results.py render) -->", "<!-- results:end -->"
COLUMNS = ("official_map10", "standard_map10", "hit1", "hit10")


def record(repo: Path, wall_s: float | None) -> dict:
    """The headline figures of the run in ``repo`` (its params say where the outputs are)."""
    import yaml

    base = yaml.safe_load((repo / "params.yaml").read_text())["base"]
    if base["profile"] != "default":
        sys.exit(f"error: {repo} ran profile {base['profile']!r}; the README quotes the default profile")
    metrics = json.loads((repo / base["retrieval_dir"] / "metrics.json").read_text())
    baseline_file = repo / base["baseline_dir"] / "metrics.json"
    baseline = json.loads(baseline_file.read_text()) if baseline_file.exists() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    out = {"commit": commit, "profile": base["profile"], "wall_s": wall_s,
           "decoupled": {s: metrics[s] for s in ("val", "test")},
           "classifiers": metrics["classifiers"],
           "baseline": {s: {d: {"official_map10": m["official_map10"]} for d, m in baseline[s].items()}
                        for s in ("val", "test") if s in baseline}}
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return out


def block(rec: dict) -> str:
    """The README's results block for a record."""
    lines = [START, "", f"Measured by `make run` at commit `{rec['commit']}`"
             + (f" ({rec['wall_s'] / 60:.1f} min end to end on the 2-core machine)" if rec.get("wall_s") else "")
             + "; the record is `docs/results/default_make_run.json`.", "",
             "| split | domain | queries | official mAP@10 | standard mAP@10 | hit@1 | hit@10 | baseline official mAP@10 |",
             "|---|---|---|---|---|---|---|---|"]
    for split in ("val", "test"):
        for domain in ("all", "pedestrian", "vehicle"):
            m = rec["decoupled"][split][domain]
            b = rec.get("baseline", {}).get(split, {}).get(domain, {}).get("official_map10")
            lines.append(f"| {split} | {domain} | {m['n_queries']} | "
                         + " | ".join(f"{m[c]:.3f}" for c in COLUMNS) + f" | {'-' if b is None else f'{b:.3f}'} |")
    c = rec["classifiers"]
    lines += ["", f"Classifiers on val: pedestrian accuracy {c['pedestrian_accuracy']:.3f} / mA "
              f"{c['pedestrian_mA']:.3f}, vehicle accuracy {c['vehicle_accuracy']:.3f} / mA {c['vehicle_mA']:.3f}, "
              f"router {c['router_accuracy']:.3f}.", "", END]
    return "\n".join(lines)


def render(readme: Path = README) -> str:
    """README.md with its results block rewritten from the record (returned, and written)."""
    text = readme.read_text()
    if START not in text or END not in text:
        sys.exit(f"error: {readme} has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    new = head + block(json.loads(RECORD.read_text())) + rest.split(END, 1)[1]
    readme.write_text(new)
    return new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="copy a finished run's figures into the record, then render")
    rec.add_argument("--repo", type=Path, default=ROOT)
    rec.add_argument("--wall-s", type=float, default=None, help="the run's measured wall time")
    sub.add_parser("render", help="rewrite the README block from the record")
    args = parser.parse_args()
    if args.command == "record":
        record(args.repo, args.wall_s)
    render()


if __name__ == "__main__":
    main()
