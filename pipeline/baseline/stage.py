"""Stage ``baseline``: train the dual encoder, rank val and test by similarity, score as retrieve does.

Reads ingest's tables, the caption mapping (what a caption states: the relevance of val and the
positives of training, as in the retrieve stage), validate's gate and the release (its
``test/test_gt.txt`` scores test). Writes under ``BaselineIO.out``:

- ``model/clip.pt`` (config + weights, docs/baseline.md), ``model/vocab.json`` (the training
  captions' content words) and ``model/reference_text.npz`` (raw sentence embeddings of the
  training captions, with their domains) - with ``gallery_test.npz`` what the served ensemble's fallback bundles;
- ``gallery_val.npz``, ``gallery_test.npz`` (image embeddings), ``submission.json``,
  ``metrics.json`` (the retrieve stage's layout), ``plots/curves.csv`` (per epoch), ``plots/
  domain_metrics.{csv,png}`` and ``grids/``;
- ``BaselineIO.metrics``: the headline figures for DVC.

Tracked, the stage's MLflow run gets the epoch curves (``step=epoch``) and, with
``baseline.register_model``, the model is logged as a pyfunc (:mod:`pipeline.baseline.serve`),
registered as ``baseline.model_name`` with alias ``challenger`` and promoted by
:func:`pipeline.registry.promote`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import metrics, schema
from pipeline.config import Params

log = logging.getLogger(__name__)

#: The headline figures DVC compares (metrics.json beside them has them all).
HEADLINE = ("official_map10", "standard_map10", "hit1", "hit10")


@dataclass(frozen=True)
class BaselineIO:
    prepared: Path   # in: ingest's tables
    release: Path    # in: the release (test/test_gt.txt scores test, when present)
    mapping: Path    # in: the caption mapping (what a caption states)
    gate: Path       # in: validate's gate.json; no training on data that failed validation
    out: Path        # out: model/, galleries, submission, metrics, plots, grids
    metrics: Path | None = None  # out: the headline figures for DVC

    def artifacts(self) -> list[Path]:
        return [self.out / f for f in ("metrics.json", "plots", "grids")]


def check_gate(gate: Path) -> str:
    """``passed`` or raise: no training on data that failed (or skipped) validation."""
    if not gate.exists():
        raise FileNotFoundError(f"{gate} not found: run the validate stage first")
    status = json.loads(gate.read_text()).get("status")
    if status != "passed":
        raise ValueError(f"validation {status!r} in {gate}: fix the data before training the baseline")
    return status


def pick_device(setting: str) -> str:
    import torch

    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError("baseline.device is cuda but no GPU is available")
    return "cuda" if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()) else "cpu"


def model_config(params: Params) -> Any:
    from pipeline import backbones
    from pipeline.baseline.encoder import ModelConfig

    b = params.baseline
    cfg = backbones.data_config(b.backbone)
    return ModelConfig(b.backbone, b.embed_dim, tuple(b.input_size), b.keep_aspect, b.image_trainable,
                       b.image_proj,
                       b.text_proj, b.text_unlocked_layers, b.context_length, b.init_temperature,
                       tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bilinear"))


# --------------------------------------------------------------------------- scoring

def ranking_of(idx: np.ndarray, sims: np.ndarray, names: np.ndarray, domains: list[str]) -> Any:
    """A :class:`pipeline.rank.Ranking` (distance = 1 - cosine) of similarity top-k indices."""
    from pipeline.rank import Ranking

    return Ranking(list(domains), [names[row].tolist() for row in idx],
                   [[float(1.0 - s) for s in row] for row in sims])


def score_val(ranking: Any, vq: Any, parsed: list[Any], labels: Any, images: Any, gallery_names: np.ndarray,
              rule: str, k: int) -> tuple[list[set[str]], dict]:
    """Val relevance exactly as the retrieve stage judges it, and the metrics per true domain."""
    from pipeline.formats import label_dicts
    from pipeline.retrieve import val_relevance

    relevant, domains = val_relevance(vq, parsed, label_dicts(labels[labels["split"] == "val"]), gallery_names,
                                      dict(zip(images["name"], images["domain"])), rule)
    return relevant, metrics.metrics_by_domain(ranking.names, relevant, domains, k)


def score_test(ranked: list[list[str]], texts: list[str], domains: list[str], release: Path, k: int
               ) -> tuple[list[set[str]] | None, dict | None]:
    """Test metrics against the release's ground truth (per parsed domain, as retrieve), if it has one."""
    from pipeline.formats import read_gt

    gt_path = release / "test" / "test_gt.txt"
    if not gt_path.exists():
        log.warning("no %s: test metrics skipped (a real release has no ground truth)", gt_path)
        return None, None
    gt_texts, relevant = read_gt(gt_path)
    metrics.check_text_order(texts, gt_texts)
    return relevant, metrics.metrics_by_domain(ranked, relevant, domains, k)


