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
    pass


@dataclass(frozen=True)
class MappingParams:
    pass


@dataclass(frozen=True)
class ValidateParams:
    pass


@dataclass(frozen=True)
class TrainParams:
    pass


@dataclass(frozen=True)
class RetrieveParams:
    pass


@dataclass(frozen=True)
class RegisterParams:
    pass


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
