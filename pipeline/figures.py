"""Pictures of the retrieve stage: retrieval grids (a caption over its ranked images, hits
outlined) and bar charts of the metrics, written beside the CSVs DVC plots."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline import schema
from pipeline.rank import Ranking


def draw_grid(text: str, names: Sequence[str], hits: Sequence[bool] | None, paths: Mapping[str, str],
              out: Path, thumb: tuple[int, int] = (96, 160)) -> None:
    """The caption over its ranked thumbnails; hits outlined green, misses red (grey: unjudged)."""
    from PIL import Image, ImageDraw, ImageFont

    w, h = thumb
    pad, border, cols = 6, 4, len(names) or 1
    font = ImageFont.load_default(size=14)
    lines = textwrap.wrap(text, width=max(20, (cols * (w + pad)) // 8)) or [""]
    head = 20 * len(lines) + 2 * pad
    canvas = Image.new("RGB", (cols * (w + pad) + pad, head + h + 2 * border + 24 + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for j, line in enumerate(lines):
        draw.text((pad, pad + 20 * j), line, fill="black", font=font)
    for i, name in enumerate(names):
        x, y = pad + i * (w + pad), head
        colour = "grey" if hits is None else ("#1a9e1a" if hits[i] else "#d11a1a")
        draw.rectangle([x, y, x + w - 1, y + h + 2 * border - 1], fill=colour)
        try:
            with Image.open(paths[name]) as im:
                im = im.convert("RGB")
                im.thumbnail((w - 2 * border, h))
        except (KeyError, OSError):
            im = Image.new("RGB", (w - 2 * border, h), "lightgrey")
        canvas.paste(im, (x + (w - im.width) // 2, y + border + (h - im.height) // 2))
        # Keep the end of long names: "vehicle_0000157" differs from its neighbours only there.
        stem = name.rsplit(".", 1)[0]
        draw.text((x, y + h + 2 * border + 4), f"{i + 1}. {stem[-12:]}", fill="black",
                  font=ImageFont.load_default(size=10))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)


def plot_group_accuracy(table: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = table.assign(label=table["domain"] + "/" + table["group"])
    wide = t.pivot_table(index="label", columns="model", values="accuracy", sort=False)
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(wide)), 4))
    wide.plot.bar(ax=ax, width=0.8)
    ax.set_ylabel("val accuracy"); ax.set_ylim(0, 1.15); ax.set_xlabel("")
    ax.legend(ncol=len(wide.columns), loc="upper center", fontsize=8)
    ax.set_title("Per-group classifier accuracy (val)")
    fig.tight_layout(); fig.savefig(out, dpi=100); plt.close(fig)


def plot_domain_metrics(table: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = table[table["metric"] != "n_queries"]
    fig, axes = plt.subplots(1, t["split"].nunique(), figsize=(6 * t["split"].nunique(), 4), squeeze=False)
    for ax, (split, sub) in zip(axes[0], t.groupby("split", sort=False)):
        sub.pivot_table(index="metric", columns="domain", values="value", sort=False).plot.bar(ax=ax)
        ax.set_title(f"{split} retrieval"); ax.set_ylim(0, 1.05); ax.set_xlabel("")
    fig.tight_layout(); fig.savefig(out, dpi=100); plt.close(fig)


def write_domain_plots(result: Mapping[str, Any], out: Path) -> None:
    """``domain_metrics.csv`` (one row per split/domain, for DVC plots) and its PNG."""
    splits = [s for s in schema.EVAL_SPLITS if s in result]
    pd.DataFrame([{"split_domain": f"{s}/{d}", **ms} for s in splits for d, ms in result[s].items()]) \
        .to_csv(out / "domain_metrics.csv", index=False)
    long = pd.DataFrame([{"split": s, "domain": d, "metric": m, "value": v}
                         for s in splits for d, ms in result[s].items() for m, v in ms.items()])
    plot_domain_metrics(long, out / "domain_metrics.png")


def write_grids(split: str, queries: pd.DataFrame, ranking: Ranking, relevant: Sequence[set[str]] | None,
                paths: Mapping[str, str], out: Path, per_domain: int, rng: np.random.Generator) -> None:
    """Grids for ``per_domain`` random queries of each routed domain (hits green when judged)."""
    for d in schema.DOMAINS:
        rows = [i for i, x in enumerate(ranking.domain) if x == d]
        for i in rng.choice(rows, size=min(per_domain, len(rows)), replace=False) if rows else []:
            names = ranking.names[i]
            hits = None if relevant is None else [n in relevant[i] for n in names]
            qid = int(queries["query_id"].iloc[i])
            draw_grid(queries["text"].iloc[i], names, hits, paths, out / f"{split}_{d}_{qid:06d}.png")
