"""The ``score`` command: score any submission JSON like the organisers do, and more.

Two kinds of ground truth:

- ``--gt``: the organisers' ``text$relevant_image$...`` file, one line per text in test order.
- ``--labels``: an ``image$attribute$caption`` file (a val label file) whose line i is query i and
  whose images are the gallery. Relevance is judged on the labels: ``label`` = the image's whole
  label equals the query image's; ``inclusion`` = the image carries every attribute the caption
  states, where the stated groups come from the mapping and their values from the query image's
  label (a vehicle label is partial, so only its labelled groups can be judged).

Like the official script, the submission's texts must be the ground truth's texts in order,
otherwise there is no score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline import metrics, schema


class ScoreError(ValueError):
    """A submission or ground-truth file that cannot be scored."""


def read_submission(path: Path, k: int = 10) -> tuple[list[str], list[list[str]]]:
    """Texts and ranked names of an official submission, checked for shape."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ScoreError(f"cannot read submission {path}: {e}") from None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list):
        raise ScoreError(f'{path}: expected {{"results": [...]}}')
    texts, ranked = [], []
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not isinstance(r.get("text"), str) \
                or not isinstance(r.get("image_names"), list):
            raise ScoreError(f"{path}: result {i} needs a 'text' string and an 'image_names' list")
        if len(r["image_names"]) != k:
            raise ScoreError(f"{path}: result {i} has {len(r['image_names'])} image names, expected {k}")
        texts.append(r["text"])
        ranked.append([str(n) for n in r["image_names"]])
    return texts, ranked


def parse_label_field(field: str) -> tuple[str, dict[str, str | None]]:
    """``(domain, {group: value or None})`` of a label file's attribute field."""
    if "," in field:
        idx = schema.bits_to_groups(schema.parse_bits(field))
        return "pedestrian", schema.groups_to_values(idx)
    attrs = schema.parse_vehicle_phrase(field)
    return "vehicle", {g.name: attrs.get(g.name) for g in schema.VEHICLE_GROUPS}


def read_labels(path: Path) -> tuple[list[str], list[str], list[str], list[dict[str, str | None]]]:
    """Images, domains, captions and labels of an ``image$attribute$caption`` file."""
    images, domains, captions, labels = [], [], [], []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("$")
        if len(parts) != 3:
            raise ScoreError(f"{path}:{lineno}: expected image$attribute$caption, got {len(parts)} fields")
        try:
            domain, label = parse_label_field(parts[1])
        except (ValueError, KeyError) as e:
            raise ScoreError(f"{path}:{lineno}: bad attribute field {parts[1]!r}: {e}") from None
        images.append(parts[0].strip()); domains.append(domain)
        captions.append(parts[2]); labels.append(label)
    return images, domains, captions, labels


def score(submission: Path, gt: Path | None = None, labels: Path | None = None,
          relevance: str = "inclusion", mapping: Path | None = None, k: int = 10) -> dict[str, Any]:
    """Metrics per domain (``all`` overall) of a submission against ``gt`` or ``labels``."""
    if (gt is None) == (labels is None):
        raise ScoreError("give exactly one of --gt and --labels")
    if relevance not in metrics.RELEVANCE_RULES:
        raise ScoreError(f"unknown relevance {relevance!r}; expected one of {list(metrics.RELEVANCE_RULES)}")
    texts, ranked = read_submission(submission, k)
    if gt is not None:
        from pipeline.retrieve import read_gt

        if not Path(gt).exists():
            raise ScoreError(f"ground truth {gt} not found")
        gt_texts, relevant = read_gt(gt)
        metrics.check_text_order(texts, gt_texts)
        return {"all": metrics.retrieval_metrics(ranked, relevant, k)}

    if not Path(labels).exists():
        raise ScoreError(f"labels file {labels} not found")
    images, domains, captions, labs = read_labels(labels)
    metrics.check_text_order(texts, captions)
    if relevance == "inclusion":
        if mapping is None or not Path(mapping).exists():
            raise ScoreError(f"relevance 'inclusion' needs the mapping to know what a caption states; "
                             f"{mapping} not found (pass --mapping or use --relevance label)")
        from pipeline.mapping import load_mapping

        parsed = load_mapping(mapping).parse_many(captions)
        stated = [{g: lab[g] for g in p.attributes if lab.get(g) is not None}
                  for p, lab in zip(parsed, labs)]
    else:
        stated = [{} for _ in labs]
    gallery = dict(zip(images, labs))
    relevant = metrics.relevant_sets(stated, gallery, labs, rule=relevance)
    return metrics.metrics_by_domain(ranked, relevant, domains, k)


def format_report(result: dict[str, dict[str, float]]) -> str:
    """A small table per domain, then the official mAP@10 alone on the last line."""
    keys = ["n_queries", "official_map10", "standard_map10", "hit1", "hit5", "hit10"]
    lines = ["domain      " + " ".join(f"{k:>15}" for k in keys)]
    for d, m in result.items():
        lines.append(f"{d:<11} " + " ".join(
            f"{m.get(k, float('nan')):>15d}" if k == "n_queries" else f"{m.get(k, float('nan')):>15.5f}"
            for k in keys))
    lines.append(f"{result['all'].get('official_map10', 0.0):.5f}")
    return "\n".join(lines)
