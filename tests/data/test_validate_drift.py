"""Drift figures between training labels and test captions (a warning, never critical)."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.validate import drift
from pipeline.validate.engine import run_suites


@pytest.mark.parametrize("text, expected", [
    ("This is a grey Chery Sedan.", {"color": "grey", "brand": "Chery", "type": "Sedan"}),
    ("An orange Balong Heavy Truck Truck.", {"color": "orange", "brand": "Balong Heavy Truck", "type": "Truck"}),
    ("A black Golden Dragon Bus.", {"color": "black", "brand": "Golden Dragon", "type": "Bus"}),
    ("A female adult facing the camera.", None),
])
def test_parse_vehicle_caption(text, expected):
    assert drift.parse_vehicle_caption(text) == expected


def test_total_variation():
    p = pd.Series([0.5, 0.5, 0.0])
    assert drift.total_variation(p, p) == 0
    assert drift.total_variation(p, pd.Series([0.0, 0.0, 1.0])) == 1
    assert drift.total_variation(p, pd.Series([1.0, 0.0, 0.0])) == pytest.approx(0.5)


def frames(test_colors: list[str]):
    labels = pd.DataFrame({
        "split": ["train"] * 4 + ["train"],
        "domain": ["vehicle"] * 4 + ["pedestrian"],
        "color": ["black", "white", "red", "blue", None],
        "type": [None, None, "Sedan", "SUV", None],
        "caption": ["This is a black Audi.", "This is a white Audi.", "A Sedan.", "An SUV.",
                    "A female adult facing the camera, in short sleeves."]})
    texts = [f"This is a {c} Audi Sedan." for c in test_colors] + ["A male adult seen from the back."]
    queries = pd.DataFrame({"split": ["test"] * len(texts), "text": texts})
    return labels, queries


def test_drift_table_figures():
    labels, queries = frames(["black", "black", "black", "white"])
    table, mixes = drift.drift_table(labels, queries)
    row = table.set_index("feature").loc["vehicle color mix"]
    # train 1/4 each of black/white/red/blue; test 3/4 black, 1/4 white -> half the mass moves
    assert row["value"] == pytest.approx(0.5)
    assert "black 25% -> 75%" in row["detail"]
    assert mixes["color"].loc["black"].tolist() == [0.25, 0.75]
    vt = table.set_index("feature").loc["vehicle type mix", "value"]
    assert vt == pytest.approx(0.5)  # Sedan 1/2 -> 1
    ped = table.set_index("feature").loc["pedestrian caption length", "value"]
    assert ped == pytest.approx(abs(7 - 9) / 9)


def test_drift_is_only_a_warning(tmp_path):
    labels, queries = frames(["black"] * 4)
    table, mixes = drift.drift_table(labels, queries)
    out = run_suites([drift.drift_suite(table, max_mix_tvd=0.25, max_length_change=0.25)])
    failed = [o for o in out if not o.success]
    assert failed and all(o.severity == "warning" for o in failed)
    assert {o.description for o in failed} >= {"train->test drift of vehicle color mix <= 0.25"}
    png = drift.plot_drift(mixes, tmp_path / "drift.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
