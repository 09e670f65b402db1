"""Caption -> attributes: mine phrase rules from (caption, label) pairs, and parse captions with them.

Step 1 of the decoupled method: a text query becomes the attribute values its caption states, so
no text encoder is needed at query time.

Mining (:func:`mine_rules`). Captions are lower-cased and split into word tokens (``[a-z0-9]+``).
Every word n-gram (1..``max_ngram`` words, inside one sentence) that neither starts nor ends with a
function word (:data:`FUNCTION_WORDS`) nor ends with a negation is a candidate. For each attribute
group and value a candidate is scored on the training pairs by

- support: captions that contain it and carry the value;
- precision: support / captions that contain it and carry a label for the group (captions of the
  other domain count against it; vehicle captions whose group is unlabelled are not evidence);
- chance: a perfect record over k captions proves little when the value is common, so the
  binomial tail ``base_rate ** support`` must be below ``alpha``.

A candidate that passes (``support >= min_support``, ``precision >= min_precision``, chance) for
several values states only the one whose captions it covers the largest share of: "wearning a
longcoat" is also precise for sleeve=long, by correlation, not by statement. Then, per value,
rules are chosen greedily: the candidate covering the most still-uncovered captions, ties broken
towards the shortest phrase (it generalises: "longcoat" also reads "glasses,a longcoat"). Last, a
phrase grows to the longest equally good phrase made only of its value's own words and other
rules' phrases, so a multi-word name swallows a word that would state something else
("balong" -> "balong heavy truck", whose "truck" is then not read as the type; "golden dragon").

Captions never state a negative ("no hat"), but the template implies some (a hat forces the
"wearing" sentence), and such implications would be precise. So an absence value (no bit of its
own: ``male``, ``no``, ``none``) is mined only for the groups in ``absence_groups`` - gender,
which every caption states.

Parsing (:class:`CaptionMapping`). All rule phrases compile into one regular expression (a trie
of alternatives, so the longest phrase wins at each position) scanned once per caption. A phrase
preceded by a negation ("not", "no", "without", "never") states nothing unless a rule spells the
negated form itself ("not an adult" -> age under18). Two different values for one group cancel
out (the group is then not stated); the domain is the one whose groups the caption states.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import schema
from pipeline.config import MappingParams

log = logging.getLogger(__name__)

#: Words a rule phrase may contain but not start or end with: they carry no attribute.
FUNCTION_WORDS: frozenset[str] = frozenset(
    "a an the this that is are was be and or with who whom in on of to at as by for from his her "
    "their its it has have someone".split())

#: Words that negate the phrase right after them ("not an adult", "no hat", "without glasses").
NEGATIONS: tuple[str, ...] = ("not", "no", "never", "without")

#: How many words may sit between a negation and the phrase it negates ("not wearing a hat").
NEGATION_WINDOW = 3

_TOKEN = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"[.!?;\n]")
# Between the words of a phrase: spaces, commas, hyphens ("18-60"); never a sentence end.
_SEP = r"[^a-z0-9\n.!?;]+"

PEDESTRIAN_GROUP_NAMES = tuple(g.name for g in schema.PEDESTRIAN_GROUPS)
VEHICLE_GROUP_NAMES = tuple(g.name for g in schema.VEHICLE_GROUPS)
_PEDESTRIAN_ORDER = {g: i for i, g in enumerate(PEDESTRIAN_GROUP_NAMES)}
_VEHICLE_ORDER = {g: i for i, g in enumerate(VEHICLE_GROUP_NAMES)}
DOMAIN_OF_GROUP: dict[str, str] = {name: d for d, gs in schema.GROUPS_BY_DOMAIN.items()
                                   for name in (g.name for g in gs)}


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens of ``text``."""
    return _TOKEN.findall(text.lower())


# --------------------------------------------------------------------------- rules and files

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


@dataclass(frozen=True)
class ParsedCaption:
    """What a caption states: its domain and ``{group: value}`` for the stated groups only."""

    text: str
    domain: str  # pedestrian | vehicle | unknown
    attributes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "domain": self.domain, "attributes": dict(self.attributes)}


