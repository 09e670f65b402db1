"""The ablation table (issue 14): the paper's Table 1 ladder and this project's own switches, each
row a DVC experiment, collected into ``ablation.md`` and ``ablation.png``.

A row is data (:data:`ROWS`): its name, the paper step it mirrors and the ``-S`` overrides that
turn the shipped params into it. :func:`queue` queues one experiment per (row, seed) as
``ablation-<row>-s<seed>``; :func:`run_queue` runs DVC's queue one experiment at a time (so a row
reuses what an earlier one trained through DVC's run cache) and waits; :func:`collect` reads every
experiment's params and headline metrics from ``dvc exp show --json``; :func:`write_report` turns
them into the table (mean and range over seeds), the paper's ladder beside it, a "which steps
help" paragraph computed from the figures, and a bar chart with the seeds' range as error bars.

Which rows retrain: every ``train.*`` change retrains the three domains of the backbones listed
(the train stages depend on the whole ``train`` section). ``single`` and ``full-distance`` change
only ``retrieve.*``, so they rank with the ensemble's members from the run cache (retrieve and
register run); ``clip`` at seed 0 is the shipped params (nothing trains), at seed s > 0 only the
baseline stage trains. ``multitask``, ``full-ft`` and the three ``no-*`` rows train one backbone.
The time columns are the train stages' own ``time_s``/``cpu_s`` from their cached metrics files:
the time of the run that produced the models a row ranks with, also when the run cache skipped
the stage in this experiment (the ``trained here`` column says which stages ran in it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

log = logging.getLogger(__name__)

#: ``{member}`` in an override is the first of params.yaml's ``train.backbones`` (the single backbone).
MEMBER = "{member}"
ONE_MEMBER = "retrieve.members={" + MEMBER + ": 1.0}"   # rank with that backbone alone
SINGLE = ("train.backbones=[" + MEMBER + "]", ONE_MEMBER)  # ... and train only it
FULL_FT = "train.trainable.*=full"


@dataclass(frozen=True)
class Row:
    """One row of the table: an experiment per seed, the shipped params plus ``overrides``."""

    name: str                      # experiments are ablation-<name>-s<seed>
    label: str                     # what the table calls it
    mirrors: str                   # the paper step (or project switch) it stands for
    overrides: tuple[str, ...]     # `dvc exp run -S` values; `key={...}` replaces the mapping
    source: str = "retrieve"       # whose figures: retrieve (decoupled models) | baseline (CLIP-style)
    headline: bool = False         # run with every seed, shown as mean and range
    paper: float | None = None     # the paper's test A mAP (EVA-L) for that step


ROWS: tuple[Row, ...] = (
    Row("clip", "1. CLIP-style baseline", "CLIP-style dual encoder (project's baseline stage)", (),
        source="baseline", headline=True),
    Row("multitask", "2. one multi-task model", "multi-label (no decoupling), full fine-tuning",
        (*SINGLE, "train.multitask=true", FULL_FT), paper=0.720),
    Row("full-ft", "3. decoupled, full fine-tuning", "+ decoupling", (*SINGLE, FULL_FT), paper=0.761),
    Row("single", "4. decoupled + partial freezing (one backbone)", "+ partial freezing (keywords-only)",
        (ONE_MEMBER,), headline=True, paper=0.783),
    Row("full-distance", "5. row 4, full-vector distance", "keywords-only off",
        (ONE_MEMBER, "retrieve.distance=full")),
    # Every group on the full image (what a group without a crop gets): emptying the mapping
    # instead makes DVC write `{}` under the commented key, which is not YAML.
    Row("no-crops", "6a. row 4 without crops", "project switch: crops", (*SINGLE, "train.crops.*=full")),
    Row("no-pseudo", "6b. row 4 without pseudo-labels", "project switch: pseudo-labels",
        (*SINGLE, "train.pseudo_label=false")),
    Row("no-class-weights", "6c. row 4 without class weights", "project switch: class weights",
        (*SINGLE, "train.class_weight_power=0.0")),
    Row("ensemble", "7. ensemble of two backbones (shipped)", "ensemble", (), headline=True, paper=0.820),
)
ROW_NAMES = tuple(r.name for r in ROWS)


@dataclass(frozen=True)
class Step:
    """A comparison the paragraph reports: ``to`` minus ``before``, next to the paper's step."""

    name: str
    before: str
    to: str
    paper: tuple[float, float] | None = None


