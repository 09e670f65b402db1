"""The typed ``params.yaml``: one pydantic model per section, checked when it is loaded.

``params.yaml`` is the one place every value is set: the models below say what each key may hold
(types, ranges, the allowed names) but carry no defaults, so a key missing from the file is an
error naming it, and so is an unknown key, a wrong type or a value out of range.

Paths are not params: ``dvc.yaml`` names every file a stage reads or writes, on the stage's
command line, under the roots of ``base`` (``*_dir``). A section may carry a ``profiles`` block
of values that replace its own when ``base.profile`` matches (the smoke profile's thresholds).

To add a parameter: add the field (with its type and range) to the section's model, the key with
its value and a comment to ``params.yaml``; ``dvc.yaml`` already depends on the whole section.
"""

from __future__ import annotations

import copy
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline import schema
from pipeline.choices import CacheMode, Combine, Crop, Device, Distance, Profile, Projection, Relevance

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]
#: "Train the last N units" (0 = frozen, heads only), or every unit, or a linear probe.
Trainable = NonNegInt | Literal["full", "linear"]


class ConfigError(ValueError):
    """A bad ``params.yaml``: syntax, unknown or missing key, wrong type or value out of range."""


class Section(BaseModel):
    """A params section: strict types (YAML ``1`` is not ``true``), no unknown keys, read-only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class BaseParams(Section):
    seed: NonNegInt
    profile: Profile
    experiment: Annotated[str, Field(min_length=1)]  # the MLflow experiment of every stage
    # The roots under which dvc.yaml names every file.
    release_dir: str
    prepared_dir: str
    mapping_dir: str
    models_dir: str
    predictions_dir: str
    retrieval_dir: str
    checkpoint_dir: str
    reports_dir: str
    baseline_dir: str


class SynthesizeParams(Section):
    workers: PosInt


class IngestParams(Section):
    workers: PosInt


class MappingParams(Section):
    max_ngram: PosInt
    min_support: PosInt
    min_precision: Fraction
    alpha: Annotated[float, Field(gt=0.0, le=1.0)]


class ValidateParams(Section):
    workers: NonNegInt
    decode_fraction: Fraction
    min_width: PosInt
    min_height: PosInt
    max_width: PosInt
    max_height: PosInt
    min_pixel_std: Annotated[float, Field(ge=0.0)]
    min_caption_chars: NonNegInt
    max_caption_chars: PosInt
    min_class_examples: NonNegInt
    max_quarantine_fraction: Fraction
    min_rules_per_value: NonNegInt
    min_mapping_precision: Fraction
    min_mapping_stated_recall: Fraction
    max_drift_tvd: Fraction
    max_caption_length_change: Annotated[float, Field(ge=0.0)]

    @model_validator(mode="after")
    def _ordered_bounds(self) -> ValidateParams:
        for low, high in (("min_width", "max_width"), ("min_height", "max_height"),
                          ("min_caption_chars", "max_caption_chars")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) is above {high} ({getattr(self, high)})")
        return self


CropBox = Annotated[list[Fraction], Field(min_length=4, max_length=4)]  # [top, bottom, left, right]


class TrainParams(Section):
    backbones: Annotated[list[str], Field(min_length=1)]
    pretrained: bool
    weights: dict[str, str]
    input_size: dict[schema.TrainingDomain, Annotated[list[PosInt], Field(min_length=2, max_length=2)]]
    trainable: dict[schema.TrainingDomain, Trainable]
    trainable_by_backbone: dict[str, dict[schema.TrainingDomain, Trainable]]
    epochs: dict[schema.TrainingDomain, PosInt]
    batch_size: PosInt
    cache_batch_size: PosInt
    lr: Annotated[float, Field(gt=0.0)]
    weight_decay: Annotated[float, Field(ge=0.0)]
    warmup_frac: Fraction
    head_dropout: Annotated[float, Field(ge=0.0, lt=1.0)]
    class_weight_power: Annotated[float, Field(ge=0.0)]
    crops: dict[str, Crop]
    crop_boxes: dict[Crop, CropBox]
    cache: CacheMode
    cache_dir: str
    multitask: bool
    batched_tails: bool  # subtask tails stacked and trained in one pass (pipeline/train/batched.py)
    pseudo_label: bool
    pseudo_thresholds: dict[str, Fraction]
    tta_flip: bool
    train_flip: bool
    keep_aspect: list[schema.TrainingDomain]
    eval_every_epoch: bool
    device: Device
    amp: bool
    threads: NonNegInt
    nproc: PosInt  # DDP ranks on this machine (pipeline/train/distributed.py); torchrun's world wins
    workers: PosInt
    log_models: bool
    keep_checkpoints: bool
    seed: NonNegInt  # offset to base.seed for the training draws (ablation seeds keep the data)

    @model_validator(mode="after")
    def _consistent(self) -> TrainParams:
        for key in ("input_size", "trainable", "epochs"):
            missing = [d for d in schema.TRAINING_DOMAINS if d not in getattr(self, key)]
            if missing:
                raise ValueError(f"{key}: no entry for {missing}")
        unknown = sorted(set(self.crops) - set(schema.GROUPS))
        if unknown:
            raise ValueError(f"crops: unknown groups {unknown}; known: {sorted(schema.GROUPS)}")
        undefined = sorted({c for c in self.crops.values()} - set(self.crop_boxes))
        if undefined:
            raise ValueError(f"crops use {undefined}, which crop_boxes does not define")
        for name, (top, bottom, left, right) in self.crop_boxes.items():
            if not (top < bottom and left < right):
                raise ValueError(f"crop_boxes.{name}: need top < bottom and left < right, got "
                                 f"{[top, bottom, left, right]}")
        return self


class RetrieveParams(Section):
    members: Annotated[dict[str, Annotated[float, Field(gt=0.0)]], Field(min_length=1)]  # backbone -> weight
    distance: Distance
    relevance: Relevance
    top_k: PosInt
    grid_samples: NonNegInt


class RegisterParams(Section):
    model_name: Annotated[str, Field(min_length=1)]
    metric: Annotated[str, Field(min_length=1)]
    margin: Annotated[float, Field(ge=0.0)]
    promote: bool
    mapping_loader: Annotated[str, Field(pattern=r"^[\w.]+:\w+$")]  # module:function


class BaselineParams(Section):
    """The CLIP-style dual encoder (stage ``baseline``, pipeline/baseline/) and its served fallback."""

    backbone: str
    pretrained: bool
    input_size: Annotated[list[PosInt], Field(min_length=2, max_length=2)]
    keep_aspect: bool
    image_trainable: Trainable
    image_proj: Projection
    text_unlocked_layers: NonNegInt
    text_proj: Projection
    context_length: Annotated[int, Field(ge=8, le=512)]
    embed_dim: PosInt
    epochs: PosInt
    batch_size: Annotated[int, Field(ge=2)]
    lr: Annotated[float, Field(gt=0.0)]
    weight_decay: Annotated[float, Field(ge=0.0)]
    warmup_frac: Fraction
    init_temperature: Annotated[float, Field(gt=0.0, le=1.0)]
    train_flip: bool
    tta_flip: bool
    cache_batch_size: PosInt
    text_batch_size: PosInt
    eval_every_epoch: bool
    device: Device
    threads: NonNegInt
    workers: PosInt
    relevance: Relevance
    top_k: PosInt
    grid_samples: NonNegInt
    combine: Combine
    fusion_weight: Fraction
    min_similarity: Annotated[float, Field(ge=-1.0, le=1.0)]
    reader: bool
    reader_min_cosine: Annotated[float, Field(ge=-1.0, le=1.0)]
    reader_min_margin: Annotated[float, Field(ge=0.0, le=2.0)]
    register_model: bool
    model_name: Annotated[str, Field(min_length=1)]
    metric: Annotated[str, Field(min_length=1)]
    margin: Annotated[float, Field(ge=0.0)]
    promote: bool
    seed: NonNegInt  # offset to base.seed for the training draws, as train.seed


@dataclass(frozen=True)
class Params:
    """Every section, checked. A plain dataclass: section names such as ``validate`` would shadow
    pydantic's own methods on a model."""

    base: BaseParams
    synthesize: SynthesizeParams
    ingest: IngestParams
    mapping: MappingParams
    validate: ValidateParams
    train: TrainParams
    retrieve: RetrieveParams
    register: RegisterParams
    baseline: BaselineParams

    def section(self, name: str) -> dict[str, Any]:
        """A section as plain data (what a stage's MLflow run logs as params)."""
        return getattr(self, name).model_dump(mode="json")


