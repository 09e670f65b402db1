"""Stage ``retrieve``: ensemble the members, route the gallery, rank it for every caption, score.

Inputs (docs/architecture.md): ``data/predictions/<domain>/<backbone>/{val,test}.parquet`` for the
pedestrian, vehicle and router domains, the mapping, and the prepared tables. Outputs under
``RetrieveIO.out``: ``submission.json`` (official format and order), ``metrics.json`` (DVC
metrics), ``ranker.json`` (how it ranked), ``plots/*.csv`` (DVC plots: ``group_accuracy.csv`` for
the ensemble, ``group_accuracy_members.csv`` per member, ``domain_metrics.csv``) with PNGs,
``grids/*.png`` and ``gallery_test.npz`` (the routed test gallery the ``register`` stage bundles
into the served model).

Val is scored against the val gallery with relevance from the val labels: the groups a caption
states come from the mapping, their values from the query image's label (so a mapping error
cannot make a wrong image "relevant"), and an image is relevant when its labels carry all of
them. Vehicle val labels are partial ("colour Brand." or "Type."), so a vehicle val query's
relevant set is every image whose label matches every attribute the caption states. Test is
scored against the release's ``test/test_gt.txt`` when it exists.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline import metrics, schema
from pipeline.config import Params
from pipeline.formats import label_dicts, read_gt, read_table
from pipeline.rank import GalleryIndex, Ranking, pad_to_k, rank

log = logging.getLogger(__name__)


class RetrieveError(ValueError):
    """Missing or inconsistent inputs of the retrieve stage."""


# --------------------------------------------------------------------------- ensemble + routing

def groups_of(domain: str) -> tuple[schema.Group, ...]:
    return (schema.ROUTER_GROUP,) if domain == "router" else schema.GROUPS_BY_DOMAIN[domain]


def read_predictions(path: Path, domain: str) -> pd.DataFrame:
    """One member's probability table, checked against the contract."""
    if not path.exists():
        raise RetrieveError(f"missing predictions {path} (train that member or drop it from "
                            "retrieve.members)")
    df = pd.read_parquet(path)
    cols = schema.prob_columns(groups_of(domain))
    missing = [c for c in ["name", *cols] if c not in df.columns]
    if missing:
        raise RetrieveError(f"{path}: missing columns {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if df["name"].duplicated().any():
        dup = df["name"][df["name"].duplicated()].iloc[0]
        raise RetrieveError(f"{path}: duplicated image names, e.g. {dup!r}")
    bad = df[cols].isna().any(axis=1)
    if bad.any():
        raise RetrieveError(f"{path}: {int(bad.sum())} rows with missing probabilities")
    return df[["name", *cols]].set_index("name")


def ensemble(tables: Mapping[str, pd.DataFrame], weights: Mapping[str, float]) -> pd.DataFrame:
    """Weighted average of the members' probability tables (indexed by name, same columns).

    Every member must cover the same images: a silent inner join would lose images.
    """
    if not tables:
        raise RetrieveError("no ensemble members")
    names = list(tables)
    first = tables[names[0]]
    total = sum(weights[m] for m in names)
    if total <= 0:
        raise RetrieveError(f"ensemble weights must sum to a positive number, got {dict(weights)}")
    out = first * 0.0
    for m in names:
        t = tables[m]
        if set(t.index) != set(first.index):
            diff = set(t.index) ^ set(first.index)
            raise RetrieveError(f"members {names[0]} and {m} predict different images "
                                f"({len(diff)} differ, e.g. {sorted(diff)[0]!r})")
        out += t.loc[first.index, first.columns] * (weights[m] / total)
    return out


def member_tables(pred_dir: Path, domain: str, members: Mapping[str, float], split: str
                  ) -> dict[str, pd.DataFrame]:
    return {m: read_predictions(pred_dir / domain / m / f"{split}.parquet", domain) for m in members}


def route(router: pd.DataFrame) -> pd.Series:
    """Domain of each image: argmax of the router's ``domain=...`` columns (ties -> pedestrian)."""
    cols = schema.prob_columns([schema.ROUTER_GROUP])
    winner = np.asarray(router[cols].to_numpy().argmax(axis=1))
    return pd.Series(np.array(schema.DOMAINS)[winner], index=router.index, name="domain")


def build_index(pred_dir: Path, members: Mapping[str, float], split: str) -> GalleryIndex:
    """The routed gallery of a split from the ensembled router and domain predictions."""
    domain = route(ensemble(member_tables(pred_dir, "router", members, split), members))
    probs = {}
    for d in schema.DOMAINS:
        table = ensemble(member_tables(pred_dir, d, members, split), members)
        routed = domain.index[domain == d]
        missing = routed.difference(table.index)
        if len(missing):
            raise RetrieveError(f"{d} predictions for {split} lack {len(missing)} routed images, "
                                f"e.g. {missing[0]!r}")
        probs[d] = table.loc[routed].to_numpy(np.float32)
    # Image order within each domain must match `probs`, so order the names by domain first.
    names = np.concatenate([domain.index[domain == d].to_numpy() for d in schema.DOMAINS]).astype(str)
    doms = np.concatenate([[d] * int((domain == d).sum()) for d in schema.DOMAINS]).astype(str)
    log.info("%s gallery: %d images routed %s", split, len(names),
             {d: int((domain == d).sum()) for d in schema.DOMAINS})
    return GalleryIndex(names=names, domain=doms, probs=probs)


# --------------------------------------------------------------------------- labels + relevance

def stated_from_label(parsed_attrs: Mapping[str, str], label: Mapping[str, str | None]) -> dict[str, str]:
    """The groups the caption states, with the query image's labelled values."""
    return {g: label[g] for g in parsed_attrs if label.get(g) is not None}


# --------------------------------------------------------------------------- outputs

def submission(texts: Sequence[str], ranking: Ranking, all_names: Sequence[str], k: int = 10) -> dict:
    """The official submission: texts in the given order, k names each."""
    return {"results": [{"text": t, "image_names": pad_to_k(list(n), all_names, k)}
                        for t, n in zip(texts, ranking.names)]}


def classifier_table(pred_dir: Path, members: Mapping[str, float], labels: pd.DataFrame,
                     images: pd.DataFrame) -> pd.DataFrame:
    """Val accuracy and mA per group, for every member and the ensemble (router included)."""
    rows = []
    val = labels[labels["split"] == "val"].set_index("name")
    truth_domain = images[images["split"] == "val"].set_index("name")["domain"]
    for d in schema.TRAINING_DOMAINS:
        tables = member_tables(pred_dir, d, members, "val")
        tables["ensemble"] = ensemble(tables, members)
        for model, t in tables.items():
            for g in groups_of(d):
                cols = schema.prob_columns([g])
                if d == "router":
                    y = truth_domain.reindex(t.index)
                else:
                    y = val.loc[val["domain"] == d, g.name].reindex(t.index)
                if d == "pedestrian":
                    idx = np.array([-1 if pd.isna(v) else int(v) for v in y], dtype=np.int64)
                else:
                    idx = metrics.label_indices([None if pd.isna(v) else str(v) for v in y], g)
                res = metrics.group_accuracy(t[cols].to_numpy(), idx, g.n_classes)
                rows.append({"model": model, "domain": d, "group": g.name, **res})
    return pd.DataFrame(rows)


def write_classifier_report(table: pd.DataFrame, out: Path) -> dict[str, float]:
    """Per-group CSVs (members and ensemble; the ensemble's for DVC plots), the PNG, and the
    summary figures for metrics.json."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "group_accuracy_members.csv", index=False)
    ens = table[table["model"] == "ensemble"]
    # DVC plots want one row per x value: the ensemble's subtasks.
    ens.assign(subtask=ens["domain"] + "/" + ens["group"])[["subtask", "accuracy", "mA", "n"]] \
        .to_csv(out / "group_accuracy.csv", index=False)
    from pipeline.figures import plot_group_accuracy

    plot_group_accuracy(table, out / "group_accuracy.png")
    return {
        "router_accuracy": float(ens.loc[ens["domain"] == "router", "accuracy"].iloc[0]),
        **{f"{d}_mA": float(ens.loc[ens["domain"] == d, "mA"].mean()) for d in schema.DOMAINS},
        **{f"{d}_accuracy": float(ens.loc[ens["domain"] == d, "accuracy"].mean()) for d in schema.DOMAINS},
    }


# --------------------------------------------------------------------------- the stage

def evaluate_val(index: GalleryIndex, queries: pd.DataFrame, parsed: Sequence[Any],
                 labels: Mapping[str, Mapping[str, str | None]], image_domain: Mapping[str, str],
                 form: str, rule: str, k: int) -> tuple[Ranking, list[set[str]], dict]:
    """Rank the val captions against the val gallery and score them on the val labels."""
    ranking = rank(index, [(p.domain, p.attributes) for p in parsed], form=form, k=k)
    relevant, domains = val_relevance(queries, parsed, labels, index.names, image_domain, rule)
    return ranking, relevant, metrics.metrics_by_domain(ranking.names, relevant, domains, k)


def val_relevance(queries: pd.DataFrame, parsed: Sequence[Any], labels: Mapping[str, Mapping[str, str | None]],
                  gallery_names: Sequence[str], image_domain: Mapping[str, str], rule: str
                  ) -> tuple[list[set[str]], list[str]]:
    """Each val caption's relevant gallery images (judged on labels) and its true domain; any
    ranker of the val gallery is scored against these (the baseline stage too)."""
    q_labels = [labels.get(img, {}) for img in queries["image"]]
    stated = [stated_from_label(p.attributes, lab) for p, lab in zip(parsed, q_labels)]
    gallery = {n: labels.get(n, {}) for n in gallery_names}
    relevant = metrics.relevant_sets(stated, gallery, q_labels, rule=rule)
    return relevant, [image_domain.get(img, "unknown") for img in queries["image"]]


@dataclass(frozen=True)
class RetrieveIO:
    prepared: Path     # in: ingest's tables
    release: Path      # in: the release (its test/test_gt.txt scores test, when present)
    predictions: Path  # in: <domain>/<backbone>/{val,test}.parquet of every member
    mapping: Path      # in: the caption mapping
    out: Path          # out: submission, metrics, ranker, gallery, plots, grids
    metrics: Path | None = None  # out: the headline figures for DVC

    def artifacts(self) -> list[Path]:
        return [self.out / f for f in ("metrics.json", "plots", "grids")]


@dataclass(frozen=True)
class Split:
    """One scored split: its queries, their parses, the ranking and (when judged) relevance."""

    queries: pd.DataFrame
    parsed: list[Any]
    ranking: Ranking
    relevant: list[set[str]] | None
    metrics: dict[str, Any] | None


def read_inputs(io: RetrieveIO) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``queries`` (sorted by split and id), ``labels`` and ``images`` of the prepared tables."""
    queries = read_table(io.prepared, "queries").sort_values(["split", "query_id"])
    return queries, read_table(io.prepared, "labels"), read_table(io.prepared, "images")


def build_indexes(io: RetrieveIO, members: Mapping[str, float], images: pd.DataFrame) -> dict[str, GalleryIndex]:
    """The ensembled, routed gallery of each scored split; every image must have predictions."""
    indexes = {s: build_index(io.predictions, members, s) for s in schema.EVAL_SPLITS}
    for s, index in indexes.items():
        lost = set(images.loc[images["split"] == s, "name"]) - set(index.names)
        if lost:
            raise RetrieveError(f"{len(lost)} {s} images have no predictions, e.g. {sorted(lost)[0]!r}")
    return indexes


def score_val(params: Params, index: GalleryIndex, queries: pd.DataFrame, mapping: Any,
              labels: pd.DataFrame, images: pd.DataFrame) -> Split:
    p = params.retrieve
    vq = queries[queries["split"] == "val"].reset_index(drop=True)
    parsed = mapping.parse_many(vq["text"].tolist())
    ranking, relevant, scores = evaluate_val(index, vq, parsed, label_dicts(labels[labels["split"] == "val"]),
                                             dict(zip(images["name"], images["domain"])),
                                             p.distance, p.relevance, p.top_k)
    return Split(vq, parsed, ranking, relevant, scores)


def score_test(params: Params, io: RetrieveIO, index: GalleryIndex, queries: pd.DataFrame,
               mapping: Any) -> tuple[Split, dict]:
    """Rank the test captions; the submission; metrics when the release has ground truth."""
    p = params.retrieve
    tq = queries[queries["split"] == "test"].reset_index(drop=True)
    parsed = mapping.parse_many(tq["text"].tolist())
    ranking = rank(index, [(x.domain, x.attributes) for x in parsed], form=p.distance, k=p.top_k)
    sub = submission(tq["text"].tolist(), ranking, index.names.tolist(), p.top_k)
    gt_path = io.release / "test" / "test_gt.txt"
    if not gt_path.exists():
        log.warning("no %s: test metrics skipped (a real release has no ground truth)", gt_path)
        return Split(tq, parsed, ranking, None, None), sub
    gt_texts, relevant = read_gt(gt_path)
    metrics.check_text_order(tq["text"].tolist(), gt_texts)
    ranked = [r["image_names"] for r in sub["results"]]
    scores = metrics.metrics_by_domain(ranked, relevant, ranking.domain, p.top_k)
    return Split(tq, parsed, ranking, relevant, scores), sub


#: The retrieval figures DVC compares across experiments (metrics.json beside them has them all).
HEADLINE = ("official_map10", "standard_map10", "hit1", "hit10")


def headline(result: Mapping[str, Any]) -> dict[str, Any]:
    """``{split: {domain: {HEADLINE...}}, classifiers: {...}}`` of the stage's metrics."""
    out: dict[str, Any] = {s: {d: {k: m[k] for k in HEADLINE} for d, m in result[s].items()}
                           for s in schema.EVAL_SPLITS if s in result}
    out["classifiers"] = dict(result["classifiers"])
    return out


def run(params: Params, io: RetrieveIO) -> dict[str, Any]:
    """The stage: rank val and test, write every output under ``io.out``; return the metrics."""
    from pipeline.figures import write_domain_plots, write_grids
    from pipeline.mapping import load_mapping
    from pipeline.stage import write_atomic, write_metrics

    p = params.retrieve
    queries, labels, images = read_inputs(io)
    mapping = load_mapping(io.mapping)
    (io.out / "plots").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(io.out / "grids", ignore_errors=True)  # regenerated whole; no stale pictures

    indexes = build_indexes(io, p.members, images)
    val = score_val(params, indexes["val"], queries, mapping, labels, images)
    test, sub = score_test(params, io, indexes["test"], queries, mapping)
    for split, s in (("val", val), ("test", test)):
        unknown = sum(x.domain == "unknown" for x in s.parsed)
        if unknown:  # they state nothing, so they get the gallery's first images (docs/retrieval.md)
            log.warning("%d of %d %s captions parse to no attribute (domain unknown)", unknown, len(s.parsed), split)
    result: dict[str, Any] = {"val": val.metrics, **({"test": test.metrics} if test.metrics else {})}
    result["classifiers"] = write_classifier_report(classifier_table(io.predictions, p.members, labels, images),
                                                    io.out / "plots")

    write_atomic(io.out / "submission.json", json.dumps(sub, indent=1))
    write_atomic(io.out / "metrics.json", json.dumps(result, indent=2))
    ranker = {"distance": p.distance, "top_k": p.top_k, "relevance": p.relevance, "members": dict(p.members)}
    write_atomic(io.out / "ranker.json", json.dumps(ranker, indent=2))
    write_domain_plots(result, io.out / "plots")
    indexes["test"].save(io.out / "gallery_test.npz")
    paths = dict(zip(images["name"], images["path"]))
    rng = np.random.default_rng(params.base.seed)
    for split, s in (("val", val), ("test", test)):
        write_grids(split, s.queries, s.ranking, s.relevant, paths, io.out / "grids", p.grid_samples, rng)
    write_metrics(io.metrics, headline(result))
    for split in ("val", "test"):
        if split in result:
            log.info("%s official mAP@10 %.4f (standard %.4f)", split, result[split]["all"]["official_map10"],
                     result[split]["all"]["standard_map10"])
    return result
