"""The synthetic Track-2 release: sizes, label sampling, names, files, ground truth, parallel writing.

:func:`plan_release` decides everything about a release except the pixels - which images exist,
their names, what each shows (the hidden truth), their label lines and captions - from
``(sizes, seed)`` alone. :func:`synthesize` writes that plan in the official layout, rendering the
images on ``workers`` processes. Every image draws from its own generator seeded by
``(seed, split, domain, index)``, so the bytes do not depend on the number of workers.

The sampling tables below were measured on the real data in `../shared/track2/` (pedestrians on
the 3,290 labelled ones of `val_label_dev.txt`, vehicles on the 42,704 lines of
`train_vehicle_label.txt` and the test-set counts in its README) with `measure.py`;
docs/synthetic_data.md explains each choice, and `tests/data/test_synth_release.py` re-measures the
tables and checks the sampled marginals against the real file.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.choices import Profile
from pipeline.formats import format_gt_line, format_label_line
from pipeline.schema import (
    DOMAINS, PEDESTRIAN_GROUPS, SPLITS, VEHICLE_BRANDS, format_bits, format_vehicle_phrase, groups_to_bits,
)
from pipeline.synth.captions import BOOTS, Caption, pedestrian_caption, vehicle_caption

log = logging.getLogger(__name__)


#: The named release sizes; `full` is the real release's.
#: Images per split as (pedestrians, vehicles), per profile.
PROFILES: dict[str, dict[str, tuple[int, int]]] = {
    "smoke": {"train": (160, 80), "val": (60, 30), "test": (60, 40)},
    "default": {"train": (2400, 1200), "val": (400, 200), "test": (600, 400)},
    "full": {"train": (83413, 42704), "val": (6587, 3413), "test": (10000, 7611)},
}

JPEG_QUALITY = (60, 96)  # drawn per image, [low, high): compression is nuisance, not signal


class SynthError(ValueError):
    """Bad input to the generator (profile, sizes, seed, workers, output folder)."""


# --------------------------------------------------------------------------- pedestrian tables
# P(value | conditions), measured by `measure.py` (tables sum to 1 up to rounding; draws normalise).
# The conditions keep the real correlations: hats, glasses and long coats follow gender, skirts are
# only ever female, children carry backpacks, long coats go with long sleeves, patterns differ by
# gender and sleeve length.

P_FEMALE = 0.454
AGE = {"male": {"over60": 0.017, "18to60": 0.919, "under18": 0.064},
       "female": {"over60": 0.011, "18to60": 0.934, "under18": 0.055}}
ORIENTATION = {"front": 0.339, "side": 0.305, "back": 0.356}
P_HAT = {"male": 0.067, "female": 0.007}
P_GLASSES = {"male": 0.263, "female": 0.094}
P_HANDBAG = {"male": 0.150, "female": 0.252, "under18": 0.030}
BAG = {  # by (gender, handbag); under-18s by age alone
    ("male", "no"): {"shoulder": 0.112, "backpack": 0.150, "none": 0.738},
    ("male", "yes"): {"shoulder": 0.051, "backpack": 0.040, "none": 0.909},
    ("female", "no"): {"shoulder": 0.415, "backpack": 0.132, "none": 0.454},
    ("female", "yes"): {"shoulder": 0.220, "backpack": 0.039, "none": 0.741},
    "under18": {"shoulder": 0.015, "backpack": 0.756, "none": 0.228},
}
P_HOLDS_OBJECTS = 0.012
P_LONG_COAT = {"male": 0.006, "female": 0.047}
P_SHORT_SLEEVE = {"male": 0.569, "female": 0.662, "long_coat": 0.025}
UPPER = {  # by (gender, sleeve)
    ("male", "short"): {"stripe": 0.083, "logo": 0.200, "plaid": 0.079, "splice": 0.029, "none": 0.609},
    ("male", "long"): {"stripe": 0.022, "logo": 0.071, "plaid": 0.190, "splice": 0.080, "none": 0.638},
    ("female", "short"): {"stripe": 0.043, "logo": 0.200, "plaid": 0.082, "splice": 0.037, "none": 0.637},
    ("female", "long"): {"stripe": 0.036, "logo": 0.078, "plaid": 0.093, "splice": 0.016, "none": 0.776},
}
P_SKIRT = {"short": 0.323, "long": 0.145}  # women under 60; no man or over-60 woman has one in the real data
# Boots are hidden truth (not a bit); the real captions name them whenever they are worn.
P_BOOTS = {"male": 0.002, "female": 0.005, "female_coat_or_hat": 0.111}

# --------------------------------------------------------------------------- vehicle tables
#: Label forms of train/val vehicles (counts in train_vehicle_label.txt).
VEHICLE_FORMS = {"color_brand": 36139, "type": 6023, "Hongyan": 307, "Balong Heavy Truck": 235}
TRAIN_COLORS = {"white": 3505, "red": 3476, "blue": 3446, "green": 3356, "black": 3338, "grey": 3265,
                "pink": 3259, "yellow": 3258, "orange": 3258, "brown": 3167, "purple": 2811}
TRAIN_TYPES = {"Truck": 1097, "Minivan": 1078, "SUV": 1068, "Bus": 1057, "Sedan": 1028, "Microbus": 695}
TRAIN_BRANDS = {
    "Chana": 1218, "SKODA": 635, "Kia": 621, "JAC": 620, "Karma": 620, "Yutong": 620, "Shuanghuan": 619,
    "BESTUNE": 619, "Iveco": 619, "FAW": 619, "Mitsubishi": 619, "Isuzu": 618, "Porsche": 618, "SGMW": 617,
    "Subaru": 617, "Cadillac": 616, "Shacman": 616, "Volkswagen": 615, "Benz": 615, "GreatWall": 612,
    "FORLAND": 611, "Mazda": 611, "Volvo": 610, "Geely": 610, "Citroen": 610, "LEOPAARD": 609, "Luxgen": 609,
    "Infiniti": 608, "Chery": 608, "Suzuki": 608, "JMC": 607, "KINGLONG": 607, "Jinbei": 607, "Hyundai": 605,
    "Nissan": 605, "Audi": 604, "Chevrolet": 602, "XIALI": 602, "OPEL": 602, "Dongfeng": 601, "Honda": 601,
    "Golden Dragon": 599, "Landrover": 598, "Lexus": 597, "BMW": 596, "ROEWE": 589, "Bentley": 569,
    "Toyota": 565, "Jeep": 551, "Style": 548, "Ford": 535, "Mini": 523, "BAOJUN": 510, "Haima": 494,
    "China-Moto": 446, "Buick": 444, "Soueast": 412, "PEUGEOT": 395, "MORRIS-GARAGE": 363, "BYD": 357,
    "FOTON": 328, "HAFEI": 282, "ZXAUTO": 128,
}
#: The real test set (7,611 surveillance images): mostly black/white/grey sedans.
TEST_COLORS = {"black": 2831, "white": 2158, "grey": 1299, "red": 683, "blue": 329, "green": 121,
               "orange": 99, "yellow": 45, "brown": 39, "purple": 4, "pink": 3}
TEST_TYPES = {"Sedan": 5140, "SUV": 1013, "Microbus": 670, "Truck": 362, "Minivan": 222, "Bus": 204}
#: Brand weights in the test set: the four published leaders, the rest assumed even.
TEST_BRAND_LEADERS = {"Volkswagen": 1858, "Toyota": 628, "Hyundai": 622, "Honda": 404}
TEST_BRAND_OTHERS = 60
#: Which body types each brand makes (real-world line-ups, checked against the test captions).
BRAND_TYPES: dict[str, tuple[str, ...]] = {
    "Audi": ("Sedan", "SUV"), "BAOJUN": ("Sedan", "SUV", "Minivan"), "BESTUNE": ("Sedan", "SUV"),
    "BMW": ("Sedan", "SUV"), "BYD": ("Sedan", "SUV"), "Balong Heavy Truck": ("Truck",),
    "Bentley": ("Sedan", "SUV"), "Benz": ("Sedan", "SUV", "Microbus"), "Buick": ("Sedan", "SUV", "Microbus"),
    "Cadillac": ("Sedan", "SUV"), "Chana": ("Sedan", "SUV", "Microbus", "Minivan"), "Chery": ("Sedan", "SUV"),
    "Chevrolet": ("Sedan", "SUV"), "China-Moto": ("Sedan", "SUV"), "Citroen": ("Sedan", "SUV"),
    "Dongfeng": ("Truck", "Minivan", "Sedan", "SUV"), "FAW": ("Sedan", "Truck", "Microbus"),
    "FORLAND": ("Truck", "Minivan"), "FOTON": ("Truck", "Microbus", "Minivan", "Bus"),
    "Ford": ("Sedan", "SUV", "Microbus"), "Geely": ("Sedan", "SUV"), "Golden Dragon": ("Bus",),
    "GreatWall": ("SUV", "Sedan", "Truck"), "HAFEI": ("Microbus", "Sedan"), "Haima": ("Sedan", "SUV"),
    "Honda": ("Sedan", "SUV", "Microbus"), "Hongyan": ("Truck",), "Hyundai": ("Sedan", "SUV"),
    "Infiniti": ("Sedan", "SUV"), "Isuzu": ("Truck", "SUV"), "Iveco": ("Microbus", "Truck"),
    "JAC": ("Sedan", "SUV", "Minivan", "Truck"), "JMC": ("Truck", "Minivan"), "Jeep": ("SUV",),
    "Jinbei": ("Microbus", "Minivan", "SUV"), "KINGLONG": ("Bus", "Microbus"), "Karma": ("Sedan",),
    "Kia": ("Sedan", "SUV", "Microbus"), "LEOPAARD": ("SUV",), "Landrover": ("SUV",),
    "Lexus": ("Sedan", "SUV"), "Luxgen": ("SUV", "Sedan"), "MORRIS-GARAGE": ("Sedan", "SUV"),
    "Mazda": ("Sedan", "SUV"), "Mini": ("Sedan",),
    "Mitsubishi": ("SUV", "Sedan"), "Nissan": ("Sedan", "SUV", "Microbus"), "OPEL": ("Sedan",),
    "PEUGEOT": ("Sedan", "SUV"), "Porsche": ("SUV", "Sedan"), "ROEWE": ("Sedan", "SUV"),
    "SGMW": ("Minivan", "Microbus"), "SKODA": ("Sedan",), "Shacman": ("Truck",), "Shuanghuan": ("SUV",),
    "Soueast": ("Sedan", "Minivan"), "Style": ("Truck",), "Subaru": ("SUV", "Sedan"),
    "Suzuki": ("Sedan", "SUV"), "Toyota": ("Sedan", "SUV", "Microbus"),
    "Volkswagen": ("Sedan", "SUV", "Microbus"), "Volvo": ("Sedan", "SUV"),
    "XIALI": ("Sedan",), "Yutong": ("Bus",), "ZXAUTO": ("SUV", "Truck"),
}


@dataclass(frozen=True)
class Item:
    """One image of the release: where it goes, what it shows and how it is labelled."""

    split: str
    domain: str
    index: int  # position within (split, domain); seeds the image's generator
    name: str
    truth: dict[str, str]  # pedestrians: the 12 groups + "boots"; vehicles: color, type, brand
    label: str  # the label line's attribute field ("" for test images)
    caption: Caption


# --------------------------------------------------------------------------- sampling

def _draw(table: Mapping[str, float], rng: np.random.Generator) -> str:
    """One key of ``table`` with probability proportional to its weight."""
    u = rng.random() * sum(table.values())
    for key, weight in table.items():
        u -= weight
        if u < 0:
            return key
    return key  # only reached through rounding at the very top


def _yes(p: float, rng: np.random.Generator) -> str:
    return "yes" if rng.random() < p else "no"


def sample_pedestrian(rng: np.random.Generator) -> tuple[dict[str, str], bool]:
    """The 12 group values and the hidden boots flag of one pedestrian; always valid."""
    gender = "female" if rng.random() < P_FEMALE else "male"
    age = _draw(AGE[gender], rng)
    a = {"gender": gender, "age": age, "orientation": _draw(ORIENTATION, rng)}
    a["hat"] = _yes(P_HAT[gender], rng)
    a["glasses"] = _yes(P_GLASSES[gender], rng)
    a["handbag"] = _yes(P_HANDBAG["under18" if age == "under18" else gender], rng)
    a["bag"] = _draw(BAG["under18" if age == "under18" else (gender, a["handbag"])], rng)
    a["holds_objects"] = _yes(P_HOLDS_OBJECTS, rng)
    a["long_coat"] = _yes(P_LONG_COAT[gender], rng)
    a["sleeve"] = "short" if rng.random() < P_SHORT_SLEEVE[
        "long_coat" if a["long_coat"] == "yes" else gender] else "long"
    a["upper"] = _draw(UPPER[(gender, a["sleeve"])], rng)
    skirt_possible = gender == "female" and age != "over60"
    a["skirt"] = _yes(P_SKIRT[a["sleeve"]] if skirt_possible else 0.0, rng)
    covered = a["long_coat"] == "yes" or a["hat"] == "yes"
    boots_key = "male" if gender == "male" else "female_coat_or_hat" if covered else "female"
    boots = bool(rng.random() < P_BOOTS[boots_key])
    return {g.name: a[g.name] for g in PEDESTRIAN_GROUPS}, boots


def _compatible_brands(vtype: str, weights: Mapping[str, float]) -> dict[str, float]:
    return {b: w for b, w in weights.items() if vtype in BRAND_TYPES[b]}


def sample_vehicle(rng: np.random.Generator, split: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(truth, label)`` of one vehicle: truth has colour, type and brand; label what is annotated.

    Train/val labels are partial like the real ones ("colour Brand.", "Type." or a brand-only
    truck brand); test labels are complete and drawn from the skewed real test mix.
    """
    if split == "test":
        vtype = _draw(TEST_TYPES, rng)
        weights = {b: TEST_BRAND_LEADERS.get(b, TEST_BRAND_OTHERS) for b in VEHICLE_BRANDS}
        truth = {"color": _draw(TEST_COLORS, rng), "type": vtype,
                 "brand": _draw(_compatible_brands(vtype, weights), rng)}
        return truth, dict(truth)
    form = _draw(VEHICLE_FORMS, rng)
    if form == "color_brand":
        brand = _draw(TRAIN_BRANDS, rng)
        truth = {"color": _draw(TRAIN_COLORS, rng), "brand": brand,
                 "type": BRAND_TYPES[brand][int(rng.integers(len(BRAND_TYPES[brand])))]}
        return truth, {"color": truth["color"], "brand": brand}
    if form == "type":
        vtype = _draw(TRAIN_TYPES, rng)
        truth = {"color": _draw(TRAIN_COLORS, rng), "type": vtype,
                 "brand": _draw(_compatible_brands(vtype, TRAIN_BRANDS), rng)}
        return truth, {"type": vtype}
    truth = {"color": _draw(TRAIN_COLORS, rng), "type": "Truck", "brand": form}
    return truth, {"brand": form}


