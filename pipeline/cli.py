"""The command line: ``python -m pipeline --help``.

Each command is a thin wrapper: it parses options, loads ``params.yaml`` and calls a plain
function in the stage's module. Heavy imports (torch, mlflow, great_expectations) happen inside
the commands so that ``--help`` answers at once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Decoupled text-to-image retrieval for Track-2 (DVC + MLflow pipeline).")

ParamsOption = typer.Option(Path("params.yaml"), "--params", help="The params file to read.")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # Third-party chatter drowns the stage's own log lines.
    for noisy in ("alembic", "mlflow.store", "urllib3", "PIL", "matplotlib", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str, code: int = 2) -> None:
    """Exit with one clear line on stderr (no traceback) for bad input."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def load(params_path: Path):
    """Load params or exit with the loader's message."""
    from pipeline.config import ConfigError, load_params

    try:
        return load_params(params_path)
    except ConfigError as e:
        fail(str(e))


# ------------------------------------------------------------------ synthesize (issue: foundation)

@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Release folder to write (official Track-2 layout)."),
    profile: str = typer.Option("default", help="Size: smoke | default | full (the real sizes)."),
    seed: int = typer.Option(0, help="Same seed and profile give byte-identical files."),
    workers: Optional[int] = typer.Option(None, help="Processes rendering images (default: all cores)."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
    contact_sheet: Optional[Path] = typer.Option(None, help="Also draw a PNG grid of samples with captions."),
) -> None:
    """Write the synthetic Track-2 release (images, labels, test texts and test ground truth)."""
    from pipeline.synth import SynthError, synthesize

    try:
        summary = synthesize(out, profile, seed=seed, workers=workers, force=force)
    except SynthError as e:
        fail(str(e))
    if contact_sheet is not None:
        from pipeline.synth.contact_sheet import make_contact_sheet

        make_contact_sheet(out, contact_sheet, seed=seed)
    typer.echo(f"{summary['images']} images in {summary['seconds']:.1f} s -> {out}")



# ------------------------------------------------------------------ ingest / mapping / parse

@app.command()
def ingest(params: Path = ParamsOption) -> None:
    """Stage ingest: read the release (base.release_dir) into typed tables under base.prepared_dir."""
    from pipeline.ingest import IngestError, ingest as run_ingest

    p = load(params)
    try:
        run_ingest(p.base.release_dir, p.base.prepared_dir, Path(p.base.reports_dir) / "ingest.json",
                   workers=p.ingest.workers)
    except IngestError as e:
        fail(str(e))


@app.command("mapping")
def mapping_stage(params: Path = ParamsOption) -> None:
    """Stage mapping: mine rules from the prepared train split, report quality on val."""
    from pipeline.mapping import run_stage

    p = load(params)
    try:
        run_stage(p.base.prepared_dir, p.mapping, Path(p.base.reports_dir) / "mapping.json")
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))


@app.command("mine-mapping")
def mine_mapping(
    labels: list[Path] = typer.Option(..., "--labels", help="image$attribute$caption file(s) or labels.parquet."),
    out: Path = typer.Option(..., "--out", help="The mapping YAML to write."),
    overrides: Optional[Path] = typer.Option(None, "--overrides", help="Overrides to merge (default: mapping.overrides of params)."),
    no_overrides: bool = typer.Option(False, "--no-overrides", help="Write the mined rules only."),
    params: Path = ParamsOption,
) -> None:
    """Mine caption phrase -> attribute rules from labelled captions."""
    import pandas as pd

    from pipeline.ingest import IngestError, labels_from_files
    from pipeline.mapping import build_mapping, save_mapping

    p = load(params)
    missing = [str(f) for f in labels if not f.exists()]
    if missing:
        fail(f"labels file not found: {', '.join(missing)}")
    try:
        txt = [f for f in labels if f.suffix != ".parquet"]
        frames = [pd.read_parquet(f) for f in labels if f.suffix == ".parquet"]
        frames += [labels_from_files(txt)] if txt else []
        df = pd.concat(frames, ignore_index=True)
        ov = None if no_overrides else (overrides or (Path(p.mapping.overrides) if p.mapping.overrides else None))
        rules = build_mapping(df, p.mapping, ov)
    except (IngestError, FileNotFoundError, ValueError, KeyError) as e:
        fail(str(e))
    save_mapping(rules, out, meta={"mined_from": [str(f) for f in labels], "train_captions": len(df)})
    typer.echo(f"{len(rules)} rules from {len(df)} captions -> {out}")