SECTIONS: dict[str, type[Section]] = {f.name: typing.get_type_hints(Params)[f.name] for f in fields(Params)}


def _key(section: str, error: dict[str, Any]) -> str:
    # Union arms add their own names to the location ("constrained-int", "literal['full','linear']").
    parts = [section] + [str(p) for p in error["loc"]
                         if not (isinstance(p, str) and (p.startswith(("constrained-", "literal[", "function-"))
                                                        or p in ("int", "str", "float", "bool")))]
    return ".".join(parts)


def _section_errors(section: str, model: type[Section], error: ValidationError) -> list[str]:
    """The errors of one section as lines naming the key; a union's arms become one line."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for err in error.errors():
        by_key.setdefault(_key(section, err), []).append(err)
    lines = []
    for key, errs in by_key.items():
        kind = errs[0]["type"]
        if kind == "extra_forbidden":
            lines.append(f"unknown key {key!r} in params; known keys of {section}: {sorted(model.model_fields)}")
        elif kind == "missing":
            lines.append(f"missing key {key!r} in params (params.yaml sets every value)")
        else:
            got = errs[0].get("input")
            shown = "" if isinstance(got, (dict, Section)) else f" (got {got!r})"
            msgs = dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in errs)
            lines.append(f"{key}: {' or '.join(msgs)}{shown}")
    return lines


def _apply_profiles(data: dict[str, Any]) -> dict[str, Any]:
    """Replace each section's values with its ``profiles[base.profile]`` block, then drop the blocks."""
    data = copy.deepcopy(data)
    profile = (data.get("base") or {}).get("profile")
    for name, section in data.items():
        if not isinstance(section, dict) or "profiles" not in section:
            continue
        blocks = section.pop("profiles") or {}
        if not isinstance(blocks, dict):
            raise ConfigError(f"{name}.profiles: expected a mapping of profile -> values")
        for prof, values in blocks.items():
            if prof not in Profile.__args__:
                raise ConfigError(f"{name}.profiles: unknown profile {prof!r}; known: {list(Profile.__args__)}")
            unknown = sorted(set(values or {}) - set(section))
            if unknown:
                raise ConfigError(f"unknown key '{name}.profiles.{prof}.{unknown[0]}' in params: a profile "
                                  f"replaces keys of {name}, so it must be one of them")
        section.update(blocks.get(profile) or {})
    return data


