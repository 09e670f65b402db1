"""Stage ``mapping``: mine rules from the train split, merge the overrides, report on val."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.mapping.miner import build_mapping
from pipeline.mapping.pairs import pairs_from_frame
from pipeline.mapping.parser import CaptionMapping
from pipeline.mapping.report import evaluate, misses, plot_quality
from pipeline.formats.atomic import write_atomic
from pipeline.mapping.rules import save_mapping
from pipeline.stage import write_metrics

if TYPE_CHECKING:
    from pipeline.config import Params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MappingIO:
    """The files of stage ``mapping``."""

    labels: Path            # in: the prepared labels.parquet
    overrides: Path | None  # in: curated add/drop rules (mapping_overrides.yaml), None = mined only
    mapping: Path           # out: the mapping YAML
    report: Path            # out: quality report JSON
    plot: Path              # out: the report as a bar chart (PNG)
    metrics: Path | None = None  # out: the headline figures for DVC

    def artifacts(self) -> list[Path]:
        """What the stage's MLflow run keeps: the mapping, its report and chart."""
        return [self.mapping, self.report, self.plot]


def run(params: Params, io: MappingIO) -> dict[str, Any]:
    """Mine from the train split of ``io.labels``, merge ``io.overrides``, write ``io.mapping``, and
    report precision and recall on the val split to ``io.report`` (and its chart). Reads
    ``params.mapping`` only; returns the report."""
    from pipeline.formats import read_table_file

    labels = read_table_file(io.labels, "labels")
    train = labels[labels["split"] == "train"].reset_index(drop=True)
    val = labels[labels["split"] == "val"].reset_index(drop=True)
    if not len(train):
        raise ValueError(f"{io.labels} has no train rows to mine from")
    rules = build_mapping(train, params.mapping, io.overrides)
    save_mapping(rules, io.mapping, meta={"mined_from": f"{io.labels} (split train)",
                                          "train_captions": len(train)})
    mapping = CaptionMapping(rules)
    val_pairs = pairs_from_frame(val)
    report = evaluate(mapping, val_pairs)
    report["split"] = "val"
    report["train_captions"] = len(train)
    io.report.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(io.report, json.dumps(report, indent=2) + "\n")
    plot_quality(report, io.plot)
    write_metrics(io.metrics, {k: report[k] for k in ("rules", "precision", "stated_recall", "min_group_precision",
                                                       "min_group_stated_recall", "domain_accuracy")})
    log.info("mapping: %d rules -> %s; val precision %s, stated recall %s",
             len(rules), io.mapping, report["precision"], report["stated_recall"])
    for m in misses(mapping, val_pairs, limit=10):
        log.warning("val caption parsed wrong/missed: %s", m)
    return report