def _phrase_pattern(phrases: Iterable[str]) -> str:
    """A regex matching any of ``phrases`` (word lists), longest first, as a trie of alternatives."""
    trie: dict = {}
    for p in phrases:
        node = trie
        for w in p.split():
            node = node.setdefault(w, {})
        node[""] = {}  # end of a phrase

    def build(node: dict) -> str:
        arms = []
        for w, child in sorted(node.items(), key=lambda kv: (-len(kv[0]), kv[0])):
            if not w:
                continue
            arm = re.escape(w)
            if any(child):  # longer phrases continue here; the greedy "?" tries them first
                arm += "(?:" + _SEP + build(child) + ")" + ("?" if "" in child else "")
            arms.append(arm)
        return "(?:" + "|".join(arms) + ")"

    return build(trie)


class CaptionMapping:
    """A compiled rule set: :meth:`parse` turns a caption into a :class:`ParsedCaption`."""

    def __init__(self, rules: Sequence[Rule]):
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._by_phrase: dict[str, list[tuple[str, str]]] = {}
        for r in self.rules:
            self._by_phrase.setdefault(r.phrase, []).append((r.group, r.value))
        if not self._by_phrase:
            self._regex = None
            return
        trie = _phrase_pattern(self._by_phrase)
        word = r"[a-z0-9]+"
        neg = "(?:" + "|".join(NEGATIONS) + ")" + f"(?:{_SEP}{word}){{0,{NEGATION_WINDOW}}}?" + _SEP
        # Plain phrase first: a rule that spells a negation itself ("not an adult") wins over the
        # negation guard; the guard then swallows negated mentions ("not wearing a hat").
        # The leading lookahead lets the engine skip non-word positions cheaply (about 15% faster).
        self._regex = re.compile(rf"(?=[a-z0-9])(?<![a-z0-9])(?:({trie})|{neg}{trie})(?![a-z0-9])")
        # Most captions hold no negation: they take the same scan without the guard (~1.5x faster).
        self._plain = re.compile(rf"(?=[a-z0-9])(?<![a-z0-9])({trie})(?![a-z0-9])")
        self._has_negation = re.compile(r"(?<![a-z0-9])(?:" + "|".join(NEGATIONS) + r")(?![a-z0-9])")
        self._surface: dict[str, list[tuple[str, str]]] = {}  # matched text -> (group, value)s
        # Template language: few distinct match sequences, so their resolution is cached.
        self._resolved: dict[tuple[str, ...], tuple[str, dict[str, str]]] = {}

    def _lookup(self, surface: str) -> list[tuple[str, str]]:
        hit = self._surface.get(surface)
        if hit is None:
            hit = self._surface[surface] = self._by_phrase[" ".join(_TOKEN.findall(surface))]
        return hit

    def __len__(self) -> int:
        return len(self.rules)

    def parse(self, text: str) -> ParsedCaption:
        """The domain and stated attributes of one caption; never raises on odd text."""
        if not isinstance(text, str):
            text = "" if text is None else str(text)
        if self._regex is None:
            return ParsedCaption(text, "unknown", {})
        low = text.lower()
        # findall gives group 1 per match: the phrase, or "" for a negated mention (states nothing).
        regex = self._regex if self._has_negation.search(low) else self._plain
        key = tuple(regex.findall(low))
        hit = self._resolved.get(key)
        if hit is None:
            if len(self._resolved) > 100_000:  # odd inputs must not grow it without bound
                self._resolved.clear()
            hit = self._resolved[key] = self._resolve(key)
        return ParsedCaption(text, hit[0], dict(hit[1]))

    def parse_many(self, texts: Iterable[str]) -> list[ParsedCaption]:
        """:meth:`parse` over many captions, in order."""
        return [self.parse(t) for t in texts]

    def _resolve(self, surfaces: Sequence[str]) -> tuple[str, dict[str, str]]:
        """Domain and attributes from the matched phrases of one caption, in order."""
        found: dict[str, str] = {}
        conflicts = []
        for surface in surfaces:
            if not surface:
                continue
            for g, v in self._surface.get(surface) or self._lookup(surface):
                if found.setdefault(g, v) != v:
                    conflicts.append(g)  # two values for one group: the group is not stated
        for g in conflicts:
            found.pop(g, None)
        n_ped = sum(g in _PEDESTRIAN_ORDER for g in found)
        n_veh = len(found) - n_ped
        if n_ped == n_veh:  # nothing found, or undecidable
            return "unknown", {}
        order = _PEDESTRIAN_ORDER if n_ped > n_veh else _VEHICLE_ORDER
        attrs = {g: found[g] for g in sorted((g for g in found if g in order), key=order.__getitem__)}
        return ("pedestrian" if n_ped > n_veh else "vehicle"), attrs


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
    path.write_text("".join(lines))
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


