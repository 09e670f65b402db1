"""The command line: ``python -m pipeline --help``.

Stage commands are thin: they take the stage's files as options (``dvc.yaml`` passes them), load
``params.yaml`` and hand both to :func:`pipeline.stage.execute`, which runs the stage module's
``run(params, io)`` inside one MLflow run (``--no-track``: without MLflow). Bad input exits 2 with
one line on stderr. Heavy imports (torch, mlflow, great_expectations) happen inside the commands
so that ``--help`` answers at once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Decoupled text-to-image retrieval for Track-2 (DVC + MLflow pipeline).")

ParamsOption = typer.Option(Path("params.yaml"), "--params", help="The params file to read.")
MetricsOption = typer.Option(None, "--metrics", help="[out] The stage's headline numbers for DVC (JSON).")
TrackOption = typer.Option(True, "--track/--no-track", help="Record the stage as an MLflow run.")


def path_in(help: str) -> Any:
    """A required input path option."""
    return typer.Option(..., help=f"[in] {help}")


def path_out(help: str) -> Any:
    """A required output path option."""
    return typer.Option(..., help=f"[out] {help}")


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


def load(params_path: Path) -> Any:
    """Load params or exit with the loader's message."""
    from pipeline.config import ConfigError, load_params

    try:
        return load_params(params_path)
    except ConfigError as e:
        fail(str(e))


#: What a stage raises for bad input (every stage error subclasses ValueError): one line, exit 2.
INPUT_ERRORS = (FileNotFoundError, ValueError, KeyError)


def out_paths() -> list[Path]:
    """The running command's output paths: its ``[out]`` options and train's scratch folder."""
    try:  # typer >= 0.22 carries its own click
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context

    ctx = get_current_context(silent=True)
    if ctx is None:
        return []
    return [ctx.params[o.name] for o in ctx.command.params if ctx.params.get(o.name) is not None
            and ((getattr(o, "help", None) or "").startswith("[out]") or o.name == "checkpoints")]


