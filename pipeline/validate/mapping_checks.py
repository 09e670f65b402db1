"""Suites over the caption-to-attribute mapping (``mapping.yaml``) and its quality report.

Every value a caption can state must have a rule, every rule must name a schema group and value,
and the precision and stated-attribute recall the mapping stage measured on validation must clear
the thresholds in ``params.yaml``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pipeline import caption_template, schema
from pipeline.validate.engine import WARNING, Suite, expectation

_MAPPED_GROUPS = schema.PEDESTRIAN_GROUPS + schema.VEHICLE_GROUPS


def statable_values() -> list[tuple[str, str]]:
    """(group, value) pairs a caption can state, so each needs at least one rule.

    Captions never state a negative (no hat, no bag, no pattern), so a pedestrian value with no
    bit of its own has no phrase - except ``male``: every caption states the gender. The caption
    template owns the rule (:func:`pipeline.caption_template.statable_values`).
    """
    return caption_template.statable_values()


def load_rules(path: Path) -> pd.DataFrame:
    """Rules of ``mapping.yaml`` (a list, or a mapping with a ``rules`` list) as a DataFrame."""
    data = yaml.safe_load(Path(path).read_text()) or []
    rules = data.get("rules", []) if isinstance(data, dict) else data
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise ValueError(f"{path}: expected a list of rules (phrase, group, value, support, precision)")
    columns = ["phrase", "group", "value", "support", "precision"]
    df = pd.DataFrame(rules)
    for c in columns:
        if c not in df.columns:
            df[c] = None
    return df


def load_quality(path: Path) -> pd.DataFrame:
    """Per-group ``precision`` and ``stated_recall`` from the mapping report, one row per schema
    group (null where the report has no figure, so a missing group fails loudly)."""
    report = json.loads(Path(path).read_text())
    groups = _find_groups(report)
    rows = []
    for g in _MAPPED_GROUPS:
        figures = groups.get(g.name, {})
        rows.append({"group": g.name, "precision": _number(figures.get("precision")),
                     "stated_recall": _number(figures.get("stated_recall"))})
    return pd.DataFrame(rows).astype({"precision": "Float64", "stated_recall": "Float64"})


def _find_groups(report: Any) -> dict[str, dict]:
    """The ``{group: {precision, stated_recall, ...}}`` mapping wherever the report nests it."""
    if isinstance(report, dict):
        hits = {k: v for k, v in report.items() if isinstance(v, dict) and "precision" in v and k in schema.GROUPS}
        if hits:
            return hits
        for v in report.values():
            found = _find_groups(v)
            if found:
                return found
    return {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def mapping_suites(mapping_path: Path, report_path: Path, min_precision: float,
                   min_stated_recall: float, min_rules: int = 1) -> list[Suite]:
    """Three suites: the rules themselves, coverage of statable values, quality on validation."""
    rules = load_rules(mapping_path)
    known = {(g.name, v) for g in _MAPPED_GROUPS for v in g.values}
    rules["known_value"] = [(g, v) in known for g, v in zip(rules["group"], rules["value"])]
    counts = rules.groupby(["group", "value"]).size() if len(rules) else pd.Series(dtype=int)
    coverage = pd.DataFrame([{"group": g, "value": v, "n_rules": int(counts.get((g, v), 0))}
                             for g, v in statable_values()])
    quality = load_quality(report_path)
    return [
        Suite("mapping_rules", rules, [
            expectation("ExpectColumnValuesToMatchRegex", "every rule has a phrase", column="phrase", regex=r"\S"),
            expectation("ExpectColumnValuesToBeInSet", "every rule names a schema group and value",
                        column="known_value", value_set=[True]),
            expectation("ExpectColumnValuesToBeBetween", "rule precision is a fraction", column="precision",
                        min_value=0, max_value=1),
            expectation("ExpectColumnValuesToNotBeNull", "every rule has a support", column="support"),
        ], id_columns=("phrase", "group", "value"), notes=str(mapping_path)),
        Suite("mapping_coverage", coverage, [
            expectation("ExpectColumnValuesToBeBetween",
                        f"every statable group value has at least {min_rules} rule{'s' * (min_rules != 1)}",
                        column="n_rules", min_value=min_rules),
        ], id_columns=("group", "value"), notes=f"{mapping_path}: rules per value a caption can state"),
        Suite("mapping_quality", quality, [
            expectation("ExpectColumnValuesToNotBeNull", "the mapping report has a precision for every group",
                        WARNING, column="precision"),
            expectation("ExpectColumnValuesToNotBeNull", "the mapping report has a stated recall for every group",
                        WARNING, column="stated_recall"),
            expectation("ExpectColumnValuesToBeBetween", f"validation precision >= {min_precision}",
                        column="precision", min_value=min_precision),
            expectation("ExpectColumnValuesToBeBetween", f"validation stated-attribute recall >= {min_stated_recall}",
                        column="stated_recall", min_value=min_stated_recall),
        ], id_columns=("group",), notes=f"{report_path}: per-group figures on the validation split"),
    ]
