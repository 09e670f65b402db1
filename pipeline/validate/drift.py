"""Drift between training and test: vehicle colour and type mix, caption length.

Test captions state colour and type ("This is a grey Chery Sedan."), so their mix is read with the
schema's vehicle vocabulary. The real test set is mostly black/white/grey sedans while training
colours are near-uniform, so drift is expected; it is a warning with the figures, never a failure.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from pipeline import schema
from pipeline.validate.engine import WARNING, Suite, expectation

_ARTICLE = re.compile(r"^(this is an?|an?)\s+", re.IGNORECASE)


def parse_vehicle_caption(text: str) -> dict[str, str] | None:
    """``{"color", "brand", "type"}`` stated by a vehicle caption, or None for any other text."""
    try:
        return schema.parse_vehicle_phrase(_ARTICLE.sub("", str(text).strip()))
    except ValueError:
        return None


def shares(values: pd.Series, vocabulary: tuple[str, ...]) -> pd.Series:
    """Share of each vocabulary value among the non-null ``values`` (zeros when none)."""
    counts = values.dropna().value_counts().reindex(list(vocabulary), fill_value=0)
    total = counts.sum()
    return counts / total if total else counts.astype(float)


def total_variation(p: pd.Series, q: pd.Series) -> float:
    """Half the L1 distance between two distributions: the share of mass that must move."""
    return float(0.5 * (p - q).abs().sum())


def drift_table(labels: pd.DataFrame, queries: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """One row per drift figure (``feature``, ``train``, ``test``, ``value``) and, per categorical
    feature, the train/test shares behind it (for the report and the chart)."""
    train = labels[labels["split"] == "train"]
    test = queries[queries["split"] == "test"]
    parsed = [parse_vehicle_caption(t) for t in test["text"]]
    test_vehicle = pd.DataFrame([p for p in parsed if p is not None], columns=["color", "type", "brand"])
    train_vehicle = train[train["domain"] == "vehicle"]
    rows, mixes = [], {}
    for group in ("color", "type"):
        vocabulary = schema.group(group).values
        p, q = shares(train_vehicle[group], vocabulary), shares(test_vehicle[group], vocabulary)
        mixes[group] = pd.DataFrame({"train": p, "test": q})
        top = (q - p).idxmax() if len(test_vehicle) else ""
        rows.append({"feature": f"vehicle {group} mix", "statistic": "total variation distance",
                     "train": f"{int(train_vehicle[group].notna().sum())} labelled",
                     "test": f"{len(test_vehicle)} captions", "value": total_variation(p, q),
                     "detail": f"largest gain: {top} {p.get(top, 0):.0%} -> {q.get(top, 0):.0%}" if top else ""})
    is_vehicle = pd.Series([p is not None for p in parsed], index=test.index, dtype=bool)
    for domain in schema.DOMAINS:
        a = train.loc[train["domain"] == domain, "caption"].dropna().astype(str).str.split().str.len()
        b = test.loc[is_vehicle == (domain == "vehicle"), "text"].dropna().astype(str).str.split().str.len()
        value = abs(b.mean() - a.mean()) / a.mean() if len(a) and len(b) else float("nan")
        rows.append({"feature": f"{domain} caption length", "statistic": "relative change of mean words",
                     "train": f"{a.mean():.1f} words" if len(a) else "none",
                     "test": f"{b.mean():.1f} words" if len(b) else "none", "value": value, "detail": ""})
    return pd.DataFrame(rows).astype({"value": "Float64"}), mixes


def drift_suite(table: pd.DataFrame, max_mix_tvd: float, max_length_change: float) -> Suite:
    """Warnings when a figure passes its threshold (never critical)."""
    from great_expectations.expectations.row_conditions import Column

    out = []
    for feature in table["feature"]:
        categorical = feature.endswith("mix")
        limit = max_mix_tvd if categorical else max_length_change
        out.append(expectation("ExpectColumnValuesToBeBetween", f"train->test drift of {feature} <= {limit}",
                               WARNING, column="value", max_value=limit,
                               row_condition=Column("feature") == feature))
    return Suite("drift", table, out, id_columns=("feature", "train", "test", "detail"),
                 notes="Training labels against test captions")


def plot_drift(mixes: dict[str, pd.DataFrame], out: Path) -> Path:
    """Side-by-side train/test shares per vehicle colour and type (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(mixes), figsize=(6 * len(mixes), 3.6), squeeze=False)
    for ax, (group, mix) in zip(axes[0], mixes.items()):
        mix.plot.bar(ax=ax, width=0.8, color=["#4c72b0", "#dd8452"])
        ax.set_title(f"vehicle {group}: share of train labels vs test captions")
        ax.set_ylabel("share")
        ax.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
