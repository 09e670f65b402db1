"""Captions in everyday words: template vs paraphrased test captions, decoupled vs baseline vs served.

For every test caption of a release with ground truth, the mapping's reading (precision 1.0 on the
template language) says what it states; :mod:`pipeline.baseline.paraphrase` rewrites that in words
chosen by hand (synonyms, informal phrasing, other orders). The paraphrase states the same
attributes, so its relevant images are the template caption's (``test_gt.txt``). Both caption sets
are ranked by

- **decoupled**: the mapping + the ensembled classifiers (``rank.rank``; an unread caption gets
  the gallery's first images, as the retrieve stage's submission does);
- **baseline**: the dual encoder alone over the whole test gallery;
- **served**: the ensemble as served with the baseline as fallback (``combine.answer``), for
  ``combine: fallback`` and ``fusion`` at several weights; a ``none`` answer scores 0.

and scored with the official mAP@10 (and standard mAP@10). Also: which path answered, how often
the served domain is the caption's true domain, the best cosine to a training caption for
template, paraphrased and foreign/gibberish captions (what ``baseline.min_similarity`` is set
from), and the served model's time per caption. Writes ``bench/results/baseline.json``.

Usage (the outputs of ``make run`` by default)::

    python bench/bench_baseline.py [--release data/synthetic] [--prepared data/prepared]
        [--mapping data/mapping/mapping.yaml] [--retrieval data/retrieval] [--baseline data/baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "baseline.json"
K = 10

#: Captions that say nothing a reader of this data can place (other languages, gibberish).
NOTHING = ["une femme avec un sac à dos", "ein Mann mit Brille", "una mujer de espaldas", "一个穿红衣服的女人",
           "xqzv wptk lrrm", "asdfgh jkl", "lorem ipsum dolor sit amet", "??? !!! ...", "1234 5678",
           "el coche rojo", "der weiße Bus", "grüne Jacke"]


def official(ranked, relevant):
    from pipeline import metrics

    return metrics.official_map(ranked, relevant, K)


def standard(ranked, relevant):
    from pipeline import metrics

    return metrics.retrieval_metrics(ranked, relevant, K)["standard_map10"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--release", type=Path, default=ROOT / "data" / "synthetic")
    ap.add_argument("--prepared", type=Path, default=ROOT / "data" / "prepared")
    ap.add_argument("--mapping", type=Path, default=ROOT / "data" / "mapping" / "mapping.yaml")
    ap.add_argument("--retrieval", type=Path, default=ROOT / "data" / "retrieval")
    ap.add_argument("--baseline", type=Path, default=ROOT / "data" / "baseline")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from pipeline.baseline import combine
    from pipeline.baseline.combine import Fallback, fallback_artifacts
    from pipeline.baseline.encoder import Gallery, top_k_similar
    from pipeline.baseline.paraphrase import paraphrase
    from pipeline.formats import read_gt, read_table
    from pipeline.mapping import load_mapping
    from pipeline.rank import GalleryIndex, pad_to_k, rank

    t0 = time.perf_counter()
    mapping = load_mapping(args.mapping)
    q = read_table(args.prepared, "queries")
    q = q[q["split"] == "test"].sort_values("query_id").reset_index(drop=True)
    texts = q["text"].tolist()
    gt_texts, relevant = read_gt(args.release / "test" / "test_gt.txt")
    assert gt_texts == texts, "test_text and test_gt disagree"
    parsed = mapping.parse_many(texts)
    keep = [i for i, p in enumerate(parsed) if p.domain != "unknown"]
    para = [paraphrase(parsed[i].domain, parsed[i].attributes, seed=i) for i in keep]
    truth = [parsed[i].domain for i in keep]  # the template parse: the caption's domain
    rel = [relevant[i] for i in keep]
    sets = {"template": [texts[i] for i in keep], "paraphrase": para}

    ranker = json.loads((args.retrieval / "ranker.json").read_text())
    form = ranker["distance"]
    index = GalleryIndex.load(args.retrieval / "gallery_test.npz")
    art = fallback_artifacts(args.baseline)
    fb = Fallback.load(art)
    gallery = fb.gallery_for(index)
    de_gallery = Gallery.load(art["fallback_gallery"])

    results: dict = {"n_captions": len(keep), "n_unread_template": len(texts) - len(keep), "distance": form,
                     "examples": [{"template": texts[i], "paraphrase": p} for i, p in zip(keep[:6], para[:6])]}
    table = {}
    for name, caps in sets.items():
        cp = mapping.parse_many(caps)
        dec = rank(index, [(p.domain, p.attributes) for p in cp], form=form, k=K)
        dec_names = [pad_to_k(list(n), index.names.tolist(), K) for n in dec.names]
        joint, raw = fb.encoder.encode(caps)
        idx, _ = top_k_similar(joint, de_gallery.embeddings, K)
        base_names = [de_gallery.names[row].tolist() for row in idx]
        row = {"decoupled": official(dec_names, rel), "baseline": official(base_names, rel),
               "decoupled_standard": standard(dec_names, rel), "baseline_standard": standard(base_names, rel),
               "decoupled_domain_accuracy": float(np.mean([d == t for d, t in zip(dec.domain, truth)])),
               "best_reference_cosine": {"mean": float(fb.reference.nearest(raw)[0].mean()),
                                         "p05": float(np.percentile(fb.reference.nearest(raw)[0], 5))}}
        for mode, weight in [("fallback", 0.5), ("fusion", 0.25), ("fusion", 0.5), ("fusion", 0.75)]:
            fb.combine, fb.fusion_weight = mode, weight
            t = time.perf_counter()
            out = combine.answer(caps, cp, dec, index, form, K, fb, gallery)
            dt = time.perf_counter() - t
            key = "served_fallback" if mode == "fallback" else f"served_fusion_{weight}"
            row[key] = official(out["image_names"], rel)
            row[key + "_standard"] = standard(out["image_names"], rel)
            row[key + "_paths"] = {p: out["path"].count(p) for p in combine.PATHS}
            row[key + "_domain_accuracy"] = float(np.mean([d == t for d, t in zip(out["domain"], truth)]))
            row[key + "_ms_per_caption"] = 1000 * dt / len(caps)
        table[name] = row
    _, raw = fb.encoder.encode(NOTHING)
    nothing_best = fb.reference.nearest(raw)[0]
    words = [combine.words_of(c, fb.vocab) for c in NOTHING]
    results["nothing_captions"] = {c: {"best_reference_cosine": round(float(s), 3), "known_words": list(w.known)}
                                   for c, s, w in zip(NOTHING, nothing_best, words)}
    results["table"] = table
    results["seconds"] = time.perf_counter() - t0
    results["machine"] = {"cpus": os.cpu_count(), "loadavg": os.getloadavg()[0]}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    for name, row in table.items():
        print(name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    print(json.dumps(results["nothing_captions"], indent=1, ensure_ascii=False))
    print(f"-> {OUT}")


if __name__ == "__main__":
    main()
