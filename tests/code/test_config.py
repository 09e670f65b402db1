"""Code tests for the typed params (pipeline/config.py): every key set once, checked on load."""

from pathlib import Path

import pytest

from pipeline.config import ConfigError, Params, load_params, merge, parse_params, read_yaml

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params.yaml"


def with_(overrides: dict) -> Params:
    return load_params(PARAMS, overrides)


def test_repo_params_load():
    params = load_params(PARAMS)
    assert isinstance(params, Params)
    assert params.base.profile in ("smoke", "default", "full")


def test_unknown_top_level_section_is_named():
    with pytest.raises(ConfigError, match="'bogus'"):
        with_({"bogus": {}})


def test_unknown_nested_key_is_named_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"'base\.sede'.*known keys of base: \[.*'seed'"):
        with_({"base": {"sede": 1}})


@pytest.mark.parametrize("value", ["zero", 1.5, True, None])
def test_mistyped_int_is_named(value):
    with pytest.raises(ConfigError, match=r"base\.seed"):
        with_({"base": {"seed": value}})


def test_literal_profile_rejects_unknown_value_and_names_the_allowed_ones():
    with pytest.raises(ConfigError, match="base.profile.*'smoke', 'default' or 'full'.*huge"):
        with_({"base": {"profile": "huge"}})


def test_int_is_accepted_for_float():
    assert with_({"train": {"lr": 1}}).train.lr == 1.0


def test_a_missing_key_is_named_not_defaulted():
    data = read_yaml(PARAMS)
    del data["train"]["lr"]
    with pytest.raises(ConfigError, match=r"missing key 'train\.lr'"):
        parse_params(data)


@pytest.mark.parametrize("overrides, pattern", [
    ({"train": {"batch_size": 0}}, r"train\.batch_size.*greater than or equal to 1"),
    ({"train": {"cache_batch_size": -1}}, r"train\.cache_batch_size"),
    ({"validate": {"decode_fraction": 7.0}}, r"validate\.decode_fraction.*less than or equal to 1"),
    ({"validate": {"min_pixel_std": -1}}, r"validate\.min_pixel_std"),
    ({"validate": {"min_width": 500, "max_width": 100}}, r"min_width \(500\) is above max_width"),
    ({"register": {"margin": -0.1}}, r"register\.margin"),
    ({"retrieve": {"distance": "cosine"}}, r"retrieve\.distance.*'published', 'paper' or 'full'"),
    ({"retrieve": {"members": {"mobilenetv2_100": 0.0}}}, r"retrieve\.members\.mobilenetv2_100.*greater than 0"),
    ({"train": {"trainable": {"pedestrian": "most"}}}, r"train\.trainable\.pedestrian.*'full' or 'linear'"),
    ({"train": {"crops": {"hat": "side"}}}, r"train\.crops\.hat.*'top'"),
    ({"train": {"input_size": {"pedestrian": [96]}}}, r"train\.input_size\.pedestrian"),
    ({"train": {"epochs": {"bus": 3}}}, r"train\.epochs\.bus"),
    ({"mapping": {"max_ngram": 0}}, r"mapping\.max_ngram"),
    ({"mapping": {"min_precision": 1.5}}, r"mapping\.min_precision"),
])
def test_out_of_range_and_unknown_choices_are_refused(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        with_(overrides)


def test_a_profile_block_replaces_its_sections_values():
    default, smoke = with_({"base": {"profile": "default"}}), with_({"base": {"profile": "smoke"}})
    raw = read_yaml(PARAMS)["validate"]
    assert default.validate.min_class_examples == raw["min_class_examples"]
    assert smoke.validate.min_class_examples == raw["profiles"]["smoke"]["min_class_examples"]
    assert smoke.validate.max_width == default.validate.max_width  # only the named keys change


def test_a_profile_block_may_only_name_keys_of_its_section():
    with pytest.raises(ConfigError, match=r"validate\.profiles\.smoke\.bogus"):
        with_({"validate": {"profiles": {"smoke": {"bogus": 1}}}})
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        with_({"validate": {"profiles": {"huge": {}}}})


def test_yaml_syntax_error_is_one_line_with_its_line_number(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("base:\n  seed: 0\n   profile: [\n")
    with pytest.raises(ConfigError, match=r"params\.yaml line 3, column \d+: YAML syntax error") as e:
        load_params(bad)
    assert "\n" not in str(e.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_merge_is_deep_and_does_not_touch_its_inputs():
    a = {"x": {"y": 1, "z": 2}}
    assert merge(a, {"x": {"y": 3}}) == {"x": {"y": 3, "z": 2}} and a == {"x": {"y": 1, "z": 2}}


def test_sections_are_read_only():
    params = load_params(PARAMS)
    with pytest.raises(Exception):
        params.train.lr = 5.0


def test_cli_reports_bad_params(tmp_path):
    import subprocess
    import sys

    import typer

    from pipeline.cli import load

    bad = tmp_path / "params.yaml"
    bad.write_text("base:\n  seeed: 1\n")
    with pytest.raises(typer.Exit):
        load(bad)
    out = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "Usage" in out.stdout
    out = subprocess.run([sys.executable, "-m", "pipeline", "ingest", "--release", "x", "--prepared", "y",
                          "--report", "z.json", "--params", str(bad)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "unknown key 'base.seeed'" in out.stderr
