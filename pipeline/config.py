"""Typed loader for ``params.yaml``.

Each stage reads only its own section plus ``base``. The loader builds frozen dataclasses and
rejects unknown keys and mistyped values with a message naming the offending key, so a typo in
``params.yaml`` fails at once instead of silently using a default.

To add a parameter: add a field (with its default) to the stage's dataclass below, then the key
to ``params.yaml`` and to the stage's ``params:`` list in ``dvc.yaml``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PROFILES = ("smoke", "default", "full")
Profile = Literal["smoke", "default", "full"]


class ConfigError(ValueError):
    """A bad ``params.yaml``: unknown key, wrong type or missing section."""


@dataclass(frozen=True)
class BaseParams:
    seed: int = 0
    profile: Profile = "default"
    release_dir: str = "data/synthetic"  # the release to use; a real one goes here too
    prepared_dir: str = "data/prepared"
    reports_dir: str = "reports"
    experiment: str = "track2-retrieval"  # MLflow experiment of every stage


@dataclass(frozen=True)
class SynthesizeParams:
    workers: int = 2


@dataclass(frozen=True)
class IngestParams:
    workers: int = 2  # processes reading image headers on big releases


@dataclass(frozen=True)
class MappingParams:
    out: str = "data/mapping/mapping.yaml"  # the mined rules merged with the overrides
    overrides: str = "mapping_overrides.yaml"  # curated additions/removals, in git
    max_ngram: int = 4  # longest candidate phrase, in words
    min_support: int = 2  # training captions a rule must cover
    min_precision: float = 1.0  # on the training pairs
    alpha: float = 0.001  # chance level: base_rate ** support must be below it
    absence_groups: tuple[str, ...] = ("gender",)  # groups whose no-bit value captions state (male)


@dataclass(frozen=True)
class ValidateParams:
    workers: int = 0  # image checks in parallel; 0 = all cores
    decode_fraction: float = 1.0  # share of images fully decoded (headers are read for all)
    min_width: int = 16
    min_height: int = 16
    max_width: int = 4096
    max_height: int = 4096
    min_pixel_std: float = 2.0  # below: a blank or one-colour image
    min_caption_chars: int = 5  # "A Bus." is a real vehicle caption
    max_caption_chars: int = 500
    min_class_examples: int = 1  # per class value in the training split
    max_quarantine_fraction: float = 0.01  # per label/text file
    mapping: str = "data/mapping/mapping.yaml"
    mapping_report: str = "reports/mapping.json"
    min_rules_per_value: int = 1  # rules every value a caption can state needs
    min_mapping_precision: float = 0.98
    min_mapping_stated_recall: float = 0.98
    max_drift_tvd: float = 0.25  # train->test total variation distance of vehicle colour/type mix
    max_caption_length_change: float = 0.25  # relative change of mean caption words


@dataclass(frozen=True)
class TrainParams:
    """Decoupled subtask training (pipeline/train, docs/training.md)."""

    backbones: list[str] = field(default_factory=lambda: ["tf_efficientnet_lite0", "mobilenetv2_100"])
    pretrained: bool = True
    weights: dict[str, str] = field(default_factory=dict)  # backbone -> local weights file (EVA, ConvNeXt)
    input_size: dict[str, list[int]] = field(default_factory=lambda: {
        "pedestrian": [96, 48], "vehicle": [96, 96], "router": [64, 64]})  # [H, W] per domain
    # "Train the last N blocks" per domain (int, "full" or "linear"); per-backbone overrides below.
    trainable: dict[str, int | str] = field(default_factory=lambda: {
        "pedestrian": 2, "vehicle": 1, "router": 1})
    trainable_by_backbone: dict[str, dict[str, int | str]] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=lambda: {"pedestrian": 6, "vehicle": 6, "router": 2})
    batch_size: int = 64
    eval_batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_frac: float = 0.1
    head_dropout: float = 0.2
    class_weight_power: float = 0.5  # 0: plain cross-entropy, 1: inverse class frequency
    crops: dict[str, str] = field(default_factory=lambda: {
        "hat": "top", "glasses": "top", "handbag": "middle", "bag": "middle",
        "holds_objects": "middle", "upper": "middle", "skirt": "bottom"})  # other groups: full
    crop_boxes: dict[str, list[float]] = field(default_factory=lambda: {
        "full": [0.0, 1.0, 0.0, 1.0], "top": [0.0, 0.35, 0.1, 0.9],
        "middle": [0.2, 0.75, 0.05, 0.95], "bottom": [0.45, 1.0, 0.0, 1.0]})  # [top, bottom, left, right]
    cache: Literal["memory", "disk", "off"] = "memory"
    cache_dir: str = ""  # where `disk` puts its memory maps (default: the system temp folder)
    multitask: bool = False  # one net, shared tail, all heads: the "no decoupling" ablation
    pseudo_label: bool = True
    pseudo_thresholds: dict[str, float] = field(default_factory=lambda: {
        "color": 0.9, "type": 0.9, "brand": 0.9})
    tta_flip: bool = True  # predict on the image and its mirror, average the probabilities
    train_flip: bool = False  # random flips in training (doubles the training rows' prefix cost)
    # Domains whose images are letterboxed, not stretched: the router then sees the shape (portrait
    # pedestrian vs. wide vehicle), which survives the train->test camera shift.
    keep_aspect: list[str] = field(default_factory=lambda: ["router"])
    eval_every_epoch: bool = True
    device: str = "auto"
    amp: bool = True  # CUDA only
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    workers: int = 2  # image-decoding threads
    log_models: bool = True
    keep_checkpoints: bool = False
    checkpoint_dir: str = "data/checkpoints"
    models_dir: str = "data/models"
    predictions_dir: str = "data/predictions"


@dataclass(frozen=True)
class RetrieveParams:
    # backbone -> ensemble weight; every member needs predictions for all three domains
    members: dict[str, float] = field(default_factory=lambda: {"tf_efficientnet_lite0": 1.0,
                                                                "mobilenetv2_100": 1.0})
    distance: Literal["published", "paper", "full"] = "paper"  # see pipeline/rank.py, docs/retrieval.md
    relevance: Literal["inclusion", "label"] = "inclusion"  # val relevance rule
    top_k: int = 10
    grid_samples: int = 4  # retrieval grids per split and domain
    predictions_dir: str = "data/predictions"
    mapping: str = "data/mapping/mapping.yaml"
    out_dir: str = "data/retrieval"


@dataclass(frozen=True)
class RegisterParams:
    model_name: str = "track2-ensemble"
    retrieval_dir: str = "data/retrieval"  # the retrieve stage's outputs (gallery, metrics)
    mapping: str = "data/mapping/mapping.yaml"  # bundled into the served model
    metric: str = "val_official_map10"  # version tag compared by promote (higher is better)
    margin: float = 0.0  # a challenger must beat production by more than this
    promote: bool = True  # end the pipeline by promoting, so a fresh run has a production model
    validation_summary: str = "reports/validation/summary.json"
    mapping_loader: str = "pipeline.mapping:load_mapping"  # module:function the served model calls
    report: str = "reports/register.json"  # the version registered and the promotion decision


@dataclass(frozen=True)
class Params:
    base: BaseParams = field(default_factory=BaseParams)
    synthesize: SynthesizeParams = field(default_factory=SynthesizeParams)
    ingest: IngestParams = field(default_factory=IngestParams)
    mapping: MappingParams = field(default_factory=MappingParams)
    validate: ValidateParams = field(default_factory=ValidateParams)
    train: TrainParams = field(default_factory=TrainParams)
    retrieve: RetrieveParams = field(default_factory=RetrieveParams)
    register: RegisterParams = field(default_factory=RegisterParams)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and build dataclasses; raise ConfigError."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in typing.get_args(tp):
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return _convert(value, arm, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: expected {_type_name(tp)}")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        key_tp, val_tp = typing.get_args(tp) or (Any, Any)
        return {_convert(k, key_tp, f"{where}.{k}"): _convert(v, val_tp, f"{where}.{k}")
                for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown key {key!r} in params; known keys"
                          f"{' of ' + where if where else ''}: {sorted(known)}")
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def parse_params(data: dict[str, Any]) -> Params:
    """Build :class:`Params` from an already-loaded mapping."""
    return _build(Params, data, "")


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and check ``params.yaml``; raise :class:`ConfigError` naming the bad key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found (run from the repository root or pass --params)")
    with path.open() as f:
        return parse_params(yaml.safe_load(f) or {})