# --------------------------------------------------------------------------- names

def _pedestrian_numbers(sizes: Mapping[str, tuple[int, int]],
                        rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Train/val share the numbers 1..90,000 (all of them in the full release); test starts at 90,001."""
    n_train, n_val, n_test = (sizes[s][0] for s in SPLITS)
    pool = max(90_000, n_train + n_val)
    trainval = rng.choice(pool, size=n_train + n_val, replace=False) + 1
    test = rng.permutation(n_test) + pool + 1
    return {"train": trainval[:n_train], "val": trainval[n_train:], "test": test}


def _letter_names(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct names of 10 random lower-case letters (the real train/val vehicle style)."""
    letters = np.array(list(string.ascii_lowercase))
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        for row in rng.integers(0, 26, size=(n - len(names), 10)):
            name = "".join(letters[row]) + ".jpg"
            if name not in seen:
                seen.add(name)
                names.append(name)
    return names


def _names(sizes: Mapping[str, tuple[int, int]], seed: int) -> dict[tuple[str, str], list[str]]:
    rng = np.random.default_rng([seed, 2])
    numbers = _pedestrian_numbers(sizes, rng)
    if int(numbers["test"].max(initial=0)) > 999_999:
        raise SynthError("too many pedestrians for 6-digit names (at most 909,999 in train+val+test)")
    letters = _letter_names(sizes["train"][1] + sizes["val"][1], rng)
    n_train_veh = sizes["train"][1]
    return {
        ("train", "pedestrian"): [f"{k:06d}.jpg" for k in numbers["train"]],
        ("val", "pedestrian"): [f"{k:06d}.jpg" for k in numbers["val"]],
        ("test", "pedestrian"): [f"{k:06d}.jpg" for k in numbers["test"]],
        ("train", "vehicle"): letters[:n_train_veh],
        ("val", "vehicle"): letters[n_train_veh:],
        ("test", "vehicle"): [f"vehicle_{k:07d}.jpg" for k in rng.permutation(sizes["test"][1]) + 1],
    }


# --------------------------------------------------------------------------- the plan

def check_sizes(sizes: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """``sizes`` as a clean dict; :class:`SynthError` naming the problem otherwise."""
    if set(sizes) != set(SPLITS):
        raise SynthError(f"sizes must give exactly the splits {list(SPLITS)}, got {sorted(sizes)}")
    out = {}
    for split in SPLITS:
        pair = tuple(sizes[split])
        integers = all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in pair)
        if len(pair) != 2 or not integers:
            raise SynthError(f"size of {split} must be (pedestrians, vehicles) as integers, "
                             f"got {sizes[split]!r}")
        if min(pair) < 0:
            raise SynthError(f"size of {split} must not be negative, got {pair}")
        out[split] = (int(pair[0]), int(pair[1]))
    return out


def resolve_sizes(profile: str | None = None, sizes: Mapping[str, tuple[int, int]] | None = None):
    """The sizes of a named profile, or ``sizes`` checked."""
    if sizes is not None:
        return check_sizes(sizes)
    if profile not in PROFILES:
        raise SynthError(f"unknown profile {profile!r}; choose one of {list(PROFILES)}")
    return check_sizes(PROFILES[profile])


def plan_release(sizes: Mapping[str, tuple[int, int]], seed: int) -> dict[str, list[Item]]:
    """Every image of the release per split, vehicles first (the order of ``test_text.txt``)."""
    sizes = check_sizes(sizes)
    if seed < 0:
        raise SynthError(f"seed must be >= 0, got {seed}")
    names = _names(sizes, seed)
    plan: dict[str, list[Item]] = {}
    for split_id, split in enumerate(SPLITS):
        items: list[Item] = []
        rng = np.random.default_rng([seed, 1, split_id, 1])
        for i, name in enumerate(names[(split, "vehicle")]):
            truth, label = sample_vehicle(rng, split)
            items.append(Item(split, "vehicle", i, name, truth, "" if split == "test" else
                              format_vehicle_phrase(label), vehicle_caption(label, rng)))
        rng = np.random.default_rng([seed, 1, split_id, 0])
        for i, name in enumerate(names[(split, "pedestrian")]):
            attrs, boots = sample_pedestrian(rng)
            label = "" if split == "test" else format_bits(groups_to_bits(attrs))
            items.append(Item(split, "pedestrian", i, name, {**attrs, BOOTS: "yes" if boots else "no"},
                              label, pedestrian_caption(attrs, boots, rng)))
        plan[split] = items
    return plan


# --------------------------------------------------------------------------- ground truth

def ground_truth(items: list[Item]) -> list[tuple[str, list[str]]]:
    """``(text, relevant image names)`` per test caption, in caption order.

    Pedestrians: images that have every attribute the caption states (inclusion, boots included,
    among test pedestrians). Vehicles: images with the same colour, brand and type.
    """
    out: list[tuple[str, list[str]]] = []
    vehicles = [it for it in items if it.domain == "vehicle"]
    by_label: dict[tuple[str, ...], list[str]] = {}
    for it in vehicles:
        by_label.setdefault(_vehicle_key(it.truth), []).append(it.name)
    for it in vehicles:
        out.append((it.caption.text, sorted(by_label[_vehicle_key(it.caption.stated)])))

    peds = [it for it in items if it.domain == "pedestrian"]
    keys = [g.name for g in PEDESTRIAN_GROUPS] + [BOOTS]
    truth = np.array([[it.truth[k] for k in keys] for it in peds], dtype=object).reshape(len(peds), len(keys))
    names = np.array([it.name for it in peds], dtype=object)
    cache: dict[tuple, list[str]] = {}
    for it in peds:
        sig = tuple(sorted(it.caption.stated.items()))
        if sig not in cache:
            mask = np.ones(len(peds), dtype=bool)
            for k, v in sig:
                mask &= truth[:, keys.index(k)] == v
            cache[sig] = sorted(names[mask])
        out.append((it.caption.text, cache[sig]))
    return out


def _vehicle_key(attrs: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(attrs.get(k, "") for k in ("color", "brand", "type"))


# --------------------------------------------------------------------------- writing

def render(domain: str, truth: Mapping[str, str], rng: np.random.Generator, style: str):
    """The image of one item, drawn by the domain's renderer from its hidden truth."""
    if domain == "pedestrian":
        from pipeline.synth.pedestrians import render_pedestrian

        attrs = {g.name: truth[g.name] for g in PEDESTRIAN_GROUPS}
        return render_pedestrian(attrs, truth[BOOTS] == "yes", rng)
    from pipeline.synth.vehicles import render_vehicle

    return render_vehicle(truth["color"], truth["type"], truth["brand"], rng, style)


def _render_job(job: tuple) -> None:
    """Render one image and write it as JPEG (runs in a worker process)."""
    path, domain, truth, key, style = job
    rng = np.random.default_rng(key)
    image = render(domain, truth, rng, style)
    image.convert("RGB").save(path, "JPEG", quality=int(rng.integers(*JPEG_QUALITY)))


def _jobs(root: Path, plan: dict[str, list[Item]], seed: int) -> list[tuple]:
    jobs = []
    for split_id, split in enumerate(SPLITS):
        folder = root / split / f"{split}_images"
        for it in plan[split]:
            key = [seed, 0, split_id, DOMAINS.index(it.domain), it.index]
            style = "surveillance" if split == "test" else "web"
            jobs.append((str(folder / it.name), it.domain, it.truth, key, style))
    return jobs


def _write_text(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_labels(root: Path, plan: dict[str, list[Item]]) -> None:
    """Label files, test texts and test ground truth, in the official formats."""
    for split in ("train", "val"):
        vehicles = [it for it in plan[split] if it.domain == "vehicle"]
        peds = sorted((it for it in plan[split] if it.domain == "pedestrian"), key=lambda it: it.name)
        _write_text(root / split / f"{split}_label.txt",
                    [format_label_line(it.name, it.label, it.caption.text) for it in vehicles + peds])
    test = plan["test"]
    _write_text(root / "test" / "test_text.txt", [it.caption.text for it in test])
    _write_text(root / "test" / "test_gt.txt",
                [format_gt_line(text, names) for text, names in ground_truth(test)])


def render_images(root: Path, plan: dict[str, list[Item]], seed: int, workers: int) -> None:
    """Render every image of ``plan`` under ``root`` on ``workers`` processes."""
    from tqdm import tqdm

    jobs = _jobs(root, plan, seed)
    if workers <= 1 or len(jobs) < 2 * workers:
        for job in tqdm(jobs, desc="synth images", unit="img", mininterval=2.0):
            _render_job(job)
        return
    # fork: workers inherit the imported renderers. The pool starts before tqdm's monitor thread
    # exists, so no lock is copied mid-use. Order does not matter: each job is seeded on its own.
    with mp.get_context("fork").Pool(workers) as pool:
        with tqdm(total=len(jobs), desc="synth images", unit="img", mininterval=2.0) as progress:
            for _ in pool.imap_unordered(_render_job, jobs, chunksize=32):
                progress.update()
        pool.close()
        pool.join()


def _check_output(out: Path, force: bool) -> None:
    if not out.resolve().name or out.resolve() in (Path.cwd(), *Path.cwd().parents):
        raise SynthError(f"output {out} is the current folder or above it; name a new folder")
    if out.exists() and not out.is_dir():
        raise SynthError(f"output {out} exists and is not a folder")
    entries = {p.name for p in out.iterdir()} if out.is_dir() else set()
    if entries and not force:
        raise SynthError(f"output folder {out} is not empty (pass --force to replace it)")
    if entries - set(SPLITS):
        # --force replaces a release, never a folder holding anything else.
        raise SynthError(f"refusing to replace {out}: it holds {sorted(entries - set(SPLITS))[:3]}, "
                         "not only a release's train/val/test")
    parent = out.parent
    blocker = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise SynthError(f"cannot write {out}: {blocker} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SynthError(f"cannot create the output's parent folder {parent}: {e.strerror or e}") from None
    if not os.access(parent, os.W_OK):
        raise SynthError(f"output folder {parent} is not writable")


def synthesize(out: str | Path, profile: str | None = "default", *, seed: int = 0, workers: int | None = None,
               force: bool = False, sizes: Mapping[str, tuple[int, int]] | None = None) -> dict:
    """Write a synthetic release to ``out`` and return a summary (counts, seconds, images/s).

    ``sizes`` (``{"train": (pedestrians, vehicles), "val": ..., "test": ...}``) overrides
    ``profile``. Everything is written to a hidden sibling folder that replaces ``out`` only when
    complete, so a failure or interrupt never leaves a partial release. Raises
    :class:`SynthError` on bad input before anything is written.
    """
    out = Path(out)
    sizes = resolve_sizes(profile, sizes)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SynthError(f"seed must be a non-negative integer, got {seed!r}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SynthError(f"workers must be a positive integer, got {workers!r}")
    _check_output(out, force)

    start = time.perf_counter()
    plan = plan_release(sizes, seed)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        try:
            for split in SPLITS:
                (tmp / split / f"{split}_images").mkdir(parents=True)
        except OSError as e:
            raise SynthError(f"cannot write in {out.parent}: {e.strerror or e}") from None
        write_labels(tmp, plan)
        render_images(tmp, plan, seed, workers)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    n_images = sum(len(items) for items in plan.values())
    log.info("wrote %d images to %s in %.1f s (%.0f images/s, %d workers)", n_images, out, seconds,
             n_images / max(seconds, 1e-9), workers)
    return {"out": str(out), "sizes": sizes, "seed": seed, "workers": workers, "images": n_images,
            "seconds": seconds, "images_per_s": n_images / max(seconds, 1e-9)}


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``, replacing what was there only after it is complete."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
