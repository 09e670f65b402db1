"""A corrupted smoke release end to end: ingest quarantines what it can, validate reports every
remaining problem with the right count, nothing is silently dropped; a clean release passes.

:func:`corrupt_release` is meant for reuse (e.g. the `dvc repro` stops-at-validate check): it
damages a release in place and returns what ingest and validate must report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from pipeline.config import load_params

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Corruption:
    """What a corrupted release must produce downstream."""

    quarantined: dict[str, int]  # ingest: quarantined lines per release file
    critical: dict[str, int]  # validate: failed critical expectation (description prefix) -> rows
    warnings: dict[str, int]  # validate: failed warnings (drift aside) -> rows
    unlabelled_files: set[str] = field(default_factory=set)  # image files ingest had to leave out


def validate_params(**overrides):
    """The repository's validate section with ``overrides``."""
    return load_params(ROOT / "params.yaml", {"validate": overrides}).validate


def corrupt_release(release: Path) -> Corruption:
    """Damage a (smoke) release in place with every kind of bad input the ingest issue lists and
    the image faults validate must catch. Needs at least 13 pedestrian and 1 vehicle training line
    and 5 test captions. Use ``validate_params(max_quarantine_fraction=0.02)`` with the counts."""
    train_file, val_file = release / "train" / "train_label.txt", release / "val" / "val_label.txt"
    test_file = release / "test" / "test_text.txt"
    train_dir, val_dir = release / "train" / "train_images", release / "val" / "val_images"
    lines = train_file.read_text().splitlines()
    peds = [i for i, s in enumerate(lines) if s[:1].isdigit()]
    vehicle = next(i for i, s in enumerate(lines) if not s[:1].isdigit())
    p = [lines[i].split("$") for i in peds[:13]]
    names = [f[0] for f in p]
    out: list[bytes] = [s.encode() for s in lines]

    def put(k: int, text: str | bytes) -> None:
        out[peds[k]] = text if isinstance(text, bytes) else text.encode()

    put(0, f"{names[0]}${p[0][1]}")                                   # wrong field count
    put(1, f"{names[1]}${p[1][1]}${p[1][2]} $ and more")              # a '$' inside the caption
    put(2, f"{names[2]}${p[2][1][:-2]}${p[2][2]}")                    # 20 bits
    put(3, f"{names[3]}$2{p[3][1][1:]}${p[3][2]}")                    # a bit that is 2
    bits = p[4][1].split(",")
    bits[1:4] = ["1", "1", "0"]
    put(4, f"{names[4]}${','.join(bits)}${p[4][2]}")                  # two ages
    put(5, f"{names[5]}${p[5][1]}$   ")                               # blank caption
    put(7, f"{names[7]}${p[7][1]}$".encode() + b"A \xff\xfe caption.")  # invalid UTF-8
    vname = lines[vehicle].split("$")[0]
    out[vehicle] = f"{vname}$white Foobar.$This is a white Foobar.".encode()  # out-of-vocabulary brand
    out.append(lines[peds[6]].encode())                               # duplicated name (same line)
    (train_dir / names[8]).unlink()                                   # missing image
    (train_dir / names[9]).write_bytes(b"")                           # zero-byte image
    data = (train_dir / names[10]).read_bytes()
    (train_dir / names[10]).write_bytes(data[: int(len(data) * 0.6)])  # truncated JPEG
    with Image.open(train_dir / names[11]) as im:
        size = im.size
    Image.new("RGB", size, (90, 90, 90)).save(train_dir / names[11])  # one colour
    shutil.copy(train_dir / names[12], val_dir / names[12])           # an image in two splits
    # BOM, trailing blank lines (train) and CRLF (val) are legal noise: nothing may be quarantined for them
    train_file.write_bytes(b"\xef\xbb\xbf" + b"\n".join(out) + b"\n\n\n")
    val_lines = val_file.read_text().splitlines() + [lines[peds[12]]]
    val_file.write_bytes("\r\n".join(val_lines).encode() + b"\r\n")
    test_lines = test_file.read_text().splitlines()
    test_lines[4] = "   "                                              # empty test caption
    test_file.write_text("\n".join(test_lines) + "\n")
    return Corruption(
        quarantined={"train/train_label.txt": 11, "val/val_label.txt": 0, "test/test_text.txt": 1},
        critical={"at most 2.0% of a file's lines quarantined": 1, "no image name in two splits": 2,
                  "image decodes fully": 1,
                  "image is not blank or one colour": 1, "every test_text.txt line has its query": 1},
        warnings={"no line was quarantined": 2, "no identical image file in two splits": 2,
                  "every image file of the release is in the images table": 9},
        unlabelled_files={names[i] for i in (0, 1, 2, 3, 4, 5, 7, 9)} | {vname},
    )