# --------------------------------------------------------------------------- the stage

def run(params: Params, io: BaselineIO) -> dict[str, Any]:
    """Train the dual encoder on the training pairs; rank, score and write everything under ``io.out``."""
    import torch

    from pipeline import tracking
    from pipeline.baseline import data as D
    from pipeline.baseline.encoder import Gallery, Reference, top_k_similar
    from pipeline.baseline.fit import FitConfig, embed_images, fit
    from pipeline.baseline.model import build_clip, split_image_tower, text_from_pooled, trained_state
    from pipeline.baseline.text import encode_pooled, tokenize, tokenizer
    from pipeline.figures import write_domain_plots, write_grids
    from pipeline.formats import read_table
    from pipeline.mapping import load_mapping
    from pipeline.retrieve import submission
    from pipeline.stage import write_metrics
    from pipeline.train.cache import build_features

    b = params.baseline
    t_start, cpu_start = time.perf_counter(), time.process_time()
    status = check_gate(io.gate)
    torch.manual_seed(params.base.seed + b.seed)
    if b.threads:
        torch.set_num_threads(b.threads)
    device = pick_device(b.device)
    mapping = load_mapping(io.mapping)
    pairs = D.load_pairs(io.prepared, mapping, "train")
    queries = read_table(io.prepared, "queries").sort_values(["split", "query_id"])
    labels, images = read_table(io.prepared, "labels"), read_table(io.prepared, "images")
    galleries = {s: D.gallery(io.prepared, s) for s in schema.EVAL_SPLITS}
    qs = {s: queries[queries["split"] == s].reset_index(drop=True) for s in schema.EVAL_SPLITS}
    parsed = {s: mapping.parse_many(q["text"].tolist()) for s, q in qs.items()}

    cfg = model_config(params)
    clip = build_clip(cfg, pretrained=b.pretrained).to(device)
    prefix, image_tail = split_image_tower(clip, b.image_trainable)
    t_build = time.perf_counter() - t_start

    # One image list: training pairs, then each gallery; the frozen prefix runs once per image.
    offsets, paths = {"train": 0}, list(pairs.paths)
    for s in schema.EVAL_SPLITS:
        offsets[s] = len(paths)
        paths += galleries[s]["path"].tolist()
    flip_rows = np.concatenate([np.zeros(0, np.int64)] + [np.arange(len(pairs))] * b.train_flip +
                               [np.arange(len(pairs), len(paths))] * b.tta_flip).astype(np.int64)
    source = build_features("memory", prefix, paths, {"full": (0.0, 1.0, 0.0, 1.0)}, cfg.input_size,
                            cfg.mean, cfg.std, interpolation=cfg.interpolation, device=device,
                            batch_size=b.cache_batch_size, workers=b.workers, flip_rows=flip_rows,
                            keep_aspect=b.keep_aspect)
    t_images = time.perf_counter() - t_start - t_build

    # Text: every distinct caption through MiniLM once (the frozen transformer's pooled features).
    tok = tokenizer(b.context_length)
    texts = list(dict.fromkeys([*pairs.captions.tolist(), *qs["val"]["text"], *qs["test"]["text"]]))
    where = {t: i for i, t in enumerate(texts)}
    pooled = torch.from_numpy(encode_pooled(clip.text, tok, texts, b.text_batch_size, device)).to(device)
    train_text = torch.as_tensor([where[t] for t in pairs.captions])
    t_text = time.perf_counter() - t_start - t_build - t_images

    def text_embed(index: torch.Tensor) -> torch.Tensor:
        if b.text_unlocked_layers == 0:
            return text_from_pooled(clip, pooled[train_text[index].to(device)])
        return clip.text(tokenize(tok, [pairs.captions[i] for i in index.tolist()]).to(device))

    def embed_texts(split: str) -> np.ndarray:
        with torch.no_grad():
            if b.text_unlocked_layers == 0:
                z = text_from_pooled(clip, pooled[[where[t] for t in qs[split]["text"]]])
            else:
                z = torch.cat([clip.text(tokenize(tok, qs[split]["text"].iloc[s:s + 128].tolist()).to(device))
                               for s in range(0, len(qs[split]), 128)])
            return torch.nn.functional.normalize(z.float(), dim=-1).cpu().numpy()

    def gallery_rows(split: str) -> np.ndarray:
        return np.arange(offsets[split], offsets[split] + len(galleries[split]))

    def rank_split(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        emb = embed_images(image_tail, source, gallery_rows(split), b.cache_batch_size, tta=b.tta_flip)
        idx, sims = top_k_similar(embed_texts(split), emb, b.top_k)
        return emb, idx, sims

    run_ = tracking.active_run()

    def evaluate(epoch: int) -> dict[str, float]:
        if not b.eval_every_epoch:
            return {}
        _, idx, sims = rank_split("val")
        ranking = ranking_of(idx, sims, galleries["val"]["name"].to_numpy(str), [p.domain for p in parsed["val"]])
        _, scores = score_val(ranking, qs["val"], parsed["val"], labels, images,
                              galleries["val"]["name"].to_numpy(str), b.relevance, b.top_k)
        return {"val_official_map10": scores["all"]["official_map10"],
                "val_standard_map10": scores["all"]["standard_map10"]}

    def on_epoch(epoch: int, row: dict[str, float]) -> None:
        if run_ is not None:
            import mlflow

            mlflow.log_metrics({f"epoch_{k}": v for k, v in row.items() if k != "epoch"}, step=epoch)

    fit_cfg = FitConfig(b.epochs, b.batch_size, b.lr, b.weight_decay, b.warmup_frac, params.base.seed + b.seed,
                        b.train_flip)
    train_rows = np.arange(len(pairs))
    history = fit(clip, image_tail, source, train_rows, text_embed, pairs, fit_cfg, evaluate, on_epoch)
    t_fit = time.perf_counter() - t_start - t_build - t_images - t_text

    # Domain of each gallery image by the nearest training-domain centroid of the image embeddings
    # (the baseline's own router; the served ensemble uses the decoupled router instead).
    train_emb = embed_images(image_tail, source, train_rows, b.cache_batch_size)
    present = [d for d in schema.DOMAINS if (pairs.domain == D.DOMAIN_ID[d]).any()]
    centroids = np.stack([train_emb[pairs.domain == D.DOMAIN_ID[d]].mean(0) for d in present])

    io.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(io.out / "grids", ignore_errors=True)
    (io.out / "plots").mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    splits: dict[str, tuple[Any, list[set[str]] | None]] = {}
    sub = None
    for split in schema.EVAL_SPLITS:
        emb, idx, sims = rank_split(split)
        names = galleries[split]["name"].to_numpy(str)
        dom = np.array(present)[np.argmax(emb @ centroids.T, axis=1)] if len(emb) else np.array([], str)
        Gallery(names, emb, dom).save(io.out / f"gallery_{split}.npz")
        ranking = ranking_of(idx, sims, names, [p.domain for p in parsed[split]])
        if split == "val":
            relevant, scores = score_val(ranking, qs[split], parsed[split], labels, images, names,
                                         b.relevance, b.top_k)
        else:
            sub = submission(qs[split]["text"].tolist(), ranking, names.tolist(), b.top_k)
            ranked = [r["image_names"] for r in sub["results"]]
            relevant, scores = score_test(ranked, qs[split]["text"].tolist(), ranking.domain, io.release, b.top_k)
        splits[split] = (ranking, relevant)
        if scores is not None:
            result[split] = scores
    t_eval = time.perf_counter() - t_start - t_build - t_images - t_text - t_fit

    from pipeline.formats.atomic import atomic_path, write_atomic

    model_dir = io.out / "model"
    with atomic_path(model_dir / "clip.pt") as tmp:
        torch.save({"config": cfg.to_dict(), "state": trained_state(clip, cfg)}, tmp)
    write_atomic(model_dir / "vocab.json", json.dumps(D.content_vocabulary(pairs.captions.tolist())))
    first = np.unique(train_text.numpy(), return_index=True)[1]  # each distinct training caption once
    raw = torch.nn.functional.normalize(pooled[train_text[first]].float(), dim=-1).cpu().numpy()
    Reference(raw, np.array(schema.DOMAINS)[pairs.domain[first]]).save(model_dir / "reference_text.npz")
    write_atomic(model_dir / "fallback.json", json.dumps(
        {"combine": b.combine, "fusion_weight": b.fusion_weight, "min_similarity": b.min_similarity,
         "reader": {"min_cosine": b.reader_min_cosine, "min_margin": b.reader_min_margin} if b.reader else None},
        indent=2))
    write_atomic(io.out / "submission.json", json.dumps(sub, indent=1))
    write_curves(history, io.out / "plots" / "curves.csv")
    if result:
        write_domain_plots(result, io.out / "plots")
    paths_of = dict(zip(images["name"], images["path"]))
    rng = np.random.default_rng(params.base.seed)
    for split, (ranking, relevant) in splits.items():
        write_grids(split, qs[split], ranking, relevant, paths_of, io.out / "grids", b.grid_samples, rng)
    source.close()

    times = {"time_s": time.perf_counter() - t_start, "cpu_s": time.process_time() - cpu_start,
             "build_s": t_build, "image_cache_s": t_images, "text_cache_s": t_text, "fit_s": t_fit,
             "eval_s": t_eval}
    result["training"] = {"n_pairs": len(pairs), "n_captions_encoded": len(texts), "epochs": b.epochs,
                          "final_loss": history[-1]["loss"], "temperature": history[-1]["temperature"],
                          **{k: round(v, 2) for k, v in times.items()}}
    write_atomic(io.out / "metrics.json", json.dumps(result, indent=2))
    report = dict(result)
    if run_ is not None and b.register_model:
        from pipeline.baseline.serve import register

        report["registry"] = register(params, io, result, status, qs["test"]["text"].tolist())
    write_metrics(io.metrics, headline(result))
    for split in schema.EVAL_SPLITS:
        if split in result:
            log.info("baseline %s official mAP@10 %.4f (standard %.4f)", split,
                     result[split]["all"]["official_map10"], result[split]["all"]["standard_map10"])
    log.info("baseline done in %.1f s (%s)", times["time_s"], ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    return report


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """``{split: {domain: {HEADLINE...}}, time_s, cpu_s}`` of the stage's metrics."""
    out: dict[str, Any] = {s: {d: {k: m[k] for k in HEADLINE} for d, m in result[s].items()}
                           for s in schema.EVAL_SPLITS if s in result}
    out["time_s"] = result["training"]["time_s"]
    out["cpu_s"] = result["training"]["cpu_s"]
    return out


def write_curves(history: list[dict[str, float]], path: Path) -> None:
    """Per-epoch loss, temperature and val figures: the CSV and its picture (``.png`` beside it)."""
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.DataFrame(history)
    table.to_csv(path, index=False)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(table["epoch"], table["loss"], "o-", color="tab:red", label="train loss")
    ax.set_xlabel("epoch"); ax.set_ylabel("multi-positive InfoNCE")
    if "val_official_map10" in table:
        right = ax.twinx()
        right.plot(table["epoch"], table["val_official_map10"], "s-", color="tab:blue",
                   label="val official mAP@10")
        right.set_ylabel("val official mAP@10"); right.set_ylim(0, 1)
        right.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8); ax.set_title("Dual-encoder baseline training")
    fig.tight_layout(); fig.savefig(path.with_suffix(".png"), dpi=100); plt.close(fig)