@app.command()
def parse(
    mapping: Path = typer.Option(..., "--mapping", help="A mapping YAML (data/mapping/mapping.yaml)."),
    captions: Path = typer.Option(..., "--captions", help="One caption a line, or image$attribute$caption lines."),
    out: Optional[Path] = typer.Option(None, "--out", help="JSON lines output (default: stdout)."),
) -> None:
    """Parse captions into {text, domain, attributes}, one JSON object per input line, in order."""
    import json
    import sys

    from pipeline.mapping import load_mapping, read_caption_lines

    try:
        m = load_mapping(mapping)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    if not captions.exists():
        fail(f"captions file {captions} not found")
    texts = read_caption_lines(captions)
    lines = (json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in m.parse_many(texts))
    if out is None:
        sys.stdout.writelines(lines)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w") as f:
            f.writelines(lines)
        typer.echo(f"{len(texts)} captions -> {out}", err=True)



# ------------------------------------------------------------------ validate

@app.command()
def validate(params_path: Path = ParamsOption,
             track: bool = typer.Option(True, "--track/--no-track", help="Log the result to MLflow.")) -> None:
    """Great Expectations suites over tables, images, mapping and drift (stage `validate`).

    Writes reports/validation/ (summary.json/.md/.html, Data Docs) and exits 1 when a critical
    expectation fails, so `dvc repro` stops before training.
    """
    from pipeline.validate import run_validation
    from pipeline.validate.report import short_summary

    params = load(params_path)
    try:
        result = run_validation(params, track=track)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    if not result.passed:
        s = result.summary
        typer.secho(short_summary(result.outcomes), err=True)
        fail(f"validation failed: {s['failed_critical']} critical expectations "
             f"({s['failed_warning']} warnings); see {result.files['summary.md']}", code=1)
    typer.echo(f"validation passed ({result.summary['failed_warning']} warnings): {result.files['summary.md']}")


# ------------------------------------------------------------------ train

@app.command()
def train(
    domain: str = typer.Option(..., help="pedestrian, vehicle or router."),
    backbone: str = typer.Option(..., help="A registered backbone (see pipeline/backbones.py)."),
    params_path: Path = ParamsOption,
) -> None:
    """Train every subtask of DOMAIN on BACKBONE (shared frozen-prefix cache, MLflow child runs)."""
    import os

    # Before torch loads: idle OpenMP threads sleep instead of spinning, else a 2-core machine
    # shared with other processes runs the small tail convolutions ~10x slower (docs/training.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from pipeline.train.data import DOMAINS

    params = load(params_path)
    if domain not in DOMAINS:
        fail(f"unknown domain {domain!r}; expected one of {list(DOMAINS)}")
    from pipeline import backbones

    if backbone not in backbones.list_backbones():
        fail(f"unknown backbone {backbone!r}; registered: {backbones.list_backbones()}")
    from pipeline.train.loop import Interrupted
    from pipeline.train.stage import run_train

    try:
        report = run_train(params, domain, backbone)
    except Interrupted as e:
        fail(f"{e}; rerun to resume from the last checkpoint", code=3)
    except (FileNotFoundError, ValueError, KeyError) as e:
        fail(str(e))
    typer.echo(f"{domain}/{backbone}: {report['beats_majority']} subtasks beat the majority baseline "
               f"in {report['time_s']:.0f}s")


# ------------------------------------------------------------------ retrieve / score / register / promote / search


@app.command()
def retrieve(params: Path = ParamsOption) -> None:
    """Ensemble, route and rank: submission.json, metrics.json, plots and grids (stage `retrieve`)."""
    from pipeline.retrieve import RetrieveError, log_to_mlflow, run
    from pipeline.metrics import TextOrderError

    p = load(params)
    try:
        result = run(p)
    except (RetrieveError, TextOrderError, FileNotFoundError, ValueError) as e:  # bad inputs, named
        fail(str(e))
    log_to_mlflow(p, result, Path(p.retrieve.out_dir))


