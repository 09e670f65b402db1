"""Property tests over arbitrary input (issue 11), with Hypothesis: hundreds of generated cases
each, shrunk to the smallest failing one when a property breaks. Properties:
- the release line reader never crashes and accounts for every line: kept or rejected with a reason;
- the caption parser never crashes and its output always validates against the schema;
- the served model's input handling returns captions or refuses with :class:`InputError`, nothing else;
- the params loader accepts a value or rejects it with a :class:`ConfigError` naming the key.

Under ``CI`` the examples are derandomized (tests/conftest.py), so a red run reproduces exactly.
"""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import schema

ROOT = Path(__file__).resolve().parents[2]

_WORDS = ["female", "male", "pedestrian", "backpack", "shoulder", "bag", "white", "black", "Audi", "BMW",
          "Sedan", "SUV", "This", "is", "a", "with", "under", "18", "years", "old", "$", "", " ", ".", ",",
          "ünï", "車", "\t", "\u200b", "\udcff", "\x00", "0", "1", "0,1,0", "000001.jpg", "\r"]

#: Caption-like text: template words, separators, odd code points and lone surrogates, and any text.
captions = st.one_of(st.lists(st.sampled_from(_WORDS), max_size=20).map(" ".join), st.text(max_size=60))


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


#: A label-file line: ``name$attributes$caption`` (right and wrong field counts and bit strings),
#: any bytes, an empty line, or loose words.
label_lines = st.one_of(
    st.builds(lambda n, attr, text, extra: _encode(f"{n:06d}.jpg${attr}${text}{extra}"),
              st.integers(0, 999),
              st.one_of(st.lists(st.sampled_from("01"), min_size=20, max_size=21).map(",".join),
                        st.lists(st.sampled_from("01"), max_size=4).map(",".join), captions),
              captions, st.one_of(st.just(""), captions.map(lambda t: f"${t}"))),
    st.binary(max_size=40), st.just(b""), captions.map(_encode))


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.tuples(label_lines, st.booleans()), max_size=30), bom=st.booleans(),
       final_newline=st.booleans())
