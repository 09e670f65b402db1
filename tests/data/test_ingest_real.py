"""Data test: the ingest checks accept every real Track-2 line (no false quarantines).

Reads ../shared/track2 through the `real_track2` fixture, which fails (never skips) when absent.
"""

from __future__ import annotations

import pytest

from pipeline.formats import read_label_file


@pytest.mark.parametrize("name, n_lines", [("val_label_dev.txt", 4939), ("train_vehicle_label.txt", 42704)])
def test_every_real_line_is_kept(real_track2, name, n_lines):
    kept, bad, trailing = read_label_file(real_track2 / name)
    assert bad == [] and trailing == 0
    assert len(kept) == n_lines
    assert {r.domain for r in kept} == ({"pedestrian", "vehicle"} if name.startswith("val") else {"vehicle"})