def command_argv() -> list[str]:
    """The running command's own command line (after ``python -m pipeline``), rebuilt from its
    parsed options: what a re-launch of it (train under DDP) runs again."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context

    ctx = get_current_context()
    argv = ["--verbose"] if ctx.find_root().params.get("verbose") else []
    argv.append(ctx.info_name)
    for o in ctx.command.params:
        value = ctx.params.get(o.name)
        if value is None or not getattr(o, "opts", None):
            continue
        if getattr(o, "is_flag", False):
            if o.secondary_opts:
                argv.append(o.opts[0] if value else o.secondary_opts[0])
            elif value:
                argv.append(o.opts[0])
        else:
            argv += [o.opts[0], str(value)]
    return argv


def stage(name: str, run: Callable, params_path: Path, io: Any, track: bool, **kwargs: Any) -> dict:
    """Run a stage through :func:`pipeline.stage.execute`; bad input exits 2 with its message
    (outputs that cannot be written and an unreachable tracking server too, before any work)."""
    from pipeline.stage import check_outputs, execute
    from pipeline.tracking import TrackingError, check_reachable, tracking_uri

    import os

    params = load(params_path)
    try:
        if os.environ.get("RANK", "0") == "0":  # under DDP (train) other ranks write nothing, not even probes
            check_outputs(out_paths())
        if track:
            check_reachable(tracking_uri())  # before MLflow's import: a dead server is told in seconds
        return execute(name, run, params, io, track=track, **kwargs)
    except INPUT_ERRORS as e:
        fail(str(e) if not isinstance(e, KeyError) else f"missing key {e}")
    except TrackingError as e:
        fail(str(e))
    except (PermissionError, NotADirectoryError, IsADirectoryError) as e:
        fail(f"{e.strerror}: {e.filename}" if e.filename else str(e))


# ------------------------------------------------------------------ stages (dvc.yaml runs these)

@app.command()
def synthesize(release: Path = path_out("The release folder (official layout), replaced."),
               contact_sheet: Path = path_out("A PNG grid of samples with their captions."),
               params: Path = ParamsOption, track: bool = TrackOption) -> None:
    """Stage synthesize: the base.profile synthetic release for base.seed."""
    from pipeline.synth.stage import SynthesizeIO, run

    s = stage("synthesize", run, params, SynthesizeIO(release, contact_sheet), track)
    typer.echo(f"{s['images']} images in {s['seconds']:.1f} s -> {release}")


@app.command()
def ingest(release: Path = path_in("The release folder (official Track-2 layout)."),
           prepared: Path = path_out("Folder of the typed tables and quarantine.csv."),
           report: Path = path_out("The counts JSON."), metrics: Optional[Path] = MetricsOption,
           params: Path = ParamsOption, track: bool = TrackOption) -> None:
    """Stage ingest: the release -> typed tables, malformed lines quarantined with reasons."""
    from pipeline.ingest import IngestIO, run

    stage("ingest", run, params, IngestIO(release, prepared, report, metrics), track)


@app.command("mapping")
def mapping_stage(labels: Path = path_in("The prepared labels.parquet."),
                  overrides: Optional[Path] = typer.Option(None, help="[in] Curated add/drop rules."),
                  mapping: Path = path_out("The mapping YAML."),
                  report: Path = path_out("Quality on val, JSON."),
                  plot: Path = path_out("The quality as a bar chart, PNG."), metrics: Optional[Path] = MetricsOption,
                  params: Path = ParamsOption, track: bool = TrackOption) -> None:
    """Stage mapping: mine rules from the train split, merge the overrides, report quality on val."""
    from pipeline.mapping.stage import MappingIO, run

    stage("mapping", run, params, MappingIO(labels, overrides, mapping, report, plot, metrics), track)


@app.command()
def validate(prepared: Path = path_in("Ingest's tables."), release: Path = path_in("The release folder."),
             mapping: Path = path_in("The mapping YAML."), mapping_report: Path = path_in("The mapping's quality JSON."),
             out: Path = path_out("The report folder (its gate.json gates training)."),
             metrics: Optional[Path] = MetricsOption,
             params: Path = ParamsOption, track: bool = TrackOption) -> None:
    """Stage validate: Great Expectations suites; exits 1 on a critical failure so `dvc repro` stops."""
    from pipeline.validate import ValidateIO, run

    s = stage("validate", run, params, ValidateIO(prepared, release, mapping, mapping_report, out, metrics), track)
    from pipeline.validate.report import quarantine_line

    if quarantine_line(s):
        typer.echo(quarantine_line(s), err=s["quarantine"]["lines"] > 0)
    if s["status"] != "passed":
        fail(f"validation failed: {s['failed_critical']} critical expectations ({s['failed_warning']} warnings); "
             f"see {out / 'summary.md'}", code=1)
    typer.echo(f"validation passed ({s['failed_warning']} warnings): {out / 'summary.md'}")


@app.command()
def train(domain: str = typer.Option(..., help="pedestrian, vehicle or router."),
          backbone: str = typer.Option(..., help="A registered backbone (see pipeline/backbones.py)."),
          prepared: Path = path_in("Ingest's tables."),
          gate: Path = path_in("Validate's gate.json: no training on data that failed validation."),
          models: Path = path_out("Folder of the subtask models."),
          predictions: Path = path_out("Folder of {val,test}.parquet."),
          report: Path = path_out("The training report JSON."),
          checkpoints: Path = typer.Option(..., help="Scratch folder of checkpoints (resume after a crash)."),
          metrics: Optional[Path] = MetricsOption,
          params: Path = ParamsOption, track: bool = TrackOption) -> None:
    """Stage train: every subtask of DOMAIN on BACKBONE (shared frozen-prefix cache)."""
    import os

    # Before torch loads: idle OpenMP threads sleep instead of spinning, else a 2-core machine
    # shared with other processes runs the small tail convolutions ~10x slower (docs/training.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from pipeline import backbones, schema

    if domain not in schema.TRAINING_DOMAINS:
        fail(f"unknown domain {domain!r}; expected one of {list(schema.TRAINING_DOMAINS)}")
    if backbone not in backbones.list_backbones():
        fail(f"unknown backbone {backbone!r}; registered: {backbones.list_backbones()}")
    from pipeline.train import distributed

    nproc = load(params).train.nproc
    if nproc > 1 and not distributed.launched():
        # train.nproc ranks of this same command (DDP); dvc.yaml stays one command per stage.
        raise typer.Exit(distributed.launch(["-m", "pipeline", *command_argv()], nproc))
    if not distributed.is_main():
        # Rank 0 alone logs progress, writes the outputs and opens the MLflow runs.
        logging.getLogger().setLevel(logging.WARNING)
        os.environ.setdefault("TQDM_DISABLE", "1")
        track = False
    from pipeline.train.loop import Interrupted
    from pipeline.train.stage import TrainIO, run

    io = TrainIO(domain, backbone, prepared, gate, models, predictions, report, checkpoints, metrics)
    try:
        r = stage(f"train-{domain}-{backbone}", run, params, io, track, section="train",
                  data=(prepared,), tags={"domain": domain, "backbone": backbone})
    except Interrupted as e:
        fail(f"{e}; rerun to resume from the last checkpoint", code=3)
    if r:  # ranks other than 0 return no report
        typer.echo(f"{domain}/{backbone}: {r['beats_majority']} subtasks beat the majority baseline "
                   f"in {r['time_s']:.0f}s")


@app.command()
def retrieve(prepared: Path = path_in("Ingest's tables."), release: Path = path_in("The release (test/test_gt.txt scores test)."),
             predictions: Path = path_in("Folder of <domain>/<backbone>/{val,test}.parquet."),
             mapping: Path = path_in("The mapping YAML."),
             out: Path = path_out("Folder of submission.json, metrics.json, ranker.json, the gallery, plots, grids."),
             metrics: Optional[Path] = MetricsOption,
             params: Path = ParamsOption, track: bool = TrackOption) -> None:
    """Stage retrieve: ensemble, route and rank; the submission, metrics, plots and grids."""
    from pipeline.retrieve import RetrieveIO, run

    stage("retrieve", run, params, RetrieveIO(prepared, release, predictions, mapping, out, metrics), track,
          data=(prepared,))


@app.command()
def register(retrieval: Path = path_in("The retrieve stage's folder."), mapping: Path = path_in("The mapping YAML."),
             validation: Path = path_in("Validate's gate.json (a version that failed it is never promoted)."), queries: Path = path_in("The prepared queries.parquet."),
             report: Path = path_out("The register report JSON."),
             baseline: Optional[Path] = typer.Option(None, help="[in] The baseline stage's folder: its dual "
                                                     "encoder answers captions the mapping cannot read."),
             params: Path = ParamsOption, track: bool = TrackOption) -> None:
    """Stage register: the ensemble as an MLflow pyfunc, alias challenger (and promote)."""
    from pipeline.registry import RegisterIO, run

    r = stage("register", run, params, RegisterIO(retrieval, mapping, validation, queries, report, baseline), track,
              data=(queries.parent,))
    typer.echo(f"registered version {r['version']}" if r["registered"] else
               f"built and checked the model (not registered: --no-track) -> {report}")


@app.command()
def baseline(prepared: Path = path_in("Ingest's tables."),
             release: Path = path_in("The release (test/test_gt.txt scores test)."),
             mapping: Path = path_in("The mapping YAML (what a caption states)."),
             gate: Path = path_in("Validate's gate.json: no training on data that failed validation."),
             out: Path = path_out("Folder of model/, the galleries, submission.json, metrics.json, plots, grids."),
             metrics: Optional[Path] = MetricsOption,
             params: Path = ParamsOption, track: bool = TrackOption) -> None:
    """Stage baseline: the CLIP-style dual encoder (open_clip), trained, scored and registered."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train: idle OpenMP threads sleep
    from pipeline.baseline.stage import BaselineIO, run

    r = stage("baseline", run, params, BaselineIO(prepared, release, mapping, gate, out, metrics), track,
              data=(prepared,))
    figures = ", ".join(f"{s} official mAP@10 {r[s]['all']['official_map10']:.3f}" for s in ("val", "test") if s in r)
    typer.echo(f"baseline: {figures} in {r['training']['time_s']:.0f}s")


