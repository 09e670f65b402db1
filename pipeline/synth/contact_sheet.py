"""A contact sheet: sample images of a release with their captions underneath, as one PNG."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def pick_samples(release: Path, n_pedestrians: int = 12, n_vehicles: int = 6,
                 seed: int = 0) -> list[tuple[Path, str, str]]:
    """``(image path, caption, what)`` for random train pedestrians and vehicles, then test vehicles.

    Test vehicles are taken from ``test_gt.txt`` (the first relevant image of a vehicle caption),
    so the sheet shows both the web style of train/val and the surveillance style of test.
    """
    rng = np.random.default_rng(seed)
    from pipeline.formats import IMAGE_DIRS, LABEL_FILES, TEST_GT, read_gt_lines, read_label_file

    train = [(r.name, r.attribute, r.caption) for r in read_label_file(release / LABEL_FILES["train"])[0]]
    images = release / IMAGE_DIRS["train"]
    peds = [row for row in train if "," in row[1]]
    vehicles = [row for row in train if "," not in row[1]]
    out = []
    for rows, n, what in ((peds, n_pedestrians, "train pedestrian"), (vehicles, n_vehicles, "train vehicle")):
        for k in sorted(rng.choice(len(rows), size=min(n, len(rows)), replace=False)):
            name, _, caption = rows[k]
            out.append((images / name, caption, what))
    gt = release / TEST_GT
    if gt.exists():
        test_vehicles = [(text, names[0]) for text, names in read_gt_lines(gt)
                         if names and names[0].startswith("vehicle_")]
        n = min(n_vehicles, len(test_vehicles))
        for k in sorted(rng.choice(len(test_vehicles), size=n, replace=False)):
            caption, name = test_vehicles[k]
            out.append((release / IMAGE_DIRS["test"] / name, caption, "test vehicle"))
    return out


def make_contact_sheet(release: str | Path, out_png: str | Path, *, columns: int = 6, seed: int = 0) -> Path:
    """Draw 12 pedestrians, 6 train vehicles and 6 test vehicles of ``release`` with captions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    release, out_png = Path(release), Path(out_png)
    samples = pick_samples(release, n_pedestrians=2 * columns, n_vehicles=columns, seed=seed)
    if not samples:
        raise ValueError(f"no labelled images found in {release}")
    rows = -(-len(samples) // columns)
    kinds = [samples[r * columns][2] for r in range(rows)]
    heights = [4.4 if "pedestrian" in k else 2.4 for k in kinds]
    total = sum(heights) + 0.45  # inches; the top 0.45 hold the title
    fig = plt.figure(figsize=(2.7 * columns, total), dpi=110)
    grid = fig.add_gridspec(rows, columns, height_ratios=heights, hspace=0.04, wspace=0.06,
                            left=0.01, right=0.99, top=1 - 0.45 / total, bottom=0.005)
    for i, (path, caption, what) in enumerate(samples):
        r, c = divmod(i, columns)
        cell = grid[r, c].subgridspec(2, 1, height_ratios=[1.0, 0.42 if "pedestrian" in what else 0.32],
                                      hspace=0.02)
        ax = fig.add_subplot(cell[0])
        with Image.open(path) as im:
            ax.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
        ax.set_axis_off()
        text_ax = fig.add_subplot(cell[1])
        text_ax.set_axis_off()
        text_ax.text(0.5, 1.0, f"[{what}] {path.name}\n" + textwrap.fill(caption, 40), ha="center", va="top",
                     fontsize=7, family="DejaVu Sans", transform=text_ax.transAxes)
    fig.suptitle(f"Synthetic Track-2 release: {release.name} (train pedestrians and vehicles, test vehicles)",
                 fontsize=11, y=1 - 0.12 / total)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, metadata={"Software": None})
    plt.close(fig)
    log.info("contact sheet -> %s", out_png)
    return out_png