def load_mapping(path: str | Path) -> CaptionMapping:
    """Load a mapping file (``data/mapping/mapping.yaml``) into a compiled :class:`CaptionMapping`."""
    return CaptionMapping(read_rules(path))


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


# --------------------------------------------------------------------------- training pairs

@dataclass
class Pairs:
    """(caption, label) pairs as arrays: ``labels[group]`` is a class index per caption, -1 if unlabelled."""

    captions: list[str]
    domains: np.ndarray  # str: pedestrian | vehicle
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.captions)


def pairs_from_frame(df) -> Pairs:
    """Pairs from a ``labels.parquet``-shaped frame (see docs/architecture.md)."""
    n = len(df)
    labels: dict[str, np.ndarray] = {}
    for g in schema.PEDESTRIAN_GROUPS:
        col = df[g.name] if g.name in df else None
        labels[g.name] = (np.full(n, -1, np.int16) if col is None
                          else col.astype("Int16").fillna(-1).to_numpy(np.int16))
    for g in schema.VEHICLE_GROUPS:
        index = {v: i for i, v in enumerate(g.values)}
        col = df[g.name] if g.name in df else [None] * n
        labels[g.name] = np.array([index[v] if isinstance(v, str) else -1 for v in col], np.int16)
    return Pairs([str(c) for c in df["caption"]], df["domain"].to_numpy(str), labels)


def stated(domain: str, caption: str, values: dict[str, str]) -> dict[str, str]:
    """What a caption states, from its label and the caption template - never from mined rules.

    Vehicles: the label field is exactly the phrase of the caption, so every labelled group is stated.
    Pedestrians (template of ``track2/README.md``): sentence 1 always states gender, age and
    orientation and names the first carried item present in the order handbag > shoulder bag >
    backpack > holds-objects. Sentence 2 is either the clothing form, which always names the sleeve
    (hence: it contains the word "sleeve"), states the sleeve, the upper pattern if any and a skirt if
    any; or the "wearing" form, which lists hat, glasses and long coat when present.
    ``values`` holds the label's value name per group.
    """
    if domain == "vehicle":
        return {g: v for g, v in values.items() if g in VEHICLE_GROUP_NAMES and v is not None}
    out = {g: values[g] for g in ("gender", "age", "orientation")}
    if values["handbag"] == "yes":
        out["handbag"] = "yes"
    elif values["bag"] != "none":
        out["bag"] = values["bag"]
    elif values["holds_objects"] == "yes":
        out["holds_objects"] = "yes"
    if "sleeve" in tokens(caption) or "sleeves" in tokens(caption):
        out["sleeve"] = values["sleeve"]
        if values["upper"] != "none":
            out["upper"] = values["upper"]
        if values["skirt"] == "yes":
            out["skirt"] = "yes"
    else:
        out.update({g: "yes" for g in ("hat", "glasses", "long_coat") if values[g] == "yes"})
    return out


def label_values(pairs: Pairs, i: int) -> dict[str, str | None]:
    """Value names of caption ``i``'s label, None for unlabelled groups."""
    return {g: (schema.group(g).values[k] if k >= 0 else None)
            for g, k in ((g, int(pairs.labels[g][i])) for g in pairs.labels)}


# --------------------------------------------------------------------------- mining

def _ngrams(text: str, max_n: int) -> set[str]:
    """Candidate phrases of a caption: word n-grams inside one sentence, no function word at an edge."""
    out: set[str] = set()
    for sentence in _SENTENCE_END.split(text.lower()):
        _sentence_ngrams(_TOKEN.findall(sentence), max_n, out)
    return out


def _sentence_ngrams(toks: list[str], max_n: int, out: set[str]) -> None:
    for i, w in enumerate(toks):
        if w in FUNCTION_WORDS:
            continue
        for n in range(1, max_n + 1):
            j = i + n
            if j > len(toks):
                break
            if toks[j - 1] not in FUNCTION_WORDS and toks[j - 1] not in NEGATIONS:
                out.add(" ".join(toks[i:j]))  # a negation is never the end: "not an adult", not "not"


def _stateable(group: schema.Group, k: int, config: MappingParams) -> bool:
    """Whether captions can state value ``k``: any value with a bit of its own, and the absence value
    (no bit: male, no, none) only of the groups the template always states (``absence_groups``)."""
    return (group.name not in PEDESTRIAN_GROUP_NAMES or group.bits[k] is not None
            or group.name in config.absence_groups)


