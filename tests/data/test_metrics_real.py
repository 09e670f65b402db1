"""Data test: the `score --labels` reader on the real validation label text (../shared/track2)."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from pipeline import score


def test_score_reads_every_real_val_line_and_scores_label_equality(real_track2, tmp_path):
    lines = (real_track2 / "val_label_dev.txt").read_text().splitlines()
    labels = tmp_path / "val.txt"
    labels.write_text("\n".join(lines) + "\n")
    images, domains, captions, labs = score.read_labels(labels)
    assert len(images) == len(lines)  # every real line parses (bits and every vehicle phrase form)
    assert {"pedestrian", "vehicle"} <= set(domains)

    # A perfect ranking under label equality: the images with the query's label first.
    by_label = defaultdict(list)
    for name, lab in zip(images, labs):
        by_label[tuple(sorted((k, v) for k, v in lab.items() if v is not None))].append(name)
    results = []
    for name, lab, text in zip(images, labs, captions):
        same = by_label[tuple(sorted((k, v) for k, v in lab.items() if v is not None))][:10]
        rest = [n for n in images[:20] if n not in same]
        results.append({"text": text, "image_names": (same + rest)[:10]})
    sub = tmp_path / "sub.json"
    sub.write_text(json.dumps({"results": results}))
    res = score.score(sub, labels=labels, relevance="label")
    assert res["all"]["official_map10"] == pytest.approx(1.0, abs=1e-5)
    assert res["all"]["standard_map10"] == pytest.approx(1.0)
    assert res["all"]["n_queries"] == len(lines)