STEPS: tuple[Step, ...] = (
    Step("decoupling", "multitask", "full-ft", (0.720, 0.761)),
    Step("partial freezing", "full-ft", "single", (0.761, 0.783)),
    Step("keywords-only distance (paper: with 448 px)", "full-distance", "single", (0.783, 0.809)),
    Step("ensemble of two backbones", "single", "ensemble", (0.809, 0.820)),
    Step("crops", "no-crops", "single"),
    Step("pseudo-labels", "no-pseudo", "single"),
    Step("class weights", "no-class-weights", "single"),
    Step("decoupled ensemble instead of the CLIP-style baseline", "clip", "ensemble"),
)

#: The paper's ladder (test A, EVA-L).
PAPER_LADDER = (("multi-label", 0.720), ("+ decoupling", 0.761), ("+ partial freezing", 0.783),
                ("448 px + keywords-only", 0.809), ("ensemble", 0.820))

SPLITS = ("test", "val")
DOMAINS = ("all", "pedestrian", "vehicle")
FIGURES = ("official_map10", "standard_map10")
HEADLINE_FIGURE = "test/all/official_map10"   # what the plot and the paragraph compare
TERMINAL = ("Success", "Failed", "Revoked")


class AblationError(ValueError):
    """Bad rows or seeds, a DVC command that failed, or no experiment to collect."""


# ----------------------------------------------------------------------------- rows -> -S values

def pick_rows(names: Iterable[str] | None) -> list[Row]:
    """The rows named (all without names), in the table's order; an unknown name is an error."""
    wanted = list(names or ROW_NAMES)
    unknown = [n for n in wanted if n not in ROW_NAMES]
    if unknown:
        raise AblationError(f"unknown rows {unknown}; known: {list(ROW_NAMES)}")
    return [r for r in ROWS if r.name in wanted]


