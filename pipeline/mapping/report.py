"""The mapping's quality report: precision and recall per group against the labels, and recall of
what the captions state (:func:`stated`, from the caption template - never from mined rules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import caption_template, schema
from pipeline.mapping.pairs import Pairs, label_values
from pipeline.mapping.parser import CaptionMapping
from pipeline.mapping.words import DOMAIN_OF_GROUP, PEDESTRIAN_GROUP_NAMES, VEHICLE_GROUP_NAMES, tokens


def stated(domain: str, caption: str, values: dict[str, str | None]) -> dict[str, str]:
    """What a caption states, from its label and the caption template (:mod:`pipeline.caption_template`).

    ``values`` holds the label's value name per group (None where unlabelled). A pedestrian
    caption's second sentence is read from the caption itself (the clothing form names the
    sleeve), since what selects the wearing form may be unlabelled (boots).
    """
    if domain == "vehicle":
        return caption_template.vehicle_stated(values)
    wearing = caption_template.is_wearing_form(tokens(caption))
    return caption_template.pedestrian_stated(values, wearing)


def evaluate(mapping: CaptionMapping, pairs: Pairs) -> dict[str, Any]:
    """Per group: precision and recall against the labels, and recall of what captions state.

    - precision: parsed values that equal the label / parsed values (a vehicle group parsed where
      the label has none counts as wrong: vehicle labels are exactly what the caption says);
    - recall: parsed correct / captions labelled for the group (unstated values cap it below 1);
    - stated_recall: stated values (:func:`stated`) parsed correctly / stated values.
    """
    parsed = mapping.parse_many(pairs.captions)
    names = PEDESTRIAN_GROUP_NAMES + VEHICLE_GROUP_NAMES
    tally = {g: dict(parsed=0, correct=0, labelled=0, stated=0, stated_found=0) for g in names}
    domain_ok = 0
    for i, p in enumerate(parsed):
        dom = str(pairs.domains[i])
        values = label_values(pairs, i)
        truth = stated(dom, pairs.captions[i], values)
        domain_ok += p.domain == dom
        for g in schema.GROUPS_BY_DOMAIN[dom]:
            if values[g.name] is not None:
                tally[g.name]["labelled"] += 1
        for g, v in p.attributes.items():
            t = tally[g]
            t["parsed"] += 1
            t["correct"] += DOMAIN_OF_GROUP[g] == dom and values.get(g) == v
        for g, v in truth.items():
            tally[g]["stated"] += 1
            tally[g]["stated_found"] += p.attributes.get(g) == v

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 6) if b else None

    groups = {g: {"precision": ratio(t["correct"], t["parsed"]), "recall": ratio(t["correct"], t["labelled"]),
                  "stated_recall": ratio(t["stated_found"], t["stated"]), **t}
              for g, t in tally.items()}
    tot = {k: sum(t[k] for t in tally.values()) for k in ("parsed", "correct", "stated", "stated_found")}
    return {"captions": len(pairs), "rules": len(mapping),
            "domain_accuracy": ratio(domain_ok, len(pairs)),
            "precision": ratio(tot["correct"], tot["parsed"]),
            "stated_recall": ratio(tot["stated_found"], tot["stated"]),
            "min_group_precision": min((v["precision"] for v in groups.values()
                                        if v["precision"] is not None), default=None),
            "min_group_stated_recall": min((v["stated_recall"] for v in groups.values()
                                            if v["stated_recall"] is not None), default=None),
            "groups": groups}


def misses(mapping: CaptionMapping, pairs: Pairs, limit: int = 20) -> list[dict[str, Any]]:
    """Examples of wrong or missed stated values, for reading (the report shows them)."""
    out = []
    for i, p in enumerate(mapping.parse_many(pairs.captions)):
        dom = str(pairs.domains[i])
        values = label_values(pairs, i)
        truth = stated(dom, pairs.captions[i], values)
        wrong = {g: v for g, v in p.attributes.items() if values.get(g) != v}
        missed = {g: v for g, v in truth.items() if p.attributes.get(g) != v}
        if wrong or missed:
            out.append({"caption": pairs.captions[i], "wrong": wrong, "missed": missed})
            if len(out) >= limit:
                break
    return out


def plot_quality(report: dict[str, Any], path: str | Path) -> Path:
    """Bar chart of per-group precision, recall and stated recall (the report, for the eye)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(report["groups"])
    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.27
    for j, (key, colour) in enumerate((("precision", "tab:blue"), ("recall", "tab:grey"),
                                        ("stated_recall", "tab:green"))):
        values = [report["groups"][g][key] or 0.0 for g in groups]
        ax.bar([i + (j - 1) * width for i in range(len(groups))], values, width, label=key, color=colour)
    ax.set_xticks(range(len(groups)), [f"{g}\n({report['groups'][g]['stated']})" for g in groups], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("on the validation split")
    ax.set_title(f"Caption mapping: {report['rules']} rules, {report['captions']} captions "
                 f"(below each group: stated values)", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