# ------------------------------------------------------------------ tools

@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Release folder to write (official Track-2 layout)."),
    profile: str = typer.Option("default", help="Size: smoke | default | full (the real sizes)."),
    seed: int = typer.Option(0, help="Same seed and profile give byte-identical files."),
    workers: Optional[int] = typer.Option(None, help="Processes rendering images (default: all cores)."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
    contact_sheet: Optional[Path] = typer.Option(None, help="Also draw a PNG grid of samples with captions."),
) -> None:
    """Write a synthetic Track-2 release of any profile and seed (the `synthesize` stage without params)."""
    from pipeline.synth import SynthError, synthesize

    try:
        summary = synthesize(out, profile, seed=seed, workers=workers, force=force)
    except SynthError as e:
        fail(str(e))
    if contact_sheet is not None:
        from pipeline.synth.contact_sheet import make_contact_sheet

        make_contact_sheet(out, contact_sheet, seed=seed)
    typer.echo(f"{summary['images']} images in {summary['seconds']:.1f} s -> {out}")


@app.command("mine-mapping")
def mine_mapping(
    labels: list[Path] = typer.Option(..., "--labels", help="image$attribute$caption file(s) or labels.parquet."),
    out: Path = typer.Option(..., "--out", help="The mapping YAML to write."),
    overrides: Optional[Path] = typer.Option(None, "--overrides", help="Overrides to merge (none by default)."),
    params: Path = ParamsOption,
) -> None:
    """Mine caption phrase -> attribute rules from labelled captions (mapping params of params.yaml)."""
    import pandas as pd

    from pipeline.formats import labels_from_files, read_table_file
    from pipeline.mapping import build_mapping, save_mapping

    p = load(params)
    missing = [str(f) for f in labels if not f.exists()]
    if missing:
        fail(f"labels file not found: {', '.join(missing)}")
    try:
        txt = [f for f in labels if f.suffix != ".parquet"]
        frames = [read_table_file(f, "labels") for f in labels if f.suffix == ".parquet"]
        frames += [labels_from_files(txt)] if txt else []
        df = pd.concat(frames, ignore_index=True)
        rules = build_mapping(df, p.mapping, overrides)
    except INPUT_ERRORS as e:
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


