"""Rules and their files: :class:`Rule`, the mapping YAML (save/read) and the curated overrides.

The mapping file is small and diffable: a comment header, an optional ``meta`` block and one rule
a line in schema order. The overrides file (``mapping_overrides.yaml``, in git) has two optional
lists merged on top of the mined rules: ``drop`` and ``add`` (see :func:`apply_overrides`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline import schema
from pipeline.mapping.words import DOMAIN_OF_GROUP, PEDESTRIAN_GROUP_NAMES, VEHICLE_GROUP_NAMES, tokens

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    """``phrase`` (space-separated lower-case words) states ``group = value``."""

    phrase: str
    group: str
    value: str
    support: int | None = None
    precision: float | None = None
    source: str = "mined"  # mined | override

    def __post_init__(self) -> None:
        norm = " ".join(tokens(str(self.phrase)))
        if not norm:
            raise ValueError(f"rule for {self.group}={self.value} has an empty phrase {self.phrase!r}")
        object.__setattr__(self, "phrase", norm)
        schema.group(self.group).index(self.value)  # raises naming the bad group or value
        if self.group not in DOMAIN_OF_GROUP:
            raise ValueError(f"rule {self.phrase!r}: group {self.group!r} is not an attribute group")


# The file names its writer as it always has: the header is part of the mapping's bytes, which
# must stay identical across the package split (a DVC output, compared by hash).
_HEADER = """\
# Caption phrase -> attribute value rules (pipeline/mapping.py). One rule a line:
#   phrase: lower-case words (matched across spaces/punctuation), group/value: pipeline/schema.py
#   support: training captions with the phrase and the value; precision: support / captions with the
#   phrase and a label for the group. Overrides (mapping_overrides.yaml) have source: override.
"""


def save_mapping(rules: Sequence[Rule], path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write rules as a small, diffable YAML file (one rule per line, stable order)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    order = {name: i for i, name in enumerate(PEDESTRIAN_GROUP_NAMES + VEHICLE_GROUP_NAMES)}
    rules = sorted(rules, key=lambda r: (order[r.group], schema.group(r.group).index(r.value), r.phrase))
    lines = [_HEADER]
    if meta:
        lines.append(yaml.safe_dump({"meta": meta}, sort_keys=True, default_flow_style=False))
    lines.append("rules:\n")
    for r in rules:
        d = {k: v for k, v in asdict(r).items() if v is not None}
        if isinstance(d.get("precision"), float):
            d["precision"] = round(d["precision"], 4)
        lines.append("- " + yaml.safe_dump(d, sort_keys=False, default_flow_style=True, width=1000))
    from pipeline.formats.atomic import write_atomic

    write_atomic(path, "".join(lines))
    return path


def _rules_from(entries: Any, where: str) -> list[Rule]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ValueError(f"{where}: expected a list of rules, got {type(entries).__name__}")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not {"phrase", "group", "value"} <= set(e):
            raise ValueError(f"{where}[{i}]: a rule needs phrase, group and value, got {e!r}")
        unknown = set(e) - {"phrase", "group", "value", "support", "precision", "source"}
        if unknown:
            raise ValueError(f"{where}[{i}]: unknown keys {sorted(unknown)}")
        if isinstance(e["value"], bool):  # YAML 1.1 reads an unquoted yes/no as a boolean
            e = {**e, "value": "yes" if e["value"] else "no"}
        try:
            out.append(Rule(**e))
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(f"{where}[{i}] {e!r}: {str(err).strip(chr(34))}") from None
    return out


def read_rules(path: str | Path) -> list[Rule]:
    """The rules of a mapping file; raises ``ValueError`` naming the file and the bad rule."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mapping file {path} not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or "rules" not in data:
        raise ValueError(f"{path}: expected a mapping with a 'rules' list")
    return _rules_from(data["rules"], f"{path}: rules")


def apply_overrides(rules: Sequence[Rule], overrides_path: str | Path | None) -> list[Rule]:
    """Merge the curated overrides file on top of mined rules.

    The file has two optional lists: ``drop`` (entries with ``phrase`` and optionally ``group``:
    remove matching mined rules) and ``add`` (full rules: phrase, group, value). An added rule
    replaces a mined rule with the same phrase and group.
    """
    import yaml

    if overrides_path is None:
        return list(rules)
    path = Path(overrides_path)
    if not path.exists():
        raise FileNotFoundError(f"overrides file {path} not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or set(data) - {"add", "drop"}:
        raise ValueError(f"{path}: expected only the keys 'add' and 'drop'")
    drops = data.get("drop") or []
    if not isinstance(drops, list):
        raise ValueError(f"{path}: 'drop' must be a list")
    out = list(rules)
    for i, d in enumerate(drops):
        if not isinstance(d, dict) or "phrase" not in d or set(d) - {"phrase", "group"}:
            raise ValueError(f"{path}: drop[{i}] needs 'phrase' (and optionally 'group'), got {d!r}")
        phrase = " ".join(tokens(str(d["phrase"])))
        before = len(out)
        out = [r for r in out if not (r.phrase == phrase and d.get("group") in (None, r.group))]
        if len(out) == before:
            log.warning("%s: drop[%d] %r matched no rule", path, i, d)
    adds = [Rule(**{**asdict(r), "source": "override"})
            for r in _rules_from(data.get("add"), f"{path}: add")]
    added = {(r.phrase, r.group) for r in adds}
    return [r for r in out if (r.phrase, r.group) not in added] + adds
