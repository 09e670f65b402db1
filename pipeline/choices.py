"""The named choices of params (the one list of each), shared by the config and the code that acts
on them. Kept apart from that code so the typed config, which every stage loads, depends on no
stage's implementation: editing the ranker does not re-run ingest."""

from __future__ import annotations

from typing import Literal

#: Synthetic release sizes (pipeline/synth/release.py PROFILES); `full` is the real release's.
Profile = Literal["smoke", "default", "full"]
#: Keywords-only distances (pipeline/rank.py, docs/retrieval.md).
Distance = Literal["published", "paper", "full"]
#: Which gallery images count as relevant to a val query (pipeline/metrics.py).
Relevance = Literal["inclusion", "label"]
#: Where the frozen-prefix features live (pipeline/train/cache.py).
CacheMode = Literal["memory", "disk", "off"]
#: Which part of the image a subtask sees (train.crop_boxes).
Crop = Literal["full", "top", "middle", "bottom"]
#: Where training runs.
Device = Literal["auto", "cpu", "cuda"]
#: A dual-encoder tower's projection onto the joint space (pipeline/baseline; open_clip's
#: ``timm_proj`` / ``hf_proj_type``).
Projection = Literal["linear", "mlp"]
#: How the served ensemble answers a caption the mapping understands only in part (docs/retrieval.md).
Combine = Literal["fallback", "fusion"]