def complete_mapping(folder: Path) -> tuple[Path, Path]:
    """A mapping with a rule for every statable value and a perfect report (the mapping stage's
    own quality is tested by its suites; here it must not hide the release's problems)."""
    from pipeline import schema
    from pipeline.validate.mapping_checks import statable_values

    folder.mkdir(parents=True, exist_ok=True)
    rules = [{"phrase": f"{v.lower()} {g}", "group": g, "value": v, "support": 1, "precision": 1.0}
             for g, v in statable_values()]
    (folder / "mapping.yaml").write_text(yaml.safe_dump({"rules": rules}))
    groups = {g.name: {"precision": 1.0, "stated_recall": 1.0} for g in schema.PEDESTRIAN_GROUPS + schema.VEHICLE_GROUPS}
    (folder / "mapping.json").write_text(json.dumps({"groups": groups}))
    return folder / "mapping.yaml", folder / "mapping.json"


def ingest_and_validate(release: Path, work: Path):
    from pipeline.ingest import ingest_release
    from pipeline.validate import validate

    report = ingest_release(release, work / "prepared", workers=1)
    mapping, mapping_report = complete_mapping(work / "mapping")
    vp = validate_params(min_class_examples=0, max_quarantine_fraction=0.02, workers=2)
    result = validate(work / "prepared", release, work / "validation", vp, mapping=mapping,
                      mapping_report=mapping_report)
    return report, result


def failed(result, severity: str) -> dict[str, int]:
    return {o.description: o.unexpected_count for o in result.outcomes
            if not o.success and o.severity == severity and o.suite != "drift"}


def matches(got: dict[str, int], expected: dict[str, int]) -> bool:
    """Every expected (description prefix -> count) is there, and nothing else."""
    keyed = {next((e for e in expected if d.startswith(e)), d): n for d, n in got.items()}
    return keyed == expected


@pytest.fixture(scope="module")
def corrupted(smoke_release, tmp_path_factory):
    work = tmp_path_factory.mktemp("corrupt")
    release = work / "release"
    shutil.copytree(smoke_release, release)
    plan = corrupt_release(release)
    report, result = ingest_and_validate(release, work)
    return plan, report, result, release, work


@pytest.mark.slow
def test_ingest_quarantines_what_it_can(corrupted):
    plan, report, _, _, work = corrupted
    q = pd.read_csv(work / "prepared" / "quarantine.csv")
    assert q.groupby("file").size().reindex(list(plan.quarantined), fill_value=0).to_dict() == plan.quarantined
    for name, counts in report["files"].items():
        assert counts["read"] == counts["kept"] + counts["quarantined"], name
    assert report["files"]["train/train_label.txt"]["trailing_blank"] == 2  # legal noise, not quarantined


@pytest.mark.slow
def test_validate_reports_every_remaining_problem(corrupted):
    plan, _, result, _, _ = corrupted
    assert not result.passed
    assert all(o.error is None for o in result.outcomes), [o for o in result.outcomes if o.error]
    assert matches(failed(result, "critical"), plan.critical), failed(result, "critical")
    assert matches(failed(result, "warning"), plan.warnings), failed(result, "warning")


@pytest.mark.slow
def test_nothing_is_silently_dropped(corrupted):
    plan, report, result, release, work = corrupted
    q = result.summary["rows"]["quarantined"]
    assert q == report["lines_quarantined"] == sum(plan.quarantined.values())
    quarantine = next(o for o in result.outcomes if o.suite == "quarantine" and "no line" in o.description)
    assert quarantine.unexpected_count == sum(n > 0 for n in plan.quarantined.values())
    # every image file on disk is in the images table or reported as left out
    on_disk = sum(len(os.listdir(release / s / f"{s}_images")) for s in ("train", "val", "test"))
    left_out = pd.read_parquet(work / "prepared" / "images.parquet")
    files = next(o for o in result.outcomes if o.suite == "release_files")
    assert on_disk == len(left_out) + files.unexpected_count
    checks = pd.read_parquet(work / "validation" / "image_checks.parquet")
    assert len(checks) == len(left_out)


