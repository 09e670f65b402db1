"""A second, held-out phrase bank of everyday captions: for evaluation only, never for tuning.

:mod:`pipeline.baseline.paraphrase` holds the dev bank. Its wording is what the caption reader
is developed and tuned against, so the reader's figures on it are optimistic. This module is a
second bank with the same structure (the same six names, keys and types). It was written
separately from the dev bank and without looking at the reader's vocabulary. Its phrases reuse no
dev-bank phrase and, wherever English allows, none of the dev bank's content words. They also
avoid the template words of the dataset's own captions. Evaluating on it shows whether figures
tuned on the dev bank still hold on wording the reader has never seen.

Use it only to evaluate. Never add its words to the reader, and never tune against its results.
A phrase it needs to change should be replaced with new, unseen wording, not moved into the dev
bank. Every value keeps the composer's contract: ``("sleeve", v)`` phrases end with the garment
noun, ``("upper", v)`` values are adjectives placed before that noun, and ``("skirt", "yes")``
phrases start with "and" or "plus".
"""

from __future__ import annotations

#: The person, by gender and age (the subject every pedestrian caption has).
SUBJECT: dict[tuple[str, str], list[str]] = {
    ("female", "18to60"): ["mum", "mother of two", "woman in her thirties", "career woman"],
    ("male", "18to60"): ["dude", "fella", "chap", "dad", "man in his forties"],
    ("female", "under18"): ["little girl", "young lass", "preteen girl", "girl in her early teens"],
    ("male", "under18"): ["little boy", "preteen boy", "boy in his early teens", "boy of about ten"],
    ("female", "over60"): ["granny", "grandmother", "nan", "woman in her seventies"],
    ("male", "over60"): ["grandad", "grandfather", "old-timer", "man in his seventies"],
}

#: Everything else a pedestrian caption can state, as phrases that follow the subject.
PHRASES: dict[tuple[str, str], list[str]] = {
    ("orientation", "front"): ["shown face-on", "approaching head-on", "strolling toward the viewer",
                               "making straight for the lens"],
    ("orientation", "side"): ["passing left to right", "crossing the shot", "going past the viewer",
                              "passing by from right to left"],
    ("orientation", "back"): ["shown from the rear", "in a rear view", "receding into the distance",
                              "leaving the shot"],
    ("handbag", "yes"): ["toting a pocketbook", "swinging a small bag by its handles", "with a top-handle bag"],
    ("bag", "shoulder"): ["with a crossbody bag", "wearing a sling bag", "with a bag on a long strap"],
    ("bag", "backpack"): ["with a daypack", "wearing a hiking pack", "with a bookbag strapped on",
                          "lugging a two-strap pack"],
    ("holds_objects", "yes"): ["hugging a box to the chest", "with a parcel held at chest height",
                               "with an armful of books"],
    ("hat", "yes"): ["wearing headgear", "in a fedora", "with a straw boater", "wearing a trilby"],
    ("glasses", "yes"): ["wearing eyewear", "bespectacled", "in shades", "with sunnies on"],
    ("long_coat", "yes"): ["wearing a mac down to the shins", "in an ankle-skimming duster", "in a calf-length parka"],
    ("sleeve", "short"): ["in a short-armed top", "wearing a polo", "in a short-armed shirt"],
    ("sleeve", "long"): ["in a long-armed top", "wearing a hoodie", "in a cardigan", "wearing a sweatshirt"],
    ("upper", "stripe"): ["banded", "hooped", "Breton-style"],
    ("upper", "logo"): ["graphic", "lettered", "monogrammed"],
    ("upper", "plaid"): ["gingham", "lumberjack", "windowpane"],
    ("upper", "splice"): ["two-tone", "contrast-panel", "multi-panel"],
    ("skirt", "yes"): ["and a flowing maxi", "plus a pleated midi", "and an evening gown", "plus a pinafore"],
}

#: Vehicle words: shades for each colour, other names for each type, other names for some brands.
COLOUR: dict[str, list[str]] = {
    "black": ["ebony", "coal-black", "inky"], "blue": ["sky blue", "cobalt", "royal blue"],
    "brown": ["chestnut", "mocha", "walnut brown"], "green": ["emerald", "olive", "forest green"],
    "grey": ["charcoal", "slate", "gunmetal"], "orange": ["burnt orange", "apricot", "pumpkin"],
    "pink": ["hot pink", "salmon", "blush"], "purple": ["plum", "lilac", "aubergine"],
    "red": ["scarlet", "cherry red", "ruby"], "white": ["pearl white", "ivory", "chalk white"],
    "yellow": ["canary", "lemon yellow", "sunshine yellow"],
}
TYPE: dict[str, list[str]] = {
    "Bus": ["double-decker", "public transport vehicle", "transit vehicle"],
    "Microbus": ["passenger van", "ten-seat van", "twelve-seater"],
    "Minivan": ["family van", "seven-seater", "school-run van"],
    "SUV": ["sport utility vehicle", "all-wheel-drive wagon", "4WD"],
    "Sedan": ["three-box car", "regular car", "car with a boot"],
    "Truck": ["goods vehicle", "tipper", "semi", "HGV"],
}
#: Names only, no descriptors: the composer uses a brand both before the noun ("a ruby Chev
#: tipper") and after "made by", and a descriptor such as "-built" reads wrongly in one of them.
BRAND: dict[str, list[str]] = {
    "Benz": ["Mercedes-Benz"], "Volkswagen": ["Vee-Dub", "Volkswagon"], "Chevrolet": ["Chev", "Chevvy"],
    "Landrover": ["Landy", "Range Rover"], "MORRIS-GARAGE": ["Morris Garages"],
    "GreatWall": ["Great Wall Motors", "GWM"], "Citroen": ["Citroen"],
}
#: A vehicle with nothing but its colour or brand stated gets one of these as its noun.
CAR = ["automobile", "auto", "vehicle", "car"]