def test_label_reader_accounts_for_every_line(lines, bom, final_newline):
    from pipeline.formats.lines import read_label_file, read_lines

    data = (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(line + (b"\r" if cr else b"") for line, cr in lines) \
        + (b"\n" if final_newline else b"")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "label.txt"
        path.write_bytes(data)
        read, trailing = read_lines(path)
        kept, bad, trailing2 = read_label_file(path)
    numbers = [n for n, _, _ in read]
    accounted = [r.line for r in kept] + [b[0] for b in bad]
    assert sorted(accounted) == sorted(numbers)  # each line once: kept or rejected
    assert all(isinstance(reason, str) and reason for _, _, reason in bad)
    assert trailing == trailing2 >= 0
    for r in kept:
        assert r.name and "$" not in r.name


@pytest.fixture(scope="module")
def mapping(tmp_path_factory):
    from pipeline.mapping import Rule, load_mapping, save_mapping

    rules = [Rule("female", "gender", "female"), Rule("male", "gender", "male"),
             Rule("backpack", "bag", "backpack"), Rule("shoulder", "bag", "shoulder"),
             Rule("under 18", "age", "under18"), Rule("white", "color", "white"), Rule("black", "color", "black"),
             Rule("audi", "brand", "Audi"), Rule("bmw", "brand", "BMW"), Rule("sedan", "type", "Sedan"),
             Rule("suv", "type", "SUV")]
    path = tmp_path_factory.mktemp("map") / "mapping.yaml"
    save_mapping(rules, path)
    return load_mapping(path)


@settings(max_examples=500, deadline=None)
@given(texts=st.lists(st.one_of(captions, st.none(), st.integers(), st.just("$$$")), min_size=1, max_size=8))
def test_caption_parse_always_validates_against_the_schema(mapping, texts):
    for text, p in zip(texts, mapping.parse_many(texts)):
        assert p.domain in (*schema.DOMAINS, "unknown"), text
        groups = {g.name: g for g in schema.GROUPS_BY_DOMAIN.get(p.domain, ())}
        if p.domain == "unknown":
            assert p.attributes == {}, text
        for g, v in p.attributes.items():
            assert g in groups and v in groups[g].values, (text, g, v)


def _odd_values():
    import numpy as np
    import pandas as pd

    return st.one_of(st.sampled_from([None, 42, -1, 0, 3.5, float("nan"), math.inf, True, b"bytes", ["a"],
                                      {"a": 1}, np.int64(3), pd.NA, "", "ok", "\udcff", "車 ünï"]),
                     st.integers(), st.floats(), st.binary(max_size=8), captions)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_served_input_is_captions_or_a_clear_refusal(data):
    import pandas as pd

    from pipeline.serving import InputError, captions_of, check_top_k

    values = data.draw(st.lists(_odd_values(), min_size=1, max_size=5), label="captions")
    frame = pd.DataFrame({"caption": pd.Series(values, dtype=object)})
    try:
        out = captions_of(frame)
    except InputError as e:
        assert str(e).startswith("caption") and "\n" not in str(e)
    else:
        assert all(isinstance(c, str) for c in out) and len(out) == len(values)
        for c in out:
            c.encode("utf-8")  # never a surrogate past the check
    k = data.draw(st.one_of(_odd_values(), st.sampled_from([1, 10, 10**12, -5])), label="top_k")
    try:
        assert check_top_k(k) >= 1
    except InputError as e:
        assert "top_k must be a whole number >= 1" in str(e)


def _leaves(d: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in d.items():
        if k == "profiles":
            continue
        if isinstance(v, dict) and v:
            out += _leaves(v, prefix + (k,))
        else:
            out.append(prefix + (k,))
    return out


_BASE_PARAMS: dict = {}


def _base_params() -> dict:
    from pipeline.config import read_yaml

    if not _BASE_PARAMS:
        _BASE_PARAMS.update(read_yaml(ROOT / "params.yaml"))
    return _BASE_PARAMS


_PARAM_VALUES = st.one_of(st.sampled_from([None, -1, 0, 1, 10**12, -0.5, 2.5, "", "x", True, [], {}, [1, "a"],
                                           {"k": 1}, "1", float("nan")]),
                          st.integers(), st.floats(), st.text(max_size=10))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_params_loader_accepts_or_names_the_key(data):
    from pipeline.config import ConfigError, parse_params

    base = _base_params()
    params = copy.deepcopy(base)
    path = data.draw(st.sampled_from(_leaves(base)), label="key")
    action = data.draw(st.sampled_from(["delete", "typo", "set"]), label="action")
    node = params
    for k in path[:-1]:
        node = node[k]
    if action == "delete":
        del node[path[-1]]
    elif action == "typo":
        node[path[-1] + "_typo"] = node[path[-1]]
    else:
        node[path[-1]] = data.draw(_PARAM_VALUES, label="value")
    try:
        parse_params(params)
    except ConfigError as e:
        msg = str(e)
        assert path[-1] in msg or path[0] in msg, (path, msg)
        assert "\n" not in msg and "Traceback" not in msg


@settings(max_examples=200, deadline=None)
@given(caption=st.one_of(captions, st.text(), st.none(), st.integers(), st.binary(max_size=8)),
       top=st.one_of(st.integers(-10**6, 10**6), st.floats(), st.text(max_size=5)))
def test_search_refuses_hostile_input_before_loading_anything(caption, top):
    """`search` checks the caption and --top first (pipeline/cli.py): text that encodes, a whole
    number >= 1, or one line naming what is wrong - never a traceback from deeper down."""
    from pipeline.serving import InputError, check_caption, check_top_k

    try:
        assert check_caption(caption) is caption and caption.encode("utf-8") is not None
    except InputError as e:
        assert str(e).startswith("caption") and "\n" not in str(e)
    try:
        k = check_top_k(top, "--top")
        assert isinstance(k, int) and k >= 1 and k == top
    except InputError as e:
        assert str(e).startswith("--top must be a whole number >= 1") and "\n" not in str(e)