@app.command()
def score(submission: Path = typer.Option(..., "--submission", help="Submission JSON (official format)."),
          gt: Optional[Path] = typer.Option(None, "--gt", help="Organisers' ground truth: text$img$img..."),
          labels: Optional[Path] = typer.Option(None, "--labels",
                                                help="image$attribute$caption file; line i is query i."),
          relevance: str = typer.Option("inclusion", "--relevance", help="inclusion | label (with --labels)."),
          mapping: Optional[Path] = typer.Option(None, "--mapping",
                                                 help="Caption mapping (what a caption states; with --labels).")) -> None:
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
def contract(write: bool = typer.Option(False, "--write", help="Rewrite the table in docs/architecture.md."),
             root: Path = typer.Option(Path("."), help="The repository root.")) -> None:
    """Check that dvc.yaml and the code agree on every stage's files and modules."""
    from pipeline import contract as c

    doc = root / "docs" / "architecture.md"
    if write:
        doc.write_text(c.render_into(doc, root))
        typer.echo(f"contract table -> {doc}")
    found = c.problems(root)
    for line in found:
        typer.secho(line, err=True)
    if found:
        fail(f"{len(found)} contract problems", code=1)
    if not write and c.render_into(doc, root) != doc.read_text():
        fail(f"{doc} is out of date: run `python -m pipeline contract --write`", code=1)
    typer.echo("contract holds: every stage names its files once and depends on the code it runs")


@app.command()
def promote(metric: Optional[str] = typer.Option(None, "--metric",
                                                 help="Version tag to compare (default: register.metric)."),
            margin: Optional[float] = typer.Option(None, "--margin",
                                                   help="Required lead (default: register.margin)."),
            dry_run: bool = typer.Option(False, "--dry-run", help="Decide and log, change nothing."),
            show_history: bool = typer.Option(False, "--history", help="Print every recorded decision and stop."),
            list_metrics: bool = typer.Option(False, "--list-metrics", help="Print the figures --metric accepts and stop."),
            params: Path = ParamsOption) -> None:
    """Move alias production to the best validated version if it beats the holder by the margin."""
    from pipeline import tracking

    p = load(params)
    try:  # before MLflow's import: a server that is down is told in seconds
        tracking.check_reachable(tracking.tracking_uri())
    except tracking.TrackingError as e:
        fail(str(e))
    from mlflow import MlflowClient

    from pipeline.registry import RegistryError, format_history, history, known_metrics
    from pipeline.registry import promote as run_promote

    r = p.register
    try:
        tracking.setup(p.base.experiment)
        with tracking.guard("promote"):
            if show_history:
                typer.echo(format_history(history(MlflowClient(), r.model_name)) or "no decisions recorded")
                return
            if list_metrics:
                versions = MlflowClient().search_model_versions(f"name='{r.model_name}'")
                typer.echo("\n".join(known_metrics(versions)) or f"no versions of {r.model_name} carry figures")
                return
            d = run_promote(MlflowClient(), r.model_name, metric or r.metric,
                            r.margin if margin is None else margin, dry_run=dry_run)
    except (RegistryError, tracking.TrackingError) as e:
        fail(str(e))
    typer.echo(f"{d.action}: {d.reason}")