@app.command()
def score(submission: Path = typer.Option(..., "--submission", help="Submission JSON (official format)."),
          gt: Optional[Path] = typer.Option(None, "--gt", help="Organisers' ground truth: text$img$img..."),
          labels: Optional[Path] = typer.Option(None, "--labels",
                                                help="image$attribute$caption file; line i is query i."),
          relevance: str = typer.Option("inclusion", "--relevance",
                                        help="inclusion | label (with --labels)."),
          mapping: Path = typer.Option(Path("data/mapping/mapping.yaml"), "--mapping",
                                       help="Caption mapping (what a caption states).")) -> None:
    """Score a submission; the official mAP@10 is the last line."""
    from pipeline.metrics import TextOrderError
    from pipeline.score import ScoreError, format_report
    from pipeline.score import score as run_score

    try:
        result = run_score(submission, gt=gt, labels=labels, relevance=relevance, mapping=mapping)
    except (ScoreError, TextOrderError) as e:
        fail(f"{e} - no score")
    typer.echo(format_report(result))


@app.command()
def register(params: Path = ParamsOption) -> None:
    """Log the ensemble as a pyfunc, register it with alias challenger (stage `register`)."""
    from pipeline.registry import RegistryError
    from pipeline.registry import register as run_register

    try:
        version = run_register(load(params))
    except RegistryError as e:
        fail(str(e))
    typer.echo(f"registered version {version}")


@app.command()
def promote(metric: Optional[str] = typer.Option(None, "--metric",
                                                 help="Version tag to compare (default: register.metric)."),
            margin: Optional[float] = typer.Option(None, "--margin",
                                                   help="Required lead (default: register.margin)."),
            dry_run: bool = typer.Option(False, "--dry-run", help="Decide and log, change nothing."),
            params: Path = ParamsOption) -> None:
    """Move alias production to the best validated version if it beats the holder by the margin."""
    from mlflow import MlflowClient

    from pipeline import tracking
    from pipeline.registry import RegistryError
    from pipeline.registry import promote as run_promote

    p = load(params)
    r = p.register
    tracking.setup(p.base.experiment)
    try:
        d = run_promote(MlflowClient(), r.model_name, metric or r.metric,
                        r.margin if margin is None else margin, dry_run=dry_run)
    except RegistryError as e:
        fail(str(e))
    typer.echo(f"{d.action}: {d.reason}")


@app.command()
def search(caption: str = typer.Argument(..., help="A caption, e.g. 'A female pedestrian with a backpack.'"),
           top: int = typer.Option(10, "--top", help="How many images."),
           grid: Optional[Path] = typer.Option(None, "--grid", help="Also draw the results to this PNG."),
           alias: str = typer.Option("production", "--alias", help="Registry alias to load."),
           params: Path = ParamsOption) -> None:
    """Rank the gallery for a caption with models:/track2-ensemble@production."""
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from pipeline import tracking

    p = load(params)
    mlflow.set_tracking_uri(tracking.tracking_uri())
    uri = f"models:/{p.register.model_name}@{alias}"
    try:
        model = mlflow.pyfunc.load_model(uri)
    except MlflowException as e:
        fail(f"cannot load {uri}: {e.message} (run `make run` or `python -m pipeline promote`)")
    out = model.predict(pd.DataFrame({"caption": [caption]}), params={"top_k": top}).iloc[0]
    typer.echo(f"{out['domain']}: {caption}")
    for i, (name, dist) in enumerate(zip(out["image_names"], out["distances"]), start=1):
        typer.echo(f"{i:3d}. {name}  {dist:.4f}")
    if grid is not None:
        from pipeline.retrieve import draw_grid

        images = Path(p.base.prepared_dir) / "images.parquet"
        paths = dict(pd.read_parquet(images, columns=["name", "path"]).itertuples(index=False)) \
            if images.exists() else {}
        draw_grid(caption, list(out["image_names"]), None, paths, grid)
        typer.echo(f"grid: {grid}")
