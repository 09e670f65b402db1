"""The synthetic release: layout and formats, labels, names, ground truth, determinism, bad input.

Most tests read the session's `smoke_release` (tests/conftest.py): one smoke release generated
once with the real renderers on 2 workers.
"""

from __future__ import annotations

import collections
import filecmp
import re
import typing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline import choices
from pipeline.cli import app
from pipeline.schema import (
    PEDESTRIAN_BITS, VEHICLE_BRANDS, VEHICLE_COLORS, VEHICLE_TYPES, bits_to_groups, constraint_violations,
    groups_to_values, parse_bits, parse_vehicle_phrase,
)
from pipeline.synth import captions as C
from pipeline.synth import release as R

SMOKE = R.PROFILES["smoke"]


def _rows(path: Path) -> list[list[str]]:
    return [line.split("$") for line in path.read_text(encoding="utf-8").splitlines()]


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------ profiles and plan

def test_profiles_are_the_config_profiles_and_full_is_the_real_size():
    assert tuple(R.PROFILES) == typing.get_args(choices.Profile)
    full = R.PROFILES["full"]
    assert {s: sum(full[s]) for s in R.SPLITS} == {"train": 126_117, "val": 10_000, "test": 17_611}
    assert full["test"] == (10_000, 7_611)


def test_sampling_tables_are_the_measured_ones(real_track2):
    """Every number in release.py's tables is what measure.py finds in the real text (to rounding)."""
    from pipeline.synth.measure import measure

    measured = measure(real_track2)
    peds = measured["pedestrians"]
    assert peds.pop("n") == 3290
    for name, value in peds.items():
        table = getattr(R, name)
        if isinstance(table, dict):  # keys "male,no" in JSON-friendly form stand for tuples
            table = {",".join(k) if isinstance(k, tuple) else k: v for k, v in table.items()}
        assert _close(table, value), (name, table, value)
    for name, value in measured["vehicles"].items():
        assert getattr(R, name) == value, name


def _close(ours, measured, tol: float = 0.0015) -> bool:
    if isinstance(measured, dict):
        return set(ours) == set(measured) and all(_close(ours[k], measured[k], tol) for k in measured)
    return abs(ours - measured) <= tol


def test_sampled_pedestrian_marginals_match_the_real_labels(real_track2):
    real = np.array([parse_bits(a) for _, a, _ in _rows(real_track2 / "val_label_dev.txt") if "," in a])
    rng = np.random.default_rng(3)
    ours = []
    for _ in range(20_000):
        attrs, _ = R.sample_pedestrian(rng)
        ours.append(R.groups_to_bits(attrs))
    ours = np.array(ours)
    assert all(not constraint_violations(b) for b in ours[:2000])
    se = np.sqrt(real.mean(0) * (1 - real.mean(0)) / len(real)) + 1e-3
    gap = np.abs(real.mean(0) - ours.mean(0))
    assert (gap < 4 * se).all(), dict(zip(PEDESTRIAN_BITS, gap / se))
    female, skirt = 0, 20  # bit positions
    assert not ours[ours[:, female] == 0, skirt].any(), "a man in a skirt: real data has none"


def test_vehicle_label_forms_and_colour_mix_match_the_real_data(real_track2):
    rng = np.random.default_rng(4)
    forms = collections.Counter()
    for _ in range(20_000):
        truth, label = R.sample_vehicle(rng, "train")
        assert {k: truth[k] for k in label} == label, "a label must agree with the hidden truth"
        assert truth["type"] in R.BRAND_TYPES[truth["brand"]]
        forms[_form(label)] += 1
    real = collections.Counter(_form(parse_vehicle_phrase(a)) for _, a, _ in
                               _rows(real_track2 / "train_vehicle_label.txt"))
    for form, n in real.items():
        assert abs(n / real.total() - forms[form] / forms.total()) < 0.01, form
    test = collections.Counter(R.sample_vehicle(rng, "test")[0]["color"] for _ in range(5000))
    top3 = [c for c, _ in test.most_common(3)]
    assert top3[0] == "black" and set(top3) == {"black", "white", "grey"}


def _form(label: dict) -> str:
    return "+".join(sorted(label)) if "brand" not in label or "color" in label else label["brand"]


