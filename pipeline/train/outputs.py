"""What the train stage writes: the subtask models and the per-split predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline import schema
from pipeline.train.data import DomainData

def save_subtask(out_dir: Path, res, backbone: str, trainable, size, norm) -> None:
    """The subtask model: tail + head weights plus what is needed to rebuild them."""
    import torch

    from pipeline.formats.atomic import atomic_path

    with atomic_path(out_dir / f"{res.name}.pt") as tmp:
        torch.save({"state_dict": {k: v.cpu() for k, v in res.net.state_dict().items()}, "backbone": backbone, "trainable": trainable,
                "groups": [g.name for g in res.groups], "classes": {g.name: list(g.values) for g in res.groups},
                    "crop": res.crop, "input_size": list(size), "mean": list(norm[0]), "std": list(norm[1])}, tmp)


def write_predictions(out_dir: Path, data: DomainData, preds: dict[str, dict[str, np.ndarray]]) -> None:
    """``{split}.parquet``: ``name`` + one ``group=value`` column per class, every image of the split."""
    import pandas as pd

    from pipeline.formats.atomic import atomic_path

    for split, by_group in preds.items():
        idx = data.index(split)
        cols: dict[str, Any] = {"name": data.names[idx]}
        for g in data.groups:
            p = by_group[g.name]
            for k, col in enumerate(schema.prob_columns([g])):
                cols[col] = p[:, k].astype(np.float32)
        with atomic_path(out_dir / f"{split}.parquet") as tmp:
            pd.DataFrame(cols).to_parquet(tmp, index=False)
