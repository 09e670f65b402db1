"""Stage ``retrieve``: ensemble the members, route the gallery, rank it for every caption, score.

Inputs (docs/architecture.md): ``data/predictions/<domain>/<backbone>/{val,test}.parquet`` for the
pedestrian, vehicle and router domains, the mapping, and the prepared tables. Outputs under
``retrieve.out_dir``: ``submission.json`` (official format and order), ``metrics.json`` (DVC
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
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline import metrics, schema
from pipeline.rank import GalleryIndex, Ranking, pad_to_k, rank

log = logging.getLogger(__name__)

PREDICTION_DOMAINS = ("pedestrian", "vehicle", "router")
SPLITS = ("val", "test")


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

def label_dicts(labels: pd.DataFrame) -> dict[str, dict[str, str | None]]:
    """Image name -> {group: value or None} from ``labels.parquet`` rows."""
    out: dict[str, dict[str, str | None]] = {}
    for row in labels.itertuples(index=False):
        r = row._asdict()
        if r["domain"] == "pedestrian":
            out[r["name"]] = {g.name: (None if pd.isna(r[g.name]) else g.values[int(r[g.name])])
                              for g in schema.PEDESTRIAN_GROUPS}
        else:
            out[r["name"]] = {g: (None if pd.isna(r[g]) else str(r[g])) for g in ("color", "type", "brand")}
    return out


def stated_from_label(parsed_attrs: Mapping[str, str], label: Mapping[str, str | None]) -> dict[str, str]:
    """The groups the caption states, with the query image's labelled values."""
    return {g: label[g] for g in parsed_attrs if label.get(g) is not None}


def read_gt(path: Path) -> tuple[list[str], list[set[str]]]:
    """The organisers' ground truth: ``text$img$img...`` per text, in test text order."""
    texts, relevant = [], []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("$")
        if len(parts) < 2:
            raise RetrieveError(f"{path}:{lineno}: expected text$image$..., got {line[:80]!r}")
        texts.append(parts[0])
        relevant.append({p.strip() for p in parts[1:] if p.strip()})
    return texts, relevant


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
    for d in PREDICTION_DOMAINS:
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