def test_vehicle_tables_cover_exactly_the_schema_vocabulary():
    assert set(R.BRAND_TYPES) == set(VEHICLE_BRANDS)
    assert all(set(types) <= set(VEHICLE_TYPES) for types in R.BRAND_TYPES.values())
    assert set(R.TRAIN_COLORS) == set(R.TEST_COLORS) == set(VEHICLE_COLORS)
    assert set(R.TRAIN_TYPES) == set(R.TEST_TYPES) == set(VEHICLE_TYPES)
    brand_only = set(R.VEHICLE_FORMS) - {"color_brand", "type"}
    assert set(R.TRAIN_BRANDS) | brand_only == set(VEHICLE_BRANDS)
    for vtype in VEHICLE_TYPES:  # every type can be drawn with some brand
        assert R._compatible_brands(vtype, R.TRAIN_BRANDS), vtype


def test_plan_is_deterministic_and_names_are_unique():
    a, b = R.plan_release(SMOKE, 5), R.plan_release(SMOKE, 5)
    assert a == b
    assert a != R.plan_release(SMOKE, 6)
    names = [it.name for items in a.values() for it in items]
    assert len(names) == len(set(names))


# ------------------------------------------------------------------ the written release

def test_layout(smoke_release):
    for split, (n_ped, n_veh) in SMOKE.items():
        images = sorted((smoke_release / split / f"{split}_images").iterdir())
        assert len(images) == n_ped + n_veh
        assert all(p.suffix == ".jpg" for p in images)
    for f in ("train/train_label.txt", "val/val_label.txt", "test/test_text.txt", "test/test_gt.txt"):
        assert (smoke_release / f).read_text(encoding="utf-8").endswith("\n"), f
    assert not list(smoke_release.parent.glob(".*partial*")), "temporary folder left behind"


@pytest.mark.parametrize("split", ["train", "val"])
def test_label_files_parse_and_captions_agree_with_labels(smoke_release, split):
    rows = _rows(smoke_release / split / f"{split}_label.txt")
    folder = smoke_release / split / f"{split}_images"
    assert len(rows) == sum(SMOKE[split]) == len(list(folder.iterdir()))
    n_ped = 0
    for row in rows:
        assert len(row) == 3, row
        name, field, text = row
        assert (folder / name).is_file(), name
        if "," in field:
            n_ped += 1
            assert re.fullmatch(r"\d{6}\.jpg", name)
            bits = parse_bits(field)
            assert not constraint_violations(bits), (name, constraint_violations(bits))
            labels = groups_to_values(bits_to_groups(bits))
            stated = C.parse_pedestrian_caption(text)
            assert all(labels[k] == v for k, v in stated.items() if k != C.BOOTS), (name, text)
        else:
            assert re.fullmatch(r"[a-z]{10}\.jpg", name)
            label = parse_vehicle_phrase(field)
            assert set(label) in ({"color", "brand"}, {"type"}, {"brand"}), field
            if set(label) == {"brand"}:
                assert label["brand"] in ("Hongyan", "Balong Heavy Truck")
            assert C.parse_vehicle_caption(text) == label
            assert text.endswith(" " + field)
    assert n_ped == SMOKE[split][0]


def test_images_open_and_pedestrians_are_portrait(smoke_release):
    plan = R.plan_release(SMOKE, 0)
    for split, items in plan.items():
        for it in items:
            with Image.open(smoke_release / split / f"{split}_images" / it.name) as im:
                assert im.format == "JPEG" and im.mode == "RGB"
                w, h = im.size
            if it.domain == "pedestrian":
                assert 30 <= w <= 100 and 2.3 <= h / w <= 3.3, (it.name, w, h)


def test_test_texts_vehicles_first_and_names_in_the_real_styles(smoke_release):
    texts = (smoke_release / "test" / "test_text.txt").read_text(encoding="utf-8").splitlines()
    n_ped, n_veh = SMOKE["test"]
    assert len(texts) == n_ped + n_veh
    for text in texts[:n_veh]:
        assert set(C.parse_vehicle_caption(text)) == {"color", "brand", "type"}, text
    for text in texts[n_veh:]:
        C.parse_pedestrian_caption(text)
    names = sorted(p.name for p in (smoke_release / "test" / "test_images").iterdir())
    assert names[:n_ped] == [f"{k:06d}.jpg" for k in range(90_001, 90_001 + n_ped)]
    assert names[n_ped:] == [f"vehicle_{k:07d}.jpg" for k in range(1, n_veh + 1)]