@pytest.mark.slow
def test_report_names_the_problems(corrupted):
    _, _, result, _, work = corrupted
    md = (work / "validation" / "summary.md").read_text()
    assert md.startswith("# Data validation: FAILED")
    assert "image decodes fully" in md and "truncated" in md  # the decoder's message is the example
    assert (work / "validation" / "data_docs" / "index.html").exists()
    assert json.loads((work / "validation" / "summary.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_clean_release_passes(smoke_release, tmp_path):
    release = tmp_path / "release"
    shutil.copytree(smoke_release, release)
    _, result = ingest_and_validate(release, tmp_path)
    assert result.passed, failed(result, "critical")
    assert failed(result, "warning") == {}


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
           "TRACK2_ROOT": str(workdir), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_cli_exit_codes_and_mlflow_run(corrupted, smoke_release, tmp_path):
    """`python -m pipeline validate` exits 1 with a short summary on critical failures, 0 on a
    clean release, and logs a run tagged with the status either way."""
    import mlflow

    from pipeline.ingest import ingest_release

    _, _, _, bad_release, bad_work = corrupted
    good_release = tmp_path / "good"
    shutil.copytree(smoke_release, good_release)
    ingest_release(good_release, tmp_path / "good_prepared", workers=1)
    complete_mapping(tmp_path / "mapping")
    from pipeline.config import merge, read_yaml

    params = merge(read_yaml(ROOT / "params.yaml"), {"base": {"experiment": "test-validate"}, "validate": {
        "min_class_examples": 0, "max_quarantine_fraction": 0.02}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    files = {name: ["--prepared", str(prepared), "--release", str(release), "--mapping", "mapping/mapping.yaml",
                    "--mapping-report", "mapping/mapping.json", "--out", f"reports_{name}/validation"]
             for name, release, prepared in (("good", good_release, tmp_path / "good_prepared"),
                                             ("bad", bad_release, bad_work / "prepared"))}
    good = cli(tmp_path, "validate", *files["good"])
    assert good.returncode == 0, good.stderr[-3000:]
    bad = cli(tmp_path, "validate", *files["bad"])
    assert bad.returncode == 1, bad.stderr[-3000:]
    assert "validation failed: 5 critical expectations" in bad.stderr
    assert "[image_files] image decodes fully (" in bad.stderr and "e.g. train " in bad.stderr
    assert (tmp_path / "reports_bad" / "validation" / "summary.html").exists()

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["test-validate"])
    assert sorted(runs["tags.status"]) == ["failed", "passed"]
    assert set(runs["tags.stage"]) == {"validate"}
    assert (runs["metrics.failed_critical"].sort_values().tolist()) == [0, 5]
    artifacts = mlflow.artifacts.list_artifacts(run_id=runs["run_id"][0], artifact_path="validation")
    assert {"validation/summary.json", "validation/summary.md", "validation/summary.html"} <= \
        {a.path for a in artifacts}


def test_missing_inputs_fail_with_a_clear_message(tmp_path):
    from pipeline.validate import validate

    with pytest.raises(FileNotFoundError, match="images.parquet not found: run the ingest stage first"):
        validate(tmp_path / "prepared", tmp_path / "release", tmp_path / "out", validate_params())


def test_bad_quarantine_file_fails_with_a_clear_message(tmp_path):
    from pipeline.validate import read_prepared

    for name in ("images", "labels", "queries"):
        pd.DataFrame({"name": ["x"]}).to_parquet(tmp_path / f"{name}.parquet")
    (tmp_path / "quarantine.csv").write_text("path,why\n")
    with pytest.raises(ValueError, match=r"quarantine.csv: missing columns \['file', 'line', 'raw', 'reason'\]"):
        read_prepared(tmp_path)
