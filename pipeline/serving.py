"""The served ensemble: an MLflow pyfunc model, captions in, ranked image names and distances out.

The model bundles everything it needs as artifacts - the caption mapping, the routed test gallery
(names, router decisions and the ensembled per-group probabilities, see
:class:`pipeline.rank.GalleryIndex`) and a small config (distance form, k) - so serving needs
numpy, pandas and the ``pipeline`` package (shipped with the model as code), not torch.

Input: a DataFrame with a ``caption`` column (the signature enforces it). Output: one row per caption
with ``caption``, ``domain`` (the parsed domain that routed it), ``image_names`` and
``distances`` (lists, nearest first). The ``top_k`` params overrides k per request.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

DEFAULT_LOADER = "pipeline.mapping:load_mapping"


def load_mapping_with(loader: str, path: str) -> Any:
    """Call ``module:function`` on the mapping file (the loader is configurable for tests)."""
    module, _, func = loader.partition(":")
    return getattr(importlib.import_module(module), func)(path)


def captions_of(model_input: Any) -> list[str]:
    """The captions of a request: a DataFrame with a ``caption`` column, a list, or a string."""
    if isinstance(model_input, pd.DataFrame):
        if "caption" not in model_input.columns:
            raise ValueError(f"expected a 'caption' column, got {list(model_input.columns)}")
        return [str(c) for c in model_input["caption"]]
    if isinstance(model_input, str):
        return [model_input]
    return [str(c) for c in model_input]


class EnsembleRetriever(mlflow.pyfunc.PythonModel):
    """Rank the bundled gallery for captions with the bundled mapping."""

    def load_context(self, context: Any) -> None:
        from pipeline.rank import GalleryIndex

        config = json.loads(Path(context.artifacts["config"]).read_text())
        self.form = config["distance"]
        self.k = int(config["top_k"])
        self.index = GalleryIndex.load(context.artifacts["gallery"])
        self.mapping = load_mapping_with(config.get("mapping_loader", DEFAULT_LOADER),
                                         context.artifacts["mapping"])

    # A DataFrame hint: MLflow infers no signature from it (the logged one rules) and stays quiet.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        """Rank for each caption; ``params={"top_k": n}`` overrides k."""
        from pipeline.rank import rank

        captions = captions_of(model_input)
        k = int((params or {}).get("top_k", self.k))
        parsed = self.mapping.parse_many(captions)
        r = rank(self.index, [(p.domain, p.attributes) for p in parsed], form=self.form, k=k)
        return pd.DataFrame({"caption": captions, "domain": r.domain,
                             "image_names": r.names, "distances": r.distances})


def write_artifacts(folder: Path, gallery: Path, mapping: Path, distance: str, top_k: int,
                    mapping_loader: str = DEFAULT_LOADER) -> dict[str, str]:
    """Write the model's config.json into ``folder``; return the artifacts dict for log_model
    (gallery and mapping by path: log_model copies them into the model)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.json"
    config.write_text(json.dumps({"distance": distance, "top_k": top_k, "mapping_loader": mapping_loader}))
    return {"gallery": str(gallery), "mapping": str(mapping), "config": str(config)}


def answer(artifacts: dict[str, str], captions: list[str]) -> pd.DataFrame:
    """What the model built from ``artifacts`` answers for ``captions`` (as served)."""
    model = EnsembleRetriever()
    context = type("Ctx", (), {"artifacts": artifacts})()
    model.load_context(context)
    return model.predict(context, pd.DataFrame({"caption": captions}))


def log_ensemble(name: str, artifacts: dict[str, str], example_captions: list[str],
                 code_paths: list[str] | None = None) -> Any:
    """Log the pyfunc in the active run with signature and input example; return its ModelInfo."""
    import numpy
    import yaml

    from mlflow.models import infer_signature

    model = EnsembleRetriever()
    # Build the signature from a real prediction so it matches what serving returns.
    context = type("Ctx", (), {"artifacts": artifacts})()
    model.load_context(context)
    example = pd.DataFrame({"caption": example_captions})
    signature = infer_signature(example, model.predict(context, example), params={"top_k": model.k})
    return mlflow.pyfunc.log_model(
        name=name, python_model=model, artifacts=artifacts, signature=signature,
        input_example=example, code_paths=code_paths,
        pip_requirements=[f"mlflow=={mlflow.__version__}", f"numpy=={numpy.__version__}",
                          f"pandas=={pd.__version__}", f"pyyaml=={yaml.__version__}"])
