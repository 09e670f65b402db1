"""The attribute schema: the one source of truth for bit order, groups and vocabularies.

Every other module imports names from here. The names are the public contract (parse output,
model names, reports), so change them only with a migration.

Pedestrians carry the 21 PA-100K bits; as single-label subtasks they form 12 groups
(2,3,3,2,2,2,3,2,2,5,2,2 classes = 30 dims). Vehicles carry colour, type and brand, each
possibly missing in train/val (labels there are "colour Brand." or "Type.").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence, get_args

import numpy as np

#: What a caption describes and what a gallery image is.
Domain = Literal["pedestrian", "vehicle"]
DOMAINS: tuple[str, ...] = get_args(Domain)
#: What the train stage trains: the two attribute domains plus the router that tells them apart.
TrainingDomain = Literal["pedestrian", "vehicle", "router"]
TRAINING_DOMAINS: tuple[str, ...] = get_args(TrainingDomain)
#: The release's splits, and the two that are ranked and scored.
SPLITS: tuple[str, ...] = ("train", "val", "test")
EVAL_SPLITS: tuple[str, ...] = ("val", "test")

#: The 21 pedestrian bits in PA-100K order, as they appear in label files.
PEDESTRIAN_BITS: tuple[str, ...] = (
    "Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses",
    "HandBag", "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve",
    "UpperStride", "UpperLogo", "UpperPlaid", "UpperSplice", "LongCoat", "Skirt&Dress",
)
N_BITS = len(PEDESTRIAN_BITS)
BIT_INDEX: dict[str, int] = {name: i for i, name in enumerate(PEDESTRIAN_BITS)}


@dataclass(frozen=True)
class Group:
    """A single-label attribute group.

    ``bits[k]`` is the bit that encodes value ``values[k]``, or ``None`` for the value that
    means "none of the group's bits is set" (``male``, ``no``, ``none``).
    """

    name: str
    values: tuple[str, ...]
    bits: tuple[str | None, ...]

    @property
    def n_classes(self) -> int:
        return len(self.values)

    def index(self, value: str) -> int:
        """Class index of ``value``; raises ``KeyError`` naming the group on an unknown value."""
        try:
            return self.values.index(value)
        except ValueError:
            raise KeyError(f"unknown value {value!r} for group {self.name!r}; "
                           f"expected one of {list(self.values)}") from None


def _yes_no(name: str, bit: str) -> Group:
    return Group(name, ("yes", "no"), (bit, None))


#: The 12 pedestrian groups in subtask order.
PEDESTRIAN_GROUPS: tuple[Group, ...] = (
    Group("gender", ("female", "male"), ("Female", None)),
    Group("age", ("over60", "18to60", "under18"), ("AgeOver60", "Age18-60", "AgeLess18")),
    Group("orientation", ("front", "side", "back"), ("Front", "Side", "Back")),
    _yes_no("hat", "Hat"),
    _yes_no("glasses", "Glasses"),
    _yes_no("handbag", "HandBag"),
    Group("bag", ("shoulder", "backpack", "none"), ("ShoulderBag", "Backpack", None)),
    _yes_no("holds_objects", "HoldObjectsInFront"),
    Group("sleeve", ("short", "long"), ("ShortSleeve", "LongSleeve")),
    Group("upper", ("stripe", "logo", "plaid", "splice", "none"),
          ("UpperStride", "UpperLogo", "UpperPlaid", "UpperSplice", None)),
    _yes_no("long_coat", "LongCoat"),
    _yes_no("skirt", "Skirt&Dress"),
)

# Vehicle vocabulary, spelled exactly as in the release's vehicle_vocab.json.
VEHICLE_COLORS: tuple[str, ...] = (
    "black", "blue", "brown", "green", "grey", "orange", "pink", "purple", "red", "white", "yellow",
)
VEHICLE_TYPES: tuple[str, ...] = ("Bus", "Microbus", "Minivan", "SUV", "Sedan", "Truck")
VEHICLE_BRANDS: tuple[str, ...] = (
    "Audi", "BAOJUN", "BESTUNE", "BMW", "BYD", "Balong Heavy Truck", "Bentley", "Benz", "Buick",
    "Cadillac", "Chana", "Chery", "Chevrolet", "China-Moto", "Citroen", "Dongfeng", "FAW",
    "FORLAND", "FOTON", "Ford", "Geely", "Golden Dragon", "GreatWall", "HAFEI", "Haima", "Honda",
    "Hongyan", "Hyundai", "Infiniti", "Isuzu", "Iveco", "JAC", "JMC", "Jeep", "Jinbei",
    "KINGLONG", "Karma", "Kia", "LEOPAARD", "Landrover", "Lexus", "Luxgen", "MORRIS-GARAGE",
    "Mazda", "Mini", "Mitsubishi", "Nissan", "OPEL", "PEUGEOT", "Porsche", "ROEWE", "SGMW",
    "SKODA", "Shacman", "Shuanghuan", "Soueast", "Style", "Subaru", "Suzuki", "Toyota",
    "Volkswagen", "Volvo", "XIALI", "Yutong", "ZXAUTO",
)

#: The 3 vehicle groups in subtask order (no bits: vehicle labels are phrases).
VEHICLE_GROUPS: tuple[Group, ...] = (
    Group("color", VEHICLE_COLORS, (None,) * len(VEHICLE_COLORS)),
    Group("type", VEHICLE_TYPES, (None,) * len(VEHICLE_TYPES)),
    Group("brand", VEHICLE_BRANDS, (None,) * len(VEHICLE_BRANDS)),
)

#: The router subtask: which domain an image belongs to.
ROUTER_GROUP = Group("domain", DOMAINS, (None, None))

GROUPS_BY_DOMAIN: dict[str, tuple[Group, ...]] = {
    "pedestrian": PEDESTRIAN_GROUPS,
    "vehicle": VEHICLE_GROUPS,
}
GROUPS: dict[str, Group] = {g.name: g for g in PEDESTRIAN_GROUPS + VEHICLE_GROUPS + (ROUTER_GROUP,)}


def group(name: str) -> Group:
    """Look a group up by name, failing with the list of known groups."""
    try:
        return GROUPS[name]
    except KeyError:
        raise KeyError(f"unknown attribute group {name!r}; known: {sorted(GROUPS)}") from None


def prob_columns(groups: Sequence[Group]) -> list[str]:
    """Column names ``group=value`` for a flat probability vector over ``groups``."""
    return [f"{g.name}={v}" for g in groups for v in g.values]


# --------------------------------------------------------------------------- pedestrian bits

def parse_bits(text: str) -> np.ndarray:
    """Parse a label field such as ``"1,0,1,..."`` into a (21,) int8 array.

    Raises ``ValueError`` with the reason on a wrong length or a value other than 0/1.
    """
    parts = [p.strip() for p in text.strip().split(",")]
    if len(parts) != N_BITS:
        raise ValueError(f"expected {N_BITS} comma-separated bits, got {len(parts)}")
    bad = [p for p in parts if p not in ("0", "1")]
    if bad:
        raise ValueError(f"bits must be 0 or 1, got {bad[0]!r}")
    return np.array([int(p) for p in parts], dtype=np.int8)


def format_bits(bits: Sequence[int]) -> str:
    """Inverse of :func:`parse_bits`."""
    return ",".join(str(int(b)) for b in bits)


def constraint_violations(bits: Sequence[int]) -> list[str]:
    """The constraints that ``bits`` break (empty when valid), as readable reasons."""
    b = {name: int(bits[i]) for i, name in enumerate(PEDESTRIAN_BITS)}
    reasons = []
    for what, names in (("age", ("AgeOver60", "Age18-60", "AgeLess18")),
                        ("orientation", ("Front", "Side", "Back")),
                        ("sleeve", ("ShortSleeve", "LongSleeve"))):
        n = sum(b[x] for x in names)
        if n != 1:
            reasons.append(f"exactly one {what} bit expected, got {n}")
    if b["ShoulderBag"] and b["Backpack"]:
        reasons.append("shoulder bag and backpack both set")
    n_upper = sum(b[x] for x in ("UpperStride", "UpperLogo", "UpperPlaid", "UpperSplice"))
    if n_upper > 1:
        reasons.append(f"at most one upper pattern expected, got {n_upper}")
    return reasons


def bits_to_groups(bits: Sequence[int]) -> dict[str, int]:
    """Class index per pedestrian group for one valid 21-bit vector."""
    problems = constraint_violations(bits)
    if problems:
        raise ValueError("; ".join(problems))
    return dict(zip((g.name for g in PEDESTRIAN_GROUPS), bits_matrix_to_groups(np.asarray(bits)[None])[0]))


def bits_matrix_to_groups(bits: np.ndarray) -> np.ndarray:
    """Vectorised: (N, 21) bits -> (N, 12) class indices. Assumes valid rows."""
    bits = np.asarray(bits)
    out = np.empty((bits.shape[0], len(PEDESTRIAN_GROUPS)), dtype=np.int8)
    for j, g in enumerate(PEDESTRIAN_GROUPS):
        none_index = g.bits.index(None) if None in g.bits else None
        col = np.full(bits.shape[0], -1 if none_index is None else none_index, dtype=np.int8)
        for k, bit in enumerate(g.bits):
            if bit is not None:
                col[bits[:, BIT_INDEX[bit]] == 1] = k
        out[:, j] = col
    return out


def groups_to_bits(indices: Mapping[str, int | str]) -> np.ndarray:
    """Class index (or value name) per pedestrian group -> (21,) int8 bits."""
    bits = np.zeros(N_BITS, dtype=np.int8)
    for g in PEDESTRIAN_GROUPS:
        v = indices[g.name]
        k = g.index(v) if isinstance(v, str) else int(v)
        if not 0 <= k < g.n_classes:
            raise ValueError(f"class index {k} out of range for group {g.name!r}")
        if g.bits[k] is not None:
            bits[BIT_INDEX[g.bits[k]]] = 1
    return bits


def groups_to_values(indices: Mapping[str, int]) -> dict[str, str]:
    """Class indices -> value names, e.g. ``{"gender": 0}`` -> ``{"gender": "female"}``."""
    return {name: group(name).values[int(k)] for name, k in indices.items()}


# --------------------------------------------------------------------------- vehicle phrases

_BRANDS_LONGEST_FIRST = sorted(VEHICLE_BRANDS, key=len, reverse=True)


def parse_vehicle_phrase(phrase: str) -> dict[str, str]:
    """Parse a vehicle attribute field into ``{color?, brand?, type?}``.

    Accepts the label forms ``"white Audi."``, ``"Sedan."``, ``"Hongyan."``,
    ``"Balong Heavy Truck."`` and the full test form ``"grey Chery Sedan."``. Brands are matched
    longest first, so "Balong Heavy Truck" is a brand, not a type. Raises ``ValueError`` naming
    the unknown word when the phrase is outside the vocabulary.
    """
    rest = phrase.strip()
    if rest.endswith("."):
        rest = rest[:-1].strip()
    if not rest:
        raise ValueError("empty vehicle phrase")
    out: dict[str, str] = {}
    first, _, tail = rest.partition(" ")
    if first in VEHICLE_COLORS:
        out["color"], rest = first, tail.strip()
    for brand in _BRANDS_LONGEST_FIRST:
        if rest == brand or rest.startswith(brand + " "):
            out["brand"], rest = brand, rest[len(brand):].strip()
            break
    if rest in VEHICLE_TYPES:
        out["type"], rest = rest, ""
    if rest:
        raise ValueError(f"unknown vehicle vocabulary {rest!r} in {phrase.strip()!r}")
    if "color" in out and "brand" not in out and "type" not in out:
        raise ValueError(f"colour without brand or type in {phrase.strip()!r}")
    return out


def format_vehicle_phrase(attrs: Mapping[str, str]) -> str:
    """Inverse of :func:`parse_vehicle_phrase`: ``{"color": "grey", ...}`` -> ``"grey Chery Sedan."``."""
    words = [attrs[k] for k in ("color", "brand", "type") if attrs.get(k)]
    return " ".join(words) + "."