@app.command()
def search(caption: str = typer.Argument(..., help="A caption, e.g. 'A female pedestrian with a backpack.'"),
           top: int = typer.Option(10, "--top", help="How many images."),
           grid: Optional[Path] = typer.Option(None, "--grid", help="Also draw the results to this PNG."),
           alias: str = typer.Option("production", "--alias", help="Registry alias to load."),
           model_name: Optional[str] = typer.Option(None, "--model", help="Registered model (default: "
                                                    "register.model_name; the baseline: baseline.model_name)."),
           gallery: Optional[Path] = typer.Option(None, "--gallery", help="Rank this gallery instead of the "
                                                  "bundled one: the gallery.npz that `predict` wrote."),
           params: Path = ParamsOption) -> None:
    """Rank the gallery for a caption with models:/<register.model_name>@production."""
    from pipeline import serving, tracking
    from pipeline.stage import OutputError, check_outputs

    try:  # bad input is refused before anything is loaded
        serving.check_caption(caption)
        serving.check_top_k(top, "--top")
        check_outputs([grid])
        if gallery is not None and not gallery.is_file():
            raise serving.InputError(f"gallery {gallery} not found (python -m pipeline predict writes one)")
    except (serving.InputError, OutputError) as e:
        fail(str(e))
    import json

    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    p = load(params)
    uri = f"models:/{model_name or p.register.model_name}@{alias}"
    try:
        tracking.connect()
        model = mlflow.pyfunc.load_model(uri)
        if gallery is not None:  # a gallery built by `predict`
            serving.use_gallery(model.unwrap_python_model(), gallery)
        version = mlflow.MlflowClient().get_model_version_by_alias(model_name or p.register.model_name, alias)
    except tracking.TrackingError as e:
        fail(str(e))
    except MlflowException as e:
        fail(f"cannot load {uri}: {tracking.one_line(e)} "
             "(run `make run` or `python -m pipeline promote`)")
    out = model.predict(pd.DataFrame({"caption": [caption]}), params={"top_k": top}).iloc[0]
    typer.echo(f"model: {version.name} version {version.version} (@{alias})")
    typer.echo(f"{out['domain']}: {caption}")
    if "path" in out:  # which reader answered (pipeline/baseline/combine.py)
        from pipeline.baseline.combine import message

        typer.echo(f"[{out['path']}] {message(out['path'])}")
    if out.get("attributes") not in (None, "{}"):  # what the ranking used (models before it lack it)
        read = json.loads(out["attributes"])
        typer.echo("read: " + ", ".join(f"{g}={v}" for g, v in read.items()))
    for i, (name, dist) in enumerate(zip(out["image_names"], out["distances"]), start=1):
        typer.echo(f"{i:3d}. {name}  {dist:.4f}")
    if grid is not None:
        from pipeline.figures import draw_grid

        from pipeline.formats import read_table

        try:
            paths = dict(read_table(p.base.prepared_dir, "images", ["name", "path"]).itertuples(index=False))
        except FileNotFoundError:
            paths = {}  # no prepared tables here: the grid shows the names without pictures
        if gallery is not None and (gallery.parent / "report.json").exists():  # predict's: the image folder
            import json

            folder = Path(json.loads((gallery.parent / "report.json").read_text())["images_dir"])
            paths = {n: str(folder / n) for n in out["image_names"]}
        draw_grid(caption, list(out["image_names"]), None, paths, grid)
        typer.echo(f"grid: {grid}")


