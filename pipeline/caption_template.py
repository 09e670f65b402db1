"""The caption template: what a caption of each domain states, given its label.

One place for the facts that the synthetic captions are written by (:mod:`pipeline.synth.captions`,
which adds the phrase forms) and that the mapping is judged by (its oracle of stated values,
the values it mines rules for, the validate stage's rule-coverage check). They follow the real
Track-2 annotation (``track2/README.md``):

- A vehicle caption is its label field: every labelled group is stated, nothing else.
- A pedestrian caption is two sentences. Sentence 1 always states :data:`ALWAYS_STATED` (gender,
  age, orientation) and names at most one carried item: the first present in :data:`CARRIED`
  order (handbag > shoulder bag > backpack > holds-objects). Sentence 2 is the "wearing" form when
  the person has any :data:`WORN` item (hat, glasses, long coat, boots), listing every one of them
  in that order; otherwise the clothing form, which states :data:`CLOTHING` (the sleeve always, the
  upper pattern and a skirt when present). The clothing form always names the sleeve
  (:data:`SLEEVE_WORDS`) and the wearing form never does, so a reader tells them apart by that.
- Captions never state a negative: a value with no bit of its own (``male``, ``no``, ``none``) is
  stated only by the groups every caption states (gender), see :func:`statable`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pipeline import schema

#: Not one of the 21 bits: hidden truth that the renderer draws and the wearing form lists.
BOOTS = "boots"

#: Sentence 1 of every pedestrian caption states these groups.
ALWAYS_STATED: tuple[str, ...] = ("gender", "age", "orientation")

#: Carried items in priority order, as (group, value): sentence 1 names the first one present.
CARRIED: tuple[tuple[str, str], ...] = (
    ("handbag", "yes"), ("bag", "shoulder"), ("bag", "backpack"), ("holds_objects", "yes"))

#: Worn items in the order the wearing form lists them; having any one selects that form.
WORN: tuple[tuple[str, str], ...] = (("hat", "yes"), ("glasses", "yes"), ("long_coat", "yes"), (BOOTS, "yes"))

#: The clothing form states these groups, each when its value is statable (sleeve always).
CLOTHING: tuple[str, ...] = ("sleeve", "upper", "skirt")

#: Words only the clothing form contains (every sleeve phrase has one).
SLEEVE_WORDS: frozenset[str] = frozenset({"sleeve", "sleeves"})

_VEHICLE_GROUPS = frozenset(g.name for g in schema.VEHICLE_GROUPS)


def statable(group: str, value: str) -> bool:
    """Whether any caption can state ``group = value``: every vehicle value, a pedestrian value
    with a bit of its own, and an absence value (no bit) only of an :data:`ALWAYS_STATED` group."""
    g = schema.group(group)
    return group in _VEHICLE_GROUPS or group in ALWAYS_STATED or g.bits[g.index(value)] is not None


def statable_values() -> list[tuple[str, str]]:
    """Every (group, value) a caption can state, in schema order (pedestrian, then vehicle groups)."""
    return [(g.name, v) for g in schema.PEDESTRIAN_GROUPS + schema.VEHICLE_GROUPS for v in g.values
            if statable(g.name, v)]


def carried_item(values: Mapping[str, str | None]) -> tuple[str, str] | None:
    """The carried item sentence 1 names, as (group, value), or None when nothing is carried."""
    return next(((g, v) for g, v in CARRIED if values.get(g) == v), None)


def worn_items(values: Mapping[str, str | None]) -> list[tuple[str, str]]:
    """The worn items present, in listing order (with :data:`BOOTS` when ``values`` has it)."""
    return [(g, v) for g, v in WORN if values.get(g) == v]


def is_wearing_form(words: Iterable[str]) -> bool:
    """Whether a pedestrian caption's (lower-case) words are of the wearing form, not the clothing form."""
    return not SLEEVE_WORDS.intersection(words)


def pedestrian_stated(values: Mapping[str, str | None], wearing: bool | None = None) -> dict[str, str]:
    """What a pedestrian caption states, in sentence order: ``{group: value}``.

    ``values`` has every pedestrian group's value (and optionally :data:`BOOTS`). ``wearing`` is
    the form of sentence 2; None means the form the template picks: wearing when any worn item is
    present. A reader of an existing caption passes the form it sees (:func:`is_wearing_form`), since
    the boots that may select it are not in the label.
    """
    worn = worn_items(values)
    out = {g: values[g] for g in ALWAYS_STATED}
    item = carried_item(values)
    if item is not None:
        out[item[0]] = item[1]
    if wearing is None:
        wearing = bool(worn)
    if wearing:
        out.update(worn)
    else:
        out.update({g: values[g] for g in CLOTHING if values[g] is not None and statable(g, values[g])})
    return out


def vehicle_stated(values: Mapping[str, str | None]) -> dict[str, str]:
    """What a vehicle caption states: every labelled vehicle group of ``values``, in its order."""
    return {g: v for g, v in values.items() if g in _VEHICLE_GROUPS and v}
