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

from pipeline import metrics
from pipeline.formats import FormatError, label_frame, label_records, parse_label_line, read_gt, read_lines


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


def read_labels(path: Path) -> tuple[list[str], list[str], list[str], list[dict[str, str | None]]]:
    """Images, domains, captions and labels (``{group: value or None}``) of an
    ``image$attribute$caption`` file, in file order; blank lines are skipped, a malformed line
    raises :class:`ScoreError` naming it (the checks ingest applies, see pipeline.formats.lines)."""
    records = []
    for number, text, raw in read_lines(path)[0]:
        if text is not None and not text.strip():
            continue
        res = "invalid UTF-8" if text is None else parse_label_line(text)
        if isinstance(res, str):
            raise ScoreError(f"{path}:{number}: expected image$attribute$caption: {res}: {raw[:80]!r}")
        records.append(res)
    frame = label_frame(records, "val")
    return ([r.name for r in records], [r.domain for r in records], [r.caption for r in records],
            label_records(frame))


def score(submission: Path, gt: Path | None = None, labels: Path | None = None,
          relevance: str = "inclusion", mapping: Path | None = None, k: int = 10) -> dict[str, Any]:
    """Metrics per domain (``all`` overall) of a submission against ``gt`` or ``labels``."""
    if (gt is None) == (labels is None):
        raise ScoreError("give exactly one of --gt and --labels")
    if relevance not in metrics.RELEVANCE_RULES:
        raise ScoreError(f"unknown relevance {relevance!r}; expected one of {list(metrics.RELEVANCE_RULES)}")
    texts, ranked = read_submission(submission, k)
    if gt is not None:
        if not Path(gt).exists():
            raise ScoreError(f"ground truth {gt} not found")
        try:
            gt_texts, relevant = read_gt(gt)
        except FormatError as e:
            raise ScoreError(str(e)) from None
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