def parse_params(data: dict[str, Any]) -> Params:
    """Check a loaded params mapping (profile blocks applied); raise :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"params must be a mapping of sections, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in params; known keys: {sorted(SECTIONS)}")
    data = _apply_profiles(data)
    sections, lines = {}, []
    for name, model in SECTIONS.items():
        if not isinstance(data.get(name), dict):
            lines.append(f"missing section {name!r} in params" if data.get(name) is None
                         else f"{name}: expected a mapping, got {data[name]!r}")
            continue
        try:
            sections[name] = model.model_validate(data[name])
        except ValidationError as e:
            lines += _section_errors(name, model, e)
    if lines:
        lines.sort(key=lambda line: line.startswith("missing"))  # a typo first: it explains the "missing" key
        more = f" (and {len(lines) - 1} more: {'; '.join(lines[1:4])})" if len(lines) > 1 else ""
        raise ConfigError(lines[0] + more)
    return Params(**sections)


def merge(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``overrides`` merged in, nested mappings key by key (a new dict)."""
    out = copy.deepcopy(data)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """``params.yaml`` as data; a missing file or a YAML syntax error is one line naming where."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found (run from the repository root or pass --params)")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: YAML syntax error: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: YAML syntax error: {e}") from None


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Load and check ``params.yaml`` (plus ``overrides``, merged in); raise :class:`ConfigError`."""
    return parse_params(merge(read_yaml(path), overrides or {}))