def write_classifier_report(table: pd.DataFrame, out: Path) -> dict[str, float]:
    """Per-group CSVs (members and ensemble; the ensemble's for DVC plots), the PNG, and the
    summary figures for metrics.json."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "group_accuracy_members.csv", index=False)
    ens = table[table["model"] == "ensemble"]
    # DVC plots want one row per x value: the ensemble's subtasks.
    ens.assign(subtask=ens["domain"] + "/" + ens["group"])[["subtask", "accuracy", "mA", "n"]] \
        .to_csv(out / "group_accuracy.csv", index=False)
    plot_group_accuracy(table, out / "group_accuracy.png")
    return {
        "router_accuracy": float(ens.loc[ens["domain"] == "router", "accuracy"].iloc[0]),
        **{f"{d}_mA": float(ens.loc[ens["domain"] == d, "mA"].mean()) for d in schema.DOMAINS},
        **{f"{d}_accuracy": float(ens.loc[ens["domain"] == d, "accuracy"].mean()) for d in schema.DOMAINS},
    }


def write_domain_plots(result: Mapping[str, Any], out: Path) -> None:
    """``domain_metrics.csv`` (one row per split/domain, for DVC plots) and its PNG."""
    splits = [s for s in SPLITS if s in result]
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


# --------------------------------------------------------------------------- the stage

def evaluate_val(index: GalleryIndex, queries: pd.DataFrame, parsed: Sequence[Any],
                 labels: Mapping[str, Mapping[str, str | None]], image_domain: Mapping[str, str],
                 form: str, rule: str, k: int) -> tuple[Ranking, list[set[str]], dict]:
    """Rank the val captions against the val gallery and score them on the val labels."""
    ranking = rank(index, [(p.domain, p.attributes) for p in parsed], form=form, k=k)
    q_labels = [labels.get(img, {}) for img in queries["image"]]
    stated = [stated_from_label(p.attributes, lab) for p, lab in zip(parsed, q_labels)]
    gallery = {n: labels.get(n, {}) for n in index.names}
    relevant = metrics.relevant_sets(stated, gallery, q_labels, rule=rule)
    domains = [image_domain.get(img, "unknown") for img in queries["image"]]
    return ranking, relevant, metrics.metrics_by_domain(ranking.names, relevant, domains, k)


def run(params: Any, root: Path = Path(".")) -> dict:
    """Run the stage with ``base`` + ``retrieve`` params; return the metrics written."""
    from pipeline.mapping import load_mapping

    p, base = params.retrieve, params.base
    pred_dir, out = root / p.predictions_dir, root / p.out_dir
    prepared = root / base.prepared_dir
    for f in ("queries.parquet", "labels.parquet", "images.parquet"):
        if not (prepared / f).exists():
            raise RetrieveError(f"missing {prepared / f} (run the ingest stage first)")
    queries = pd.read_parquet(prepared / "queries.parquet").sort_values(["split", "query_id"])
    labels_df = pd.read_parquet(prepared / "labels.parquet")
    images = pd.read_parquet(prepared / "images.parquet")
    mapping = load_mapping(root / p.mapping)
    labels = label_dicts(labels_df[labels_df["split"] == "val"])
    image_domain = dict(zip(images["name"], images["domain"]))
    paths = {n: str(root / q) for n, q in zip(images["name"], images["path"])}
    (out / "plots").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "grids", ignore_errors=True)  # regenerated whole; no stale pictures

    indexes = {s: build_index(pred_dir, p.members, s) for s in SPLITS}
    for s, index in indexes.items():
        expected = set(images.loc[images["split"] == s, "name"])
        lost = expected - set(index.names)
        if lost:
            raise RetrieveError(f"{len(lost)} {s} images have no predictions, e.g. {sorted(lost)[0]!r}")

    # val
    vq = queries[queries["split"] == "val"].reset_index(drop=True)
    v_parsed = mapping.parse_many(vq["text"].tolist())
    v_rank, v_rel, v_metrics = evaluate_val(indexes["val"], vq, v_parsed, labels, image_domain,
                                            p.distance, p.relevance, p.top_k)
    result: dict[str, Any] = {"val": v_metrics}

    # test
    tq = queries[queries["split"] == "test"].reset_index(drop=True)
    t_parsed = mapping.parse_many(tq["text"].tolist())
    t_rank = rank(indexes["test"], [(x.domain, x.attributes) for x in t_parsed], form=p.distance, k=p.top_k)
    for split, parsed in (("val", v_parsed), ("test", t_parsed)):
        unknown = sum(x.domain == "unknown" for x in parsed)
        if unknown:  # they state nothing, so they get the gallery's first images (docs/retrieval.md)
            log.warning("%d of %d %s captions parse to no attribute (domain unknown)",
                        unknown, len(parsed), split)
    sub = submission(tq["text"].tolist(), t_rank, indexes["test"].names.tolist(), p.top_k)
    (out / "submission.json").write_text(json.dumps(sub, indent=1))
    gt_path = root / base.release_dir / "test" / "test_gt.txt"
    t_rel = None
    if gt_path.exists():
        gt_texts, t_rel = read_gt(gt_path)
        metrics.check_text_order(tq["text"].tolist(), gt_texts)
        ranked = [r["image_names"] for r in sub["results"]]
        result["test"] = metrics.metrics_by_domain(ranked, t_rel, t_rank.domain, p.top_k)
    else:
        log.warning("no %s: test metrics skipped (a real release has no ground truth)", gt_path)

    result["classifiers"] = write_classifier_report(classifier_table(pred_dir, p.members, labels_df, images),
                                                    out / "plots")
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    ranker = {"distance": p.distance, "top_k": p.top_k, "relevance": p.relevance, "members": dict(p.members)}
    (out / "ranker.json").write_text(json.dumps(ranker, indent=2))

    write_domain_plots(result, out / "plots")
    indexes["test"].save(out / "gallery_test.npz")

    rng = np.random.default_rng(base.seed)
    for split, qs, rk, rel in (("val", vq, v_rank, v_rel), ("test", tq, t_rank, t_rel)):
        write_grids(split, qs, rk, rel, paths, out / "grids", p.grid_samples, rng)
    log.info("val official mAP@10 %.4f (standard %.4f)", v_metrics["all"]["official_map10"],
             v_metrics["all"]["standard_map10"])
    if "test" in result:
        log.info("test official mAP@10 %.4f (standard %.4f)", result["test"]["all"]["official_map10"],
                 result["test"]["all"]["standard_map10"])
    return result


def log_to_mlflow(params: Any, result: Mapping[str, Any], out: Path) -> None:
    """One MLflow run for the stage: params, flat metrics, and the outputs as artifacts."""
    import dataclasses

    import mlflow

    from pipeline import tracking

    prepared = params.base.prepared_dir
    with tracking.stage_run(params.base.experiment, "retrieve", dataclasses.asdict(params.retrieve),
                            data_paths=(prepared,)):
        flat = {k: v for k, v in tracking.flatten({s: result[s] for s in ("val", "test", "classifiers")
                                                    if s in result}).items()
                if isinstance(v, float) and np.isfinite(v)}
        mlflow.log_metrics({k.replace("=", "_"): v for k, v in flat.items()})
        for f in ("metrics.json", "plots", "grids"):
            if (out / f).is_dir():
                mlflow.log_artifacts(str(out / f), artifact_path=f)
            elif (out / f).exists():
                mlflow.log_artifact(str(out / f))