def test_ground_truth_agrees_with_the_hidden_truth(smoke_release):
    """Recompute relevance independently: parse each text, scan every test image's hidden truth."""
    items = R.plan_release(SMOKE, 0)["test"]
    texts = (smoke_release / "test" / "test_text.txt").read_text(encoding="utf-8").splitlines()
    gt = _rows(smoke_release / "test" / "test_gt.txt")
    assert [row[0] for row in gt] == texts
    for (text, *relevant), described in zip(gt, items):
        if C._PEDESTRIAN_RE.fullmatch(text):
            stated, domain = C.parse_pedestrian_caption(text), "pedestrian"
        else:
            stated, domain = C.parse_vehicle_caption(text), "vehicle"
        expected = sorted(it.name for it in items if it.domain == domain
                          and all(it.truth.get(k) == v for k, v in stated.items()))
        assert relevant == expected, text
        assert described.name in relevant  # the image a caption was written for is always relevant


def test_same_seed_gives_byte_identical_release_with_any_worker_count(smoke_release, tmp_path):
    again = R.synthesize(tmp_path / "again", "smoke", seed=0, workers=1)
    assert again["images"] == sum(map(sum, SMOKE.values()))
    files = _files(smoke_release)
    assert files == _files(tmp_path / "again")
    _, mismatch, errors = filecmp.cmpfiles(smoke_release, tmp_path / "again", [str(f) for f in files],
                                           shallow=False)
    assert not mismatch and not errors, mismatch[:5]


def test_test_image_names_do_not_reveal_the_caption_order():
    items = R.plan_release(SMOKE, 0)["test"]
    for domain in R.DOMAINS:
        names = [it.name for it in items if it.domain == domain]
        assert names != sorted(names), domain


# ------------------------------------------------------------------ failures and bad input

def test_failure_mid_render_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}

    def broken(domain, truth, rng, style):
        calls["n"] += 1
        if calls["n"] > 20:
            raise RuntimeError("renderer crashed")
        return Image.new("RGB", (64, 180))

    monkeypatch.setattr(R, "render", broken)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        R.synthesize(tmp_path / "out", "smoke", workers=1)
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_an_existing_release(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "render", lambda domain, truth, rng, style: Image.new("RGB", (64, 180)))
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    (out / "train" / "old.txt").write_text("old")
    R.synthesize(out, sizes={"train": (3, 2), "val": (1, 1), "test": (2, 2)}, workers=1, force=True)
    assert not (out / "train" / "old.txt").exists() and (out / "test" / "test_gt.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_force_never_replaces_a_folder_that_is_not_a_release(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("precious")
    with pytest.raises(R.SynthError, match="refusing to replace"):
        R.synthesize(tmp_path / "out", "smoke", force=True)
    monkeypatch.chdir(tmp_path / "out")
    with pytest.raises(R.SynthError, match="current folder"):
        R.synthesize(".", "smoke", force=True)
    assert (tmp_path / "out" / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("sizes, message", [
    ({"train": (-1, 2), "val": (1, 1), "test": (1, 1)}, "must not be negative"),
    ({"train": (1, 2), "val": (1, 1)}, "exactly the splits"),
    ({"train": (1.5, 2), "val": (1, 1), "test": (1, 1)}, "as integers"),
])
def test_bad_sizes_are_refused(tmp_path, sizes, message):
    with pytest.raises(R.SynthError, match=message):
        R.synthesize(tmp_path / "out", sizes=sizes)
    assert list(tmp_path.iterdir()) == []


def _cli(*args: str):
    return CliRunner().invoke(app, ["synth", *args])


@pytest.mark.parametrize("case", ["profile", "seed", "workers", "non_empty", "unwritable", "file"])
def test_cli_bad_input_one_line_nonzero_nothing_written(tmp_path, case):
    out = tmp_path / "out"
    args = ["--out", str(out), "--profile", "smoke"]
    if case == "profile":
        args[-1] = "huge"
    elif case == "seed":
        args += ["--seed", "-1"]
    elif case == "workers":
        args += ["--workers", "0"]
    elif case == "non_empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "unwritable":
        (tmp_path / "a_file").write_text("")
        out = tmp_path / "a_file" / "out"
        args[1] = str(out)
    elif case == "file":
        out.write_text("not a folder")
    before = _files(tmp_path)
    result = _cli(*args)
    assert result.exit_code != 0
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    assert _files(tmp_path) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_contact_sheet(smoke_release, tmp_path):
    from pipeline.synth.contact_sheet import make_contact_sheet, pick_samples

    samples = pick_samples(smoke_release)
    assert [s[2] for s in samples].count("test vehicle") == 6 and len(samples) == 24
    png = make_contact_sheet(smoke_release, tmp_path / "sheet.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 1000 and im.size[1] > 800