@app.command("ablation")
def ablation_cmd(rows: Optional[str] = typer.Option(None, "--rows", help="Comma-separated rows (default: all): "
                                                    "clip, multitask, full-ft, single, full-distance, no-crops, "
                                                    "no-pseudo, no-class-weights, ensemble."),
                 seeds: str = typer.Option("0,1", "--seeds", help="Comma-separated train seeds; headline rows "
                                           "(clip, single, ensemble) get all, the others the first."),
                 profile: Optional[str] = typer.Option(None, "--profile", help="base.profile of every "
                                                       "experiment (default: params.yaml's)."),
                 reuse: bool = typer.Option(False, "--reuse", help="Only collect experiments already run."),
                 rerun: bool = typer.Option(False, "--rerun", help="Run again the experiments already run "
                                            "on this commit (kept by default)."),
                 out: Path = typer.Option(Path("reports"), "--out", help="[out] Folder of ablation.md/.png/.json."),
                 timeout: float = typer.Option(6 * 3600, "--timeout", help="Seconds to wait for the queue.")) -> None:
    """The ablation table: each row a queued DVC experiment per seed, collected into ablation.md/.png."""
    import shlex
    import sys

    from pipeline.ablation import AblationError, parse_list
    from pipeline.ablation import ablation as run_ablation

    if profile is not None and profile not in ("smoke", "default", "full"):
        fail(f"unknown profile {profile!r}; expected smoke, default or full")
    command = "python -m pipeline " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        result = run_ablation(Path.cwd(), parse_list(rows) or None, parse_list(seeds, int), profile, reuse, out,
                              command, timeout_s=timeout, rerun=rerun)
    except AblationError as e:
        fail(str(e))
    missing = [n for names in result.missing.values() for n in names]
    typer.echo(f"ablation: {sum(map(len, result.experiments.values()))} experiments -> {out / 'ablation.md'}"
               + (f"; missing or failed: {', '.join(missing)}" if missing else ""))
    if missing:
        raise typer.Exit(1)


# ------------------------------------------------------------------ predict (issue 15: large galleries)

@app.command()
def predict(images: Path = typer.Option(..., "--images", help="[in] Folder of .jpg/.jpeg/.png images "
                                        "(an image's name is its file name)."),
            out: Path = typer.Option(..., "--out", help="[out] Folder of gallery.npz, report.json, "
                                     "predictions/ and shards/."),
            model: Optional[str] = typer.Option(None, "--model", help="models:/<name>@<alias> (or /<version>), "
                                                "or a local models folder (<domain>/<backbone>/<subtask>.pt); "
                                                "default: models:/<register.model_name>@production."),
            shard: Optional[str] = typer.Option(None, "--shard", help="i/n: only shard i (0-based) of n, "
                                                "merged later by predict-merge. Default: the torchrun rank "
                                                "(RANK/WORLD_SIZE), else the whole folder."),
            params: Path = ParamsOption) -> None:
    """Index an image folder with the production members: the gallery the served model can rank."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train: idle OpenMP threads sleep
    from pipeline import predict as pr
    from pipeline.stage import OutputError, check_outputs
    from pipeline.tracking import TrackingError

    p = load(params)
    try:  # bad input is refused before any model loads
        chosen = pr.parse_shard(shard) if shard is not None else pr.shard_from_env()
        pr.list_images(images)
        if model is not None and not model.startswith("models:/") and not Path(model).is_dir():
            raise pr.PredictError(f"models folder {model} not found (train first, or pass --model "
                                  "models:/<name>@production)")
        check_outputs([out])
        r = pr.run(p, pr.PredictIO(images, model or f"models:/{p.register.model_name}@production", out),
                   chosen if shard is not None else None)
    except (OutputError, TrackingError, *INPUT_ERRORS) as e:
        fail(str(e) if not isinstance(e, KeyError) else f"missing key {e}")
    skipped = r["unreadable"] if isinstance(r["unreadable"], int) else len(r["unreadable"])
    note = f"; {skipped} unreadable images skipped (listed in the report)" if skipped else ""
    if r.get("merged") is False:
        typer.echo(f"shard {r['shard']}/{r['of']}: {r['predicted']} of {r['range'][1] - r['range'][0]} images "
                   f"at {r['images_per_s']} img/s{note} -> {out}/shards"
                   + (" (rank 0 merges)" if r.get("ranked") else f" (then: predict-merge --out {out})"))
    else:
        typer.echo(f"{r['indexed']} images indexed ({r['routed']}){note} at {r['images_per_s']} img/s "
                   f"-> {r['gallery']}")


@app.command("predict-merge")
def predict_merge(out: Path = typer.Option(..., "--out", help="[out] The folder the predict shards wrote.")) -> None:
    """Merge the shards of `predict --shard i/n` into gallery.npz (the same bytes as one process)."""
    from pipeline import predict as pr

    try:
        r = pr.merge(out)
    except INPUT_ERRORS as e:
        fail(str(e))
    note = f"; {r['unreadable']} unreadable images skipped (listed in the report)" if r["unreadable"] else ""
    typer.echo(f"{r['indexed']} images indexed from {r['shards']} shards ({r['routed']}){note} -> {r['gallery']}")