def _lookup(params: Mapping[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise AblationError(f"override names {dotted!r}, which params.yaml does not have")
        node = node[part]
    return node


def expand(override: str, params: Mapping[str, Any]) -> list[str]:
    """``override`` as Hydra overrides DVC applies: ``{member}`` filled in; ``key.*=v`` as
    ``key.k=v`` for every key of the mapping; ``key={...}`` (which Hydra would merge into the
    mapping) as a replacement: ``~key.k`` for each key it drops, then ``key.k=v`` for each it sets."""
    override = override.replace(MEMBER, str(_lookup(params, "train.backbones")[0]))
    key, sep, value = override.partition("=")
    if not sep:
        raise AblationError(f"override {override!r} is not key=value")
    if key.endswith(".*"):
        old = _lookup(params, key[:-2])
        if not isinstance(old, Mapping) or not old:
            raise AblationError(f"override {override!r}: {key[:-2]} is not a non-empty mapping "
                                "in params.yaml")
        return [f"{key[:-2]}.{k}={value}" for k in old]
    parsed = yaml.safe_load(value)
    if not isinstance(parsed, dict):
        return [override]
    old = _lookup(params, key)
    if not isinstance(old, Mapping):
        raise AblationError(f"override {override!r}: {key} is not a mapping in params.yaml")
    if not parsed:  # DVC would write `{}` under the key's comment: broken YAML
        raise AblationError(f"override {override!r} empties a mapping; set its values instead (key.*=...)")
    dump = lambda v: json.dumps(v) if not isinstance(v, str) else v  # noqa: E731 - yaml scalars
    return ([f"~{key}.{k}" for k in old if k not in parsed]
            + [f"{key}.{k}={dump(v)}" for k, v in parsed.items()])


def experiment_name(row: Row, seed: int) -> str:
    return f"ablation-{row.name}-s{seed}"


def overrides_for(row: Row, seed: int, params: Mapping[str, Any], profile: str | None) -> list[str]:
    """Every ``-S`` value of the row's experiment at ``seed``: the row's, the seed (train.seed, or
    baseline.seed for the CLIP-style row: training draws only, the data stays) and the profile."""
    out = [o for ov in row.overrides for o in expand(ov, params)]
    out.append(f"{'baseline' if row.source == 'baseline' else 'train'}.seed={seed}")
    if profile:
        out.append(f"base.profile={profile}")
    return out


def plan(rows: Sequence[Row], seeds: Sequence[int]) -> list[tuple[Row, int]]:
    """(row, seed) pairs: headline rows with every seed, the others with the first."""
    if not seeds:
        raise AblationError("no seeds")
    return [(r, s) for r in rows for s in (seeds if r.headline else seeds[:1])]


# ----------------------------------------------------------------------------- DVC

def environment(root: Path) -> dict[str, str]:
    """The environment of the DVC commands: queued experiments run in a temporary copy, so a
    relative (or missing) MLflow URI would log into the copy and vanish; make it absolute."""
    env = dict(os.environ)
    if not env.get("MLFLOW_TRACKING_URI"):
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root.resolve() / 'mlflow.db'}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def dvc(root: Path, env: Mapping[str, str], *args: str, timeout: float = 600, check: bool = True) -> str:
    result = subprocess.run(["dvc", *args], cwd=root, env=dict(env), capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise AblationError(f"dvc {' '.join(args[:3])} failed: {' | '.join(tail)}")
    return result.stdout


def queue(root: Path, env: Mapping[str, str], runs: Sequence[tuple[Row, int]],
          profile: str | None, rerun: bool = False) -> list[str]:
    """Queue one experiment per (row, seed) and return the names queued.

    An experiment of the same name that finished on this commit (``dvc exp show`` lists only
    HEAD's) is kept, so adding a seed does not rerun the others; with ``rerun`` - or when it is
    still queued or running - it is removed and queued again.
    """
    params = yaml.safe_load((root / "params.yaml").read_text())
    existing = collect_raw(root, env, finished_only=False)  # one `dvc exp show`: it takes a while
    if not rerun:
        done = {n for n, exp in existing.items() if exp["finished"] and exp["metrics"]}
        kept = [experiment_name(r, s) for r, s in runs if experiment_name(r, s) in done]
        if kept:
            log.info("keeping experiments already run on this commit (--rerun to redo them): %s", kept)
        runs = [(r, s) for r, s in runs if experiment_name(r, s) not in done]
    names = [experiment_name(r, s) for r, s in runs]
    stale = [n for n in names if n in existing]
    if stale:
        log.info("removing earlier experiments %s", stale)
        dvc(root, env, "exp", "remove", *stale)
    for (row, seed), name in zip(runs, names):
        sets = overrides_for(row, seed, params, profile)
        log.info("queue %s: %s", name, " ".join(sets) or "(shipped params)")
        dvc(root, env, "exp", "run", "--queue", "--name", name, *[a for s in sets for a in ("-S", s)])
    return names


def queue_states(root: Path, env: Mapping[str, str]) -> dict[str, str]:
    """``{experiment name: Queued | Running | Success | Failed ...}`` from ``dvc queue status``."""
    states: dict[str, str] = {}
    for line in dvc(root, env, "queue", "status", check=False).splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1] in (*TERMINAL, "Queued", "Running"):
            states[parts[1]] = parts[-1]
    return states


def start_queue(root: Path, env: Mapping[str, str]) -> None:
    """``dvc queue start -j 1``. Its output goes to a file, not a pipe: the worker it spawns
    inherits the pipe, so reading it would wait for the whole queue to finish."""
    log_path = root / ".dvc" / "tmp" / "ablation-queue-start.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as out:
        result = subprocess.run(["dvc", "queue", "start", "-j", "1"], cwd=root, env=dict(env), stdout=out,
                                stderr=subprocess.STDOUT, timeout=600)
    if result.returncode != 0:
        tail = log_path.read_text().strip().splitlines()[-3:]
        raise AblationError(f"dvc queue start failed: {' | '.join(tail)}")


def run_queue(root: Path, env: Mapping[str, str], names: Sequence[str], timeout_s: float,
              poll_s: float = 10.0) -> dict[str, str]:
    """Start DVC's queue with one worker (a row then reuses what an earlier one trained), wait
    until every experiment of ``names`` ended, stop the worker; return their states."""
    started, states = time.perf_counter(), {}
    try:
        start_queue(root, env)
        from tqdm import tqdm

        with tqdm(total=len(names), desc="ablation experiments", unit="exp") as bar:
            while True:
                states = queue_states(root, env)
                done = [n for n in names if states.get(n) in TERMINAL]
                bar.n = len(done)
                bar.refresh()
                if len(done) == len(names):
                    break
                if time.perf_counter() - started > timeout_s:
                    raise AblationError(f"the queue did not finish in {timeout_s:.0f} s: {states}")
                time.sleep(poll_s)
    finally:
        dvc(root, env, "queue", "stop", check=False, timeout=900)
    failed = [n for n in names if states.get(n) != "Success"]
    if failed:
        log.warning("experiments that did not succeed: %s (see `dvc queue logs <name>`)", failed)
    return {n: states.get(n, "missing") for n in names}


def collect_raw(root: Path, env: Mapping[str, str], finished_only: bool = True) -> dict[str, dict[str, Any]]:
    """``{experiment name: {params, metrics, rev, finished}}`` of the finished experiments of HEAD,
    from ``dvc exp show --json``. A queued or running experiment is left out (``finished_only``):
    DVC shows it with the workspace's metrics, which would pass for its own."""
    out: dict[str, dict[str, Any]] = {}
    for commit in json.loads(dvc(root, env, "exp", "show", "--json", timeout=900) or "[]"):
        for exp in commit.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            finished = state not in ("queued", "running")
            if finished_only and not finished:
                log.info("%s is still %s: left out", exp.get("name"), state)
                continue
            for rev in exp.get("revs") or []:
                name, data = rev.get("name"), rev.get("data") or {}
                if not name or not data:
                    continue
                params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
                metrics = {Path(k).name: (v or {}).get("data", {})
                           for k, v in (data.get("metrics") or {}).items()}
                out[name] = {"params": params, "metrics": metrics, "rev": rev.get("rev"), "finished": finished}
    return out


# ----------------------------------------------------------------------------- figures per experiment

def figures_of(row: Row, exp: Mapping[str, Any]) -> dict[str, float]:
    """The table's columns for one experiment: ``<split>/<domain>/<figure>``, classifier mA per
    domain, and the training wall and CPU seconds (the baseline stage's, or the sum over the train
    stages of the row's members)."""
    metrics, params = exp["metrics"], exp["params"]
    source = metrics.get("baseline.json" if row.source == "baseline" else "retrieve.json") or {}
    out: dict[str, float] = {}
    for split in SPLITS:
        for domain in DOMAINS:
            for fig in FIGURES:
                value = ((source.get(split) or {}).get(domain) or {}).get(fig)
                if isinstance(value, (int, float)):
                    out[f"{split}/{domain}/{fig}"] = float(value)
    if row.source == "baseline":
        for key in ("time_s", "cpu_s"):
            if isinstance(source.get(key), (int, float)):
                out[key] = float(source[key])
        return out
    for domain in ("pedestrian", "vehicle"):
        value = (source.get("classifiers") or {}).get(f"{domain}_mA")
        if isinstance(value, (int, float)):
            out[f"mA/{domain}"] = float(value)
    members = list((params.get("retrieve") or {}).get("members") or {})
    domains = ("pedestrian", "vehicle", "router")
    stages = [metrics.get(f"train-{d}-{m}.json") or {} for d in domains for m in members]
    for key in ("time_s", "cpu_s"):
        values = [s.get(key) for s in stages]
        if values and all(isinstance(v, (int, float)) for v in values):
            out[key] = float(sum(values))
    return out


def stages_run(tracking_uri: str, experiment: str, names: Sequence[str]) -> dict[str, list[str]]:
    """``{experiment name: [stage (domain/backbone) ...]}``: the training stages that really ran in
    each DVC experiment, from the MLflow runs tagged with its name (cached stages log no run)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    out: dict[str, list[str]] = {n: [] for n in names}
    if exp is None:
        return out
    for name in names:
        runs = client.search_runs([exp.experiment_id], f"tags.`dvc.exp_name` = '{name}'")
        for r in runs:
            tags = r.data.tags
            stage = tags.get("stage", "")
            if "mlflow.parentRunId" in tags:
                continue  # a subtask's child run; its stage run counts
            if stage == "baseline":
                out[name].append(stage)
            elif stage.startswith("train"):  # the stage run is named train-<domain>-<backbone>
                out[name].append(f"{tags.get('domain')}/{tags.get('backbone')}")
        out[name].sort()
    return out


@dataclass
class Cell:
    """One row's figure over its seeds."""

    values: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def spread(self) -> float:
        return float(max(self.values) - min(self.values)) if self.values else 0.0

    def text(self, digits: int = 3) -> str:
        if not self.values:
            return "—"
        if len(self.values) == 1:
            return f"{self.values[0]:.{digits}f}"
        return f"{self.mean:.{digits}f} [{min(self.values):.{digits}f}, {max(self.values):.{digits}f}]"


@dataclass
class Result:
    """What the report is written from."""

    rows: list[Row]
    seeds: list[int]
    cells: dict[str, dict[str, Cell]]         # row -> column -> cell
    experiments: dict[str, list[str]]          # row -> experiment names found
    missing: dict[str, list[str]]              # row -> experiment names planned but not found
    trained: dict[str, list[str]] = field(default_factory=dict)  # experiment -> stages that ran in it
    member: str = MEMBER                       # what {member} stands for, in the overrides shown

    def to_json(self) -> dict[str, Any]:
        return {"seeds": self.seeds, "rows": [
            {"name": r.name, "label": r.label, "mirrors": r.mirrors, "paper": r.paper,
             "overrides": list(r.overrides), "experiments": self.experiments.get(r.name, []),
             "missing": self.missing.get(r.name, []),
             "figures": {c: cell.values for c, cell in self.cells.get(r.name, {}).items()}}
            for r in self.rows], "trained_here": self.trained}


def gather(rows: Sequence[Row], seeds: Sequence[int], raw: Mapping[str, Mapping[str, Any]]) -> Result:
    """Each row's cells over the seeds whose experiment exists."""
    cells: dict[str, dict[str, Cell]] = {}
    found: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    for row, seed in plan(rows, seeds):
        name = experiment_name(row, seed)
        if name not in raw:
            missing.setdefault(row.name, []).append(name)
            continue
        found.setdefault(row.name, []).append(name)
        for col, value in figures_of(row, raw[name]).items():
            cells.setdefault(row.name, {}).setdefault(col, Cell()).values.append(value)
    return Result(list(rows), list(seeds), cells, found, missing)


# ----------------------------------------------------------------------------- the report

def noise(result: Result, column: str = HEADLINE_FIGURE) -> float | None:
    """The largest seed-to-seed range of ``column`` among rows run with several seeds."""
    spreads = [c[column].spread for c in result.cells.values() if column in c and len(c[column].values) > 1]
    return max(spreads) if spreads else None


def which_steps_help(result: Result, column: str = HEADLINE_FIGURE) -> list[str]:
    """One sentence per :data:`STEPS` entry whose two rows have ``column``: the change here, the
    paper's, and whether it is beyond the seeds' noise (the largest range of a multi-seed row)."""
    band = noise(result, column)
    lines = []
    for step in STEPS:
        a, b = (result.cells.get(step.before, {}).get(column), result.cells.get(step.to, {}).get(column))
        if a is None or b is None or not a.values or not b.values:
            continue
        delta = b.mean - a.mean
        if band is None:
            verdict = "no second seed to judge the noise by"
        elif abs(delta) <= band:
            verdict = f"within the seeds' noise (±{band:.3f})"
        else:
            verdict = "helps" if delta > 0 else "hurts"
            verdict = f"{verdict}: beyond the seeds' noise ({band:.3f})"
        paper = ""
        if step.paper:
            (p0, p1) = step.paper
            paper = f"; the paper: {p0:.3f} → {p1:.3f} ({p1 - p0:+.3f})"
        lines.append(f"- **{step.name}** ({step.before} → {step.to}): {a.mean:.3f} → {b.mean:.3f} "
                     f"({delta:+.3f}), {verdict}{paper}.")
    return lines


def _table(result: Result, columns: Sequence[tuple[str, str]], digits: int = 3) -> list[str]:
    head = "| row | seeds | " + " | ".join(t for _, t in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    for row in result.rows:
        cells = result.cells.get(row.name, {})
        n = len(result.experiments.get(row.name, []))
        text = [cells[c].text(0 if c.endswith("_s") else digits) if c in cells else "—" for c, _ in columns]
        lines.append(f"| {row.label} | {n} | " + " | ".join(text) + " |")
    return lines


def render_markdown(result: Result, command: str, plot_name: str) -> str:
    """The report: three tables (test, val, classifier and time), the paper's ladder, the steps."""
    out = ["# Ablation", "",
           f"Reproduce: `{command}`. Each row is a DVC experiment per seed (`ablation-<row>-s<seed>`; "
           "`dvc exp show` lists them, their MLflow runs carry the name in tag `dvc.exp_name`). "
           f"Seeds {result.seeds} are `train.seed` (`baseline.seed` for row 1): training draws only, "
           "the data set is the same. Rows run with several seeds show `mean [min, max]`.", ""]
    for split in SPLITS:
        cols = [(f"{split}/{d}/{f}", f"{split} {d} {'official' if f.startswith('official') else 'standard'}")
                for d in DOMAINS for f in FIGURES]
        out += [f"## {split.capitalize()} mAP@10 (official and standard, per domain)", "",
                *_table(result, cols), ""]
    cols = [("mA/pedestrian", "classifier mA pedestrian"), ("mA/vehicle", "classifier mA vehicle"),
            ("time_s", "training wall s"), ("cpu_s", "training CPU s")]
    out += ["## Classifier mA and training time", "", *_table(result, cols), "",
            "Classifier mA: the ranked members' ensemble, val split (retrieve's `classifiers`); the "
            "CLIP-style row has no attribute classifier. Training time: the CLIP-style row's baseline "
            "stage, the other rows' train stages of the members they rank with, summed (wall and CPU "
            "seconds of the run that produced the models: where DVC's run cache restored a stage, the "
            "figure is the cached run's, not this experiment's; see *trained here*).", ""]
    if result.trained:
        out += ["Trained here (stages that ran in the experiment, from its MLflow runs):", ""]
        for row in result.rows:
            for name in result.experiments.get(row.name, []):
                stages = result.trained.get(name, [])
                ran = ", ".join(stages) if stages else "no training (restored from the run cache)"
                out.append(f"- `{name}`: {ran}")
        out.append("")
    out += ["## Next to the paper's ladder (test A, EVA-L)", "",
            "| mirrors (paper step) | paper mAP | row here | overrides | here: test all official mAP@10 |",
            "|---|---|---|---|---|"]
    for row in result.rows:
        cell = result.cells.get(row.name, {}).get(HEADLINE_FIGURE)
        paper = f"{row.paper:.3f}" if row.paper is not None else "—"
        sets = " ".join(row.overrides).replace(MEMBER, result.member) or "shipped params"
        out.append(f"| {row.mirrors} | {paper} | {row.label} | `{sets}` | "
                   f"{cell.text() if cell else '—'} |")
    out += ["", "Paper: " + " → ".join(f"{n} {v:.3f}" for n, v in PAPER_LADDER) + ".", "",
            "## Which steps help here", "", f"Change of the mean {HEADLINE_FIGURE.replace('/', ' ')} "
            "between two rows, against the largest seed-to-seed range of a row run with several seeds:", ""]
    out += which_steps_help(result) or ["- (no step has both of its rows in this run)"]
    missing = [n for names in result.missing.values() for n in names]
    if missing:
        out += ["", f"Not found (not run, or failed): {', '.join(missing)}."]
    out += ["", f"![ablation]({plot_name})", ""]
    return "\n".join(out)


def write_plot(result: Result, path: Path, column: str = HEADLINE_FIGURE) -> None:
    """A bar per row: the mean of ``column``, the seeds' range as error bars, the paper's figure as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result.rows if column in result.cells.get(r.name, {})]
    cells = [result.cells[r.name][column] for r in rows]
    means = np.array([c.mean for c in cells])
    err = np.array([[c.mean - min(c.values) for c in cells], [max(c.values) - c.mean for c in cells]])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.2))
    x = np.arange(len(rows))
    ax.bar(x, means, yerr=err if len(rows) else None, capsize=4, color="#4c78a8",
           label="here (mean, seeds' range)")
    paper = [(i, r.paper) for i, r in enumerate(rows) if r.paper is not None]
    if paper:
        ax.plot([i for i, _ in paper], [v for _, v in paper], "o", color="#e45756",
                label="paper (test A, EVA-L)")
    ax.set_xticks(x, [r.name for r in rows], rotation=30, ha="right")
    ax.set_ylabel(column.replace("/", " "))
    ax.set_ylim(0, 1)
    ax.set_title("Ablation: " + column.replace("/", " "))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(result: Result, out: Path, command: str) -> tuple[Path, Path]:
    """``ablation.md``, ``ablation.png`` and ``ablation.json`` (every value) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md, png = out / "ablation.md", out / "ablation.png"
    write_plot(result, png)
    md.write_text(render_markdown(result, command, png.name))
    (out / "ablation.json").write_text(json.dumps(result.to_json(), indent=2))
    return md, png


# ----------------------------------------------------------------------------- the command

def parse_list(text: str | None, kind: type = str) -> list:
    """``a,b`` -> ``[a, b]`` (ints for seeds); an empty item is an error."""
    if text is None:
        return []
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise AblationError(f"empty item in {text!r}")
    try:
        return [kind(t) for t in items]
    except ValueError as e:
        raise AblationError(f"not a list of {kind.__name__}: {text!r}") from e


def ablation(root: Path, rows: Sequence[str] | None, seeds: Sequence[int], profile: str | None,
             reuse: bool, out: Path, command: str, timeout_s: float = 6 * 3600, rerun: bool = False) -> Result:
    """Queue and run the rows not yet run on this commit (all with ``rerun``; none with
    ``reuse``: only collect), then write the report."""
    picked = pick_rows(rows)
    if any(s < 0 for s in seeds):
        raise AblationError(f"seeds must be non-negative, got {list(seeds)}")
    env = environment(root)
    runs = plan(picked, seeds)
    if not reuse:
        names = queue(root, env, runs, profile, rerun)
        if names:
            started = time.perf_counter()
            states = run_queue(root, env, names, timeout_s)
            log.info("%d experiments in %.0f s: %s", len(names), time.perf_counter() - started, states)
    raw = collect_raw(root, env)
    result = gather(picked, seeds, raw)
    result.member = str(yaml.safe_load((root / "params.yaml").read_text())["train"]["backbones"][0])
    if not result.experiments:
        raise AblationError(f"no ablation experiment found for rows {[r.name for r in picked]} "
                            f"(looked for {[experiment_name(r, s) for r, s in runs]}; run without --reuse)")
    experiment = yaml.safe_load((root / "params.yaml").read_text())["base"]["experiment"]
    try:
        result.trained = stages_run(env["MLFLOW_TRACKING_URI"], experiment,
                                    [n for names in result.experiments.values() for n in names])
    except Exception as e:  # best effort: the table does not need the tracking server
        log.warning("could not read which stages ran from MLflow: %s", e)
    md, png = write_report(result, out, command)
    log.info("ablation table -> %s, plot -> %s", md, png)
    return result
