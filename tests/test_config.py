"""Code tests for the typed params loader."""

from pathlib import Path

import pytest

from pipeline.config import ConfigError, Params, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_repo_params_load():
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.base.profile in ("smoke", "default", "full")


def test_unknown_top_level_section_is_named():
    with pytest.raises(ConfigError, match="'bogus'"):
        parse_params({"bogus": {}})


def test_unknown_nested_key_is_named():
    with pytest.raises(ConfigError, match=r"'base\.sede'"):
        parse_params({"base": {"sede": 1}})


@pytest.mark.parametrize("value", ["zero", 1.5, True, None])
def test_mistyped_int_is_named(value):
    with pytest.raises(ConfigError, match=r"base\.seed"):
        parse_params({"base": {"seed": value}})


def test_literal_profile_rejects_unknown_value():
    with pytest.raises(ConfigError, match="huge"):
        parse_params({"base": {"profile": "huge"}})


def test_int_is_accepted_for_float_and_defaults_fill_in():
    params = parse_params({"base": {"seed": 3}})
    assert params.base.seed == 3
    assert params.base.experiment == Params().base.experiment


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_cli_reports_bad_params(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "params.yaml"
    bad.write_text("base:\n  seeed: 1\n")
    from pipeline.cli import load
    import typer

    with pytest.raises(typer.Exit):
        load(bad)
    out = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "Usage" in out.stdout
