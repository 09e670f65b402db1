"""Re-measure the sampling tables of `release.py` from real Track-2 annotation text.

The numbers in `release.py` were measured with this module on `../shared/track2/`;
`tests/data/test_synth_release.py` re-runs it there and checks they still agree. Run
``python -m pipeline.synth.measure ../shared/track2`` to print the measurements as JSON.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

from pipeline.schema import bits_to_groups, groups_to_values, parse_bits, parse_vehicle_phrase


def _rows(path: Path) -> list[tuple[str, str, str]]:
    """``(image, attribute, caption)`` of a label file's well-formed lines (pipeline/formats)."""
    from pipeline.formats import read_label_file

    return [(r.name, r.attribute, r.caption) for r in read_label_file(path)[0]]


def _share(values: list[str], keys) -> dict[str, float]:
    counts = collections.Counter(values)
    return {k: round(counts[k] / max(len(values), 1), 3) for k in keys}


def pedestrian_tables(label_file: Path) -> dict:
    """The conditional tables of `release.sample_pedestrian`, measured on labelled pedestrian lines."""
    people = []
    for _, field, caption in _rows(label_file):
        if "," in field:
            person = groups_to_values(bits_to_groups(parse_bits(field)))
            person["boots"] = "yes" if "boots" in caption else "no"
            people.append(person)

    def rate(subset, group, value="yes"):
        return round(sum(p[group] == value for p in subset) / max(len(subset), 1), 3)

    by = {g: [p for p in people if p["gender"] == g] for g in ("male", "female")}
    adults = {g: [p for p in by[g] if p["age"] != "under18"] for g in by}
    kids = [p for p in people if p["age"] == "under18"]
    no_coat = {g: [p for p in by[g] if p["long_coat"] == "no"] for g in by}
    coats = [p for p in people if p["long_coat"] == "yes"]
    women = [p for p in by["female"] if p["age"] != "over60"]
    return {
        "n": len(people),
        "P_FEMALE": rate(people, "gender", "female"),
        "AGE": {g: _share([p["age"] for p in by[g]], ("over60", "18to60", "under18")) for g in by},
        "ORIENTATION": _share([p["orientation"] for p in people], ("front", "side", "back")),
        "P_HAT": {g: rate(by[g], "hat") for g in by},
        "P_GLASSES": {g: rate(by[g], "glasses") for g in by},
        "P_HANDBAG": {**{g: rate(adults[g], "handbag") for g in by}, "under18": rate(kids, "handbag")},
        "BAG": {**{f"{g},{h}": _share([p["bag"] for p in adults[g] if p["handbag"] == h],
                                      ("shoulder", "backpack", "none")) for g in by for h in ("no", "yes")},
                "under18": _share([p["bag"] for p in kids], ("shoulder", "backpack", "none"))},
        "P_HOLDS_OBJECTS": rate(people, "holds_objects"),
        "P_LONG_COAT": {g: rate(by[g], "long_coat") for g in by},
        "P_SHORT_SLEEVE": {**{g: rate(no_coat[g], "sleeve", "short") for g in by},
                           "long_coat": rate(coats, "sleeve", "short")},
        "UPPER": {f"{g},{s}": _share([p["upper"] for p in by[g] if p["sleeve"] == s],
                                     ("stripe", "logo", "plaid", "splice", "none"))
                  for g in by for s in ("short", "long")},
        "P_SKIRT": {s: rate([p for p in women if p["sleeve"] == s], "skirt") for s in ("short", "long")},
        "P_BOOTS": {"male": rate(by["male"], "boots"),
                    "female": rate([p for p in by["female"] if p["hat"] == p["long_coat"] == "no"], "boots"),
                    "female_coat_or_hat": rate([p for p in by["female"]
                                                if "yes" in (p["hat"], p["long_coat"])], "boots")},
    }


def vehicle_tables(train_vehicle_file: Path) -> dict:
    """Label-form, colour, type and brand counts of training vehicle lines."""
    forms, colors, types, brands = (collections.Counter() for _ in range(4))
    for _, field, _ in _rows(train_vehicle_file):
        label = parse_vehicle_phrase(field)
        if "color" in label:
            forms["color_brand"] += 1
            colors[label["color"]] += 1
            brands[label["brand"]] += 1
        elif "type" in label:
            forms["type"] += 1
            types[label["type"]] += 1
        else:
            forms[label["brand"]] += 1
    return {"VEHICLE_FORMS": dict(forms), "TRAIN_COLORS": dict(colors), "TRAIN_TYPES": dict(types),
            "TRAIN_BRANDS": dict(brands)}


def measure(folder: str | Path) -> dict:
    """Everything `release.py` takes from the real text in ``folder``."""
    folder = Path(folder)
    return {"pedestrians": pedestrian_tables(folder / "val_label_dev.txt"),
            "vehicles": vehicle_tables(folder / "train_vehicle_label.txt")}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m pipeline.synth.measure TRACK2_TEXT_FOLDER")
    print(json.dumps(measure(sys.argv[1]), indent=1))