def mine_rules(pairs: Pairs, config: MappingParams = MappingParams()) -> list[Rule]:
    """Learn phrase -> value rules from training pairs (see the module docstring)."""
    from tqdm import tqdm

    vocab: dict[str, int] = {}
    occ_row: list[np.ndarray] = []
    occ_id: list[np.ndarray] = []
    for row, caption in enumerate(tqdm(pairs.captions, desc="n-grams", unit="caption",
                                       mininterval=2, disable=len(pairs) < 20000)):
        ids = [vocab.setdefault(g, len(vocab)) for g in _ngrams(caption, config.max_ngram)]
        occ_id.append(np.asarray(ids, np.int32))
        occ_row.append(np.full(len(ids), row, np.int32))
    ids_all = np.concatenate(occ_id) if occ_id else np.zeros(0, np.int32)
    rows_all = np.concatenate(occ_row) if occ_row else np.zeros(0, np.int32)
    phrases = np.array(list(vocab), dtype=object)
    n_words = np.array([p.count(" ") + 1 for p in phrases], np.int32)
    n_ids = len(vocab)
    log.info("mining over %d captions, %d candidate phrases", len(pairs), n_ids)

    # Pass 1: the precise, significant candidates of every stateable (group, value).
    found: list[tuple[schema.Group, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    best_recall = np.zeros(n_ids)
    owner = np.full(n_ids, -1)
    for group in schema.PEDESTRIAN_GROUPS + schema.VEHICLE_GROUPS:
        domain = DOMAIN_OF_GROUP[group.name]
        y = pairs.labels[group.name].astype(np.int64)
        in_domain = pairs.domains == domain
        C = group.n_classes
        # Per caption: its class; C = other domain (counts against); C+1 = unlabelled (no evidence).
        code = np.where(in_domain, np.where(y >= 0, y, C + 1), C)
        counts = np.bincount(ids_all.astype(np.int64) * (C + 2) + code[rows_all],
                             minlength=n_ids * (C + 2)).reshape(n_ids, C + 2)
        evidence = counts[:, :C + 1].sum(1)
        n_labelled = int((in_domain & (y >= 0)).sum())
        for k in range(C):
            positives = in_domain & (y == k)
            n_pos = int(positives.sum())
            if n_pos < config.min_support or not _stateable(group, k, config):
                continue
            base_rate = n_pos / max(n_labelled, 1)
            support = counts[:, k]
            precision = support / np.maximum(evidence, 1)
            chance = support * math.log(base_rate) if base_rate < 1 else np.zeros(n_ids)
            cand = np.flatnonzero((support >= config.min_support) & (precision >= config.min_precision)
                                  & (chance < math.log(config.alpha)))
            if not len(cand):
                continue
            # A phrase states one thing: the value whose captions it covers the largest share of.
            # ("wearning a longcoat" is also precise for sleeve=long, by correlation, not by statement.)
            recall = support[cand] / n_pos
            better = recall > best_recall[cand]
            best_recall[cand[better]] = recall[better]
            owner[cand[better]] = len(found)
            found.append((group, k, positives, cand, support, precision))

    # Pass 2: per value, greedily pick its phrases that cover the most still-uncovered captions.
    chosen: list[tuple[Rule, list[str], np.ndarray, np.ndarray]] = []
    for f, (group, k, positives, cand, support, precision) in enumerate(found):
        cand = cand[owner[cand] == f]
        sel = np.isin(ids_all, cand) & positives[rows_all]
        c_ids, c_rows = ids_all[sel], rows_all[sel]
        covered = np.zeros(len(pairs), bool)
        while len(c_ids):
            gain = np.bincount(c_ids[~covered[c_rows]], minlength=n_ids)
            best_gain = int(gain.max())
            if best_gain < config.min_support:
                break
            tied = np.flatnonzero(gain == best_gain)
            best = min(tied, key=lambda i: (n_words[i], phrases[i]))
            chosen.append((Rule(str(phrases[best]), group.name, group.values[k], int(support[best]),
                                float(precision[best])), [str(phrases[i]) for i in tied],
                           support[tied], precision[tied]))
            covered[c_rows[c_ids == best]] = True
        log.debug("%s=%s: rules cover %.1f%% of %d captions", group.name, group.values[k],
                  100 * covered.sum() / positives.sum(), positives.sum())
    rules = _extend_phrases(chosen)
    log.info("mined %d rules", len(rules))
    return rules


def _extend_phrases(chosen: list[tuple[Rule, list[str], np.ndarray, np.ndarray]]) -> list[Rule]:
    """Grow each rule's (shortest) phrase to the longest equally good phrase made only of words
    that belong to its value or to other rules.

    Short phrases generalise best ("longcoat", not "wearning a longcoat", also reads
    "glasses,a longcoat"), but a multi-word name must swallow its words that would otherwise
    state something else: "balong" grows to "balong heavy truck" so that its "truck" is not read
    as the type, and "dragon" to "golden dragon". Function words may sit inside.
    """
    phrases = [r.phrase for r, *_ in chosen]
    out = []
    for i, (rule, tied, support, precision) in enumerate(chosen):
        own = {p for p in tied if " " not in p} | FUNCTION_WORDS  # words alone as good as the rule
        others = sorted({q for j, q in enumerate(phrases) if j != i}, key=len, reverse=True)
        best, best_key = None, None
        for j, p in enumerate(tied):
            if f" {rule.phrase} " not in f" {p} ":
                continue
            rest = f" {p} "
            for q in others:
                while f" {q} " in rest:
                    rest = rest.replace(f" {q} ", " ")
            if set(rest.split()) <= own:
                key = (p.count(" "), [-ord(c) for c in p])
                if best_key is None or key > best_key:
                    best, best_key = j, key
        if best is not None and tied[best] != rule.phrase:
            rule = Rule(tied[best], rule.group, rule.value, int(support[best]), float(precision[best]))
        out.append(rule)
    return out


def measure_rules(rules: Sequence[Rule], pairs: Pairs) -> list[Rule]:
    """Fill support/precision of ``rules`` (e.g. overrides) on ``pairs`` by substring of tokens."""
    joined = [" " + " ".join(tokens(c)) + " " for c in pairs.captions]
    out = []
    for r in rules:
        g = schema.group(r.group)
        k = g.index(r.value)
        y = pairs.labels[r.group]
        dom = pairs.domains == DOMAIN_OF_GROUP[r.group]
        has = np.array([f" {r.phrase} " in c for c in joined], bool)
        evidence = int((has & ((dom & (y >= 0)) | ~dom)).sum())
        support = int((has & dom & (y == k)).sum())
        out.append(Rule(r.phrase, r.group, r.value, support,
                        support / evidence if evidence else None, r.source))
    return out


# --------------------------------------------------------------------------- quality report

def evaluate(mapping: CaptionMapping, pairs: Pairs) -> dict[str, Any]:
    """Per group: precision and recall against the labels, and recall of what captions state.

    - precision: parsed values that equal the label / parsed values (a vehicle group parsed where
      the label has none counts as wrong: vehicle labels are exactly what the caption says);
    - recall: parsed correct / captions labelled for the group (unstated values cap it below 1);
    - stated_recall: stated values (:func:`stated`) parsed correctly / stated values.
    """
    parsed = mapping.parse_many(pairs.captions)
    names = PEDESTRIAN_GROUP_NAMES + VEHICLE_GROUP_NAMES
    tally = {g: dict(parsed=0, correct=0, labelled=0, stated=0, stated_found=0) for g in names}
    domain_ok = 0
    for i, p in enumerate(parsed):
        dom = str(pairs.domains[i])
        values = label_values(pairs, i)
        truth = stated(dom, pairs.captions[i], values)
        domain_ok += p.domain == dom
        for g in schema.GROUPS_BY_DOMAIN[dom]:
            if values[g.name] is not None:
                tally[g.name]["labelled"] += 1
        for g, v in p.attributes.items():
            t = tally[g]
            t["parsed"] += 1
            t["correct"] += DOMAIN_OF_GROUP[g] == dom and values.get(g) == v
        for g, v in truth.items():
            tally[g]["stated"] += 1
            tally[g]["stated_found"] += p.attributes.get(g) == v

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 6) if b else None

    groups = {g: {"precision": ratio(t["correct"], t["parsed"]), "recall": ratio(t["correct"], t["labelled"]),
                  "stated_recall": ratio(t["stated_found"], t["stated"]), **t}
              for g, t in tally.items()}
    tot = {k: sum(t[k] for t in tally.values()) for k in ("parsed", "correct", "stated", "stated_found")}
    return {"captions": len(pairs), "rules": len(mapping),
            "domain_accuracy": ratio(domain_ok, len(pairs)),
            "precision": ratio(tot["correct"], tot["parsed"]),
            "stated_recall": ratio(tot["stated_found"], tot["stated"]),
            "min_group_precision": min((v["precision"] for v in groups.values()
                                        if v["precision"] is not None), default=None),
            "min_group_stated_recall": min((v["stated_recall"] for v in groups.values()
                                            if v["stated_recall"] is not None), default=None),
            "groups": groups}


def misses(mapping: CaptionMapping, pairs: Pairs, limit: int = 20) -> list[dict[str, Any]]:
    """Examples of wrong or missed stated values, for reading (the report shows them)."""
    out = []
    for i, p in enumerate(mapping.parse_many(pairs.captions)):
        dom = str(pairs.domains[i])
        values = label_values(pairs, i)
        truth = stated(dom, pairs.captions[i], values)
        wrong = {g: v for g, v in p.attributes.items() if values.get(g) != v}
        missed = {g: v for g, v in truth.items() if p.attributes.get(g) != v}
        if wrong or missed:
            out.append({"caption": pairs.captions[i], "wrong": wrong, "missed": missed})
            if len(out) >= limit:
                break
    return out


# --------------------------------------------------------------------------- the stage

def build_mapping(train, config: MappingParams, overrides: str | Path | None) -> list[Rule]:
    """Mine rules from a labels frame, merge the overrides and measure the added rules on it."""
    pairs = pairs_from_frame(train)
    rules = apply_overrides(mine_rules(pairs, config), overrides)
    added = [r for r in rules if r.source == "override"]
    return [r for r in rules if r.source != "override"] + measure_rules(added, pairs)


def run_stage(prepared_dir: str | Path, config: MappingParams, report_path: str | Path) -> dict[str, Any]:
    """Stage ``mapping``: mine from the train split of ``labels.parquet``, write ``config.out``,
    and report precision/recall on the val split to ``report_path``."""
    import json

    import pandas as pd

    labels_path = Path(prepared_dir) / "labels.parquet"
    if not labels_path.exists():
        raise FileNotFoundError(f"{labels_path} not found; run the ingest stage first")
    labels = pd.read_parquet(labels_path)
    train = labels[labels["split"] == "train"].reset_index(drop=True)
    val = labels[labels["split"] == "val"].reset_index(drop=True)
    if not len(train):
        raise ValueError(f"{labels_path} has no train rows to mine from")
    rules = build_mapping(train, config, config.overrides or None)
    save_mapping(rules, config.out, meta={"mined_from": f"{labels_path} (split train)",
                                           "train_captions": len(train)})
    mapping = CaptionMapping(rules)
    val_pairs = pairs_from_frame(val)
    report = evaluate(mapping, val_pairs)
    report["split"] = "val"
    report["train_captions"] = len(train)
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(json.dumps(report, indent=2) + "\n")
    plot_quality(report, Path(report_path).with_suffix(".png"))
    log.info("mapping: %d rules -> %s; val precision %s, stated recall %s",
             len(rules), config.out, report["precision"], report["stated_recall"])
    for m in misses(mapping, val_pairs, limit=10):
        log.warning("val caption parsed wrong/missed: %s", m)
    return report


def plot_quality(report: dict[str, Any], path: str | Path) -> Path:
    """Bar chart of per-group precision, recall and stated recall (the report, for the eye)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(report["groups"])
    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.27
    for j, (key, colour) in enumerate((("precision", "tab:blue"), ("recall", "tab:grey"),
                                        ("stated_recall", "tab:green"))):
        values = [report["groups"][g][key] or 0.0 for g in groups]
        ax.bar([i + (j - 1) * width for i in range(len(groups))], values, width, label=key, color=colour)
    ax.set_xticks(range(len(groups)), [f"{g}\n({report['groups'][g]['stated']})" for g in groups], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("on the validation split")
    ax.set_title(f"Caption mapping: {report['rules']} rules, {report['captions']} captions "
                 f"(below each group: stated values)", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def read_caption_lines(path: str | Path) -> list[str]:
    """The captions of a file, one per line: either plain captions or ``image$attribute$caption``
    lines (detected: every non-blank line has exactly two '$'). Undecodable bytes are replaced."""
    lines = Path(path).read_text(encoding="utf-8-sig", errors="replace").splitlines()
    filled = [ln for ln in lines if ln.strip()]
    if filled and all(ln.count("$") == 2 for ln in filled):
        return [ln.split("$", 2)[2].strip() if ln.count("$") == 2 else "" for ln in lines]
    return [ln.strip() for ln in lines]
