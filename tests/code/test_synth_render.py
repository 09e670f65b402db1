"""Tests of the procedural renderers: shapes, determinism, and that attributes show where they should."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.schema import PEDESTRIAN_GROUPS, VEHICLE_BRANDS, VEHICLE_COLORS, VEHICLE_TYPES
from pipeline.synth.pedestrians import ASPECT_RANGE, WIDTH_RANGE, render_pedestrian
from pipeline.synth.vehicles import brand_styles, emblem, render_vehicle

PLAIN = dict(gender="male", age="18to60", orientation="front", hat="no", glasses="no", handbag="no",
             bag="none", holds_objects="no", sleeve="long", upper="none", long_coat="no", skirt="no")


def random_attrs(rng: np.random.Generator) -> dict[str, str]:
    return {g.name: g.values[int(rng.integers(g.n_classes))] for g in PEDESTRIAN_GROUPS}


def ped(attrs: dict[str, str], seed: int, boots: bool = False) -> np.ndarray:
    return np.asarray(render_pedestrian(attrs, boots, np.random.default_rng(seed)), dtype=np.int16)


def changed_rows(a: np.ndarray, b: np.ndarray, tol: int = 12) -> np.ndarray:
    """Relative heights (0 top, 1 bottom) of the pixels that differ clearly between a and b."""
    assert a.shape == b.shape
    rows = np.nonzero(np.abs(a - b).max(axis=2) > tol)[0]
    return rows / a.shape[0]


# --------------------------------------------------------------------------- pedestrians

def test_pedestrian_is_an_rgb_portrait_within_bounds():
    rng = np.random.default_rng(0)
    widths = set()
    for seed in range(40):
        img = render_pedestrian(random_attrs(rng), bool(seed % 2), np.random.default_rng(seed))
        assert isinstance(img, Image.Image) and img.mode == "RGB"
        w, h = img.size
        assert WIDTH_RANGE[0] <= w <= WIDTH_RANGE[1]
        assert ASPECT_RANGE[0] - 0.03 <= h / w <= ASPECT_RANGE[1] + 0.03
        assert np.asarray(img).std() > 10, "a near-constant image"
        widths.add(w)
    assert len(widths) > 15, "sizes should vary"


def test_pedestrian_is_deterministic_per_seed():
    a = random_attrs(np.random.default_rng(1))
    assert render_pedestrian(a, True, np.random.default_rng(7)).tobytes() == \
        render_pedestrian(a, True, np.random.default_rng(7)).tobytes()
    assert render_pedestrian(a, True, np.random.default_rng(7)).tobytes() != \
        render_pedestrian(a, True, np.random.default_rng(8)).tobytes()


@pytest.mark.parametrize("group,value", [(g.name, v) for g in PEDESTRIAN_GROUPS for v in g.values])
def test_every_pedestrian_value_renders(group, value):
    rng = np.random.default_rng(zlib.crc32(f"{group}={value}".encode()))
    for view in ("front", "side", "back"):
        attrs = random_attrs(rng) | {"orientation": view, group: value}
        img = render_pedestrian(attrs, bool(rng.random() < 0.5), rng)
        assert img.mode == "RGB" and np.asarray(img).std() > 10


def test_size_does_not_depend_on_attributes():
    rng = np.random.default_rng(2)
    sizes = {render_pedestrian(random_attrs(rng), bool(rng.random() < 0.5), np.random.default_rng(11)).size
             for _ in range(12)}
    assert len(sizes) == 1


@pytest.mark.parametrize("view", ["front", "side", "back"])
@pytest.mark.parametrize("change,boots,lo,hi", [
    ({"hat": "yes"}, False, 0.0, 0.35),  # on the head
    ({"glasses": "yes"}, False, 0.0, 0.35),
    ({}, True, 0.6, 1.0),  # boots: the shins and feet
    ({"skirt": "yes"}, False, 0.35, 1.0),  # from the waist down
    ({"upper": "stripe"}, False, 0.1, 0.75),  # the torso
    ({"upper": "plaid"}, False, 0.1, 0.75),
    ({"sleeve": "short"}, False, 0.1, 0.75),  # the arms
])
def test_attribute_shows_in_its_region(view, change, boots, lo, hi):
    """With the same seed, turning one attribute on changes pixels only where it is drawn."""
    for seed in range(4):
        base = PLAIN | {"orientation": view}
        rows = changed_rows(ped(base, seed), ped(base | change, seed, boots))
        assert rows.size > 0, f"{change or 'boots'} changed nothing ({view}, seed {seed})"
        inside = ((rows >= lo) & (rows <= hi)).mean()
        assert inside > 0.97, f"{change or 'boots'}: only {inside:.0%} of the change in rows {lo}-{hi}"


@pytest.mark.parametrize("view", ["front", "side", "back"])
@pytest.mark.parametrize("change", [{"handbag": "yes"}, {"bag": "shoulder"}, {"bag": "backpack"},
                                    {"holds_objects": "yes"}, {"upper": "logo"}, {"upper": "splice"}])
def test_torso_level_items_leave_the_head_and_feet_alone(view, change):
    for seed in range(4):
        base = PLAIN | {"orientation": view}
        rows = changed_rows(ped(base, seed), ped(base | change, seed))
        assert rows.size > 0, f"{change} changed nothing ({view}, seed {seed})"
        assert rows.max() < 0.9, f"{change} reached the feet"


def test_long_coat_reaches_below_the_hips():
    for seed, view in itertools.product(range(3), ("front", "side", "back")):
        base = PLAIN | {"orientation": view}
        rows = changed_rows(ped(base, seed), ped(base | {"long_coat": "yes"}, seed))
        assert (rows > 0.62).mean() > 0.1, "the coat should cover the thighs"


def test_gender_and_age_change_the_figure():
    for seed in range(3):
        for change in ({"gender": "female"}, {"age": "over60"}, {"age": "under18"}):
            assert changed_rows(ped(PLAIN, seed), ped(PLAIN | change, seed)).size > 50


def test_orientation_changes_the_figure():
    for seed in range(3):
        front = ped(PLAIN, seed)
        for view in ("side", "back"):
            assert changed_rows(front, ped(PLAIN | {"orientation": view}, seed)).size > 50


def test_bad_pedestrian_input_names_the_group():
    with pytest.raises(KeyError, match="hat"):
        render_pedestrian(PLAIN | {"hat": "maybe"}, False, np.random.default_rng(0))
    with pytest.raises(KeyError, match="skirt"):
        render_pedestrian({k: v for k, v in PLAIN.items() if k != "skirt"}, False, np.random.default_rng(0))


# --------------------------------------------------------------------------- vehicles

def veh(color: str, vtype: str, brand: str, seed: int, style: str = "web") -> np.ndarray:
    return np.asarray(render_vehicle(color, vtype, brand, np.random.default_rng(seed), style), dtype=np.int16)


@pytest.mark.parametrize("style", ["web", "surveillance"])
def test_vehicle_output_and_determinism(style):
    sizes = set()
    for seed in range(20):
        vtype, brand = VEHICLE_TYPES[seed % len(VEHICLE_TYPES)], VEHICLE_BRANDS[seed]
        img = render_vehicle("red", vtype, brand, np.random.default_rng(seed), style)
        assert img.mode == "RGB" and 64 <= img.width <= 192 and 0.45 <= img.height / img.width <= 1.2
        assert np.asarray(img).std() > 8
        sizes.add(img.size)
    assert len(sizes) > 10
    again = [render_vehicle("grey", "SUV", "Audi", np.random.default_rng(3), style).tobytes()
             for _ in range(2)]
    assert again[0] == again[1]


@pytest.mark.parametrize("style", ["web", "surveillance"])
@pytest.mark.parametrize("color,vtype", list(zip(VEHICLE_COLORS, itertools.cycle(VEHICLE_TYPES)))
                         + [("white", t) for t in VEHICLE_TYPES])
def test_every_colour_and_type_renders(color, vtype, style):
    for seed in range(3):
        img = render_vehicle(color, vtype, "Toyota", np.random.default_rng(seed), style)
        assert img.mode == "RGB" and np.asarray(img).std() > 8


@pytest.mark.parametrize("vtype", VEHICLE_TYPES)
def test_every_type_draws_in_every_view(vtype):
    """Each view's drawer paints a sizeable vehicle on an empty canvas (views are chosen at random
    inside render_vehicle, so they are called directly here)."""
    from pipeline.synth import vehicles as V
    W, H = 300, 220
    red = (200, 30, 30)
    draws = {
        "front": lambda img, rng: V._draw_front_rear(img, vtype, "Audi", red, "front", 0.2, rng, rng, W, H),
        "rear": lambda img, rng: V._draw_front_rear(img, vtype, "Audi", red, "rear", 0.0, rng, rng, W, H),
        "side": lambda img, rng: V._draw_side(img, vtype, "Audi", red, rng, W, H),
        "front34": lambda img, rng: V._draw_three_quarter(img, vtype, "Audi", red, "front34", rng, rng, W, H),
        "rear34": lambda img, rng: V._draw_three_quarter(img, vtype, "Audi", red, "rear34", rng, rng, W, H),
    }
    for view, draw in draws.items():
        img = Image.new("RGB", (W, H), (255, 255, 255))
        draw(img, np.random.default_rng(0))
        painted = (np.asarray(img) != 255).any(axis=2).mean()
        assert 0.2 < painted < 0.95, f"{vtype} {view}: {painted:.0%} of the canvas painted"


def test_every_brand_renders_and_changes_only_a_small_part():
    for k, brand in enumerate(VEHICLE_BRANDS):
        ref_brand = VEHICLE_BRANDS[(k + 1) % len(VEHICLE_BRANDS)]
        a, b = veh("blue", "Sedan", brand, k), veh("blue", "Sedan", ref_brand, k)
        changed = (np.abs(a - b).max(axis=2) > 12).mean()
        assert 0 < changed < 0.12, f"{brand} vs {ref_brand}: {changed:.1%} of pixels changed"


def test_colour_changes_much_of_the_car_and_type_changes_the_shape():
    for seed in range(5):
        base = veh("blue", "Sedan", "Honda", seed)
        assert (np.abs(base - veh("yellow", "Sedan", "Honda", seed)).max(axis=2) > 30).mean() > 0.1
        assert (np.abs(base - veh("blue", "Bus", "Honda", seed)).max(axis=2) > 30).mean() > 0.05


def test_emblems_are_pairwise_distinct():
    keys = [(s.shape, s.mark, s.outer, s.inner) for s in brand_styles().values()]
    assert len(set(keys)) == len(VEHICLE_BRANDS)
    arrays = [np.asarray(emblem(b), dtype=np.int16) for b in VEHICLE_BRANDS]
    for (i, a), (j, b) in itertools.combinations(enumerate(arrays), 2):
        assert np.abs(a - b).mean() > 3, f"{VEHICLE_BRANDS[i]} and {VEHICLE_BRANDS[j]} look alike"


@pytest.mark.parametrize("style", ["web", "surveillance"])
def test_vehicle_size_does_not_depend_on_labels(style):
    labels = [("red", "Bus", "Yutong"), ("black", "Sedan", "Audi"), ("white", "Truck", "FOTON")]
    for seed in range(5):
        sizes = {render_vehicle(c, t, b, np.random.default_rng(seed), style).size for c, t, b in labels}
        assert len(sizes) == 1


def test_surveillance_is_darker_and_greyer_than_web():
    def stats(style):  # mean chroma (max - min channel) and mean level over a batch
        chroma, level = [], []
        for seed in range(30):
            color = VEHICLE_COLORS[seed % len(VEHICLE_COLORS)]
            img = render_vehicle(color, "Sedan", "Toyota", np.random.default_rng(seed), style)
            a = np.asarray(img, dtype=np.float32)
            chroma.append((a.max(axis=2) - a.min(axis=2)).mean())
            level.append(a.mean())
        return np.mean(chroma), np.mean(level)
    (web_chroma, web_level), (surv_chroma, surv_level) = stats("web"), stats("surveillance")
    assert surv_chroma < 0.7 * web_chroma and surv_level < 0.8 * web_level


def test_bad_vehicle_input_names_the_problem():
    with pytest.raises(KeyError, match="colour"):
        render_vehicle("teal", "Sedan", "Audi", np.random.default_rng(0), "web")
    with pytest.raises(KeyError, match="brand"):
        render_vehicle("red", "Sedan", "Tesla", np.random.default_rng(0), "web")
    with pytest.raises(KeyError, match="style"):
        render_vehicle("red", "Sedan", "Audi", np.random.default_rng(0), "studio")
