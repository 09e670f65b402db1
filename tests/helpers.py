"""Helpers the tests import (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path


def retrieve_io(world: Path):
    """The retrieve stage's files in a ``retrieval_world``, laid out as dvc.yaml lays them out."""
    from pipeline.retrieve import RetrieveIO

    data = world / "data"
    return RetrieveIO(data / "prepared", world / "release", data / "predictions", data / "mapping" / "mapping.yaml",
                      data / "retrieval")


def register_io(world: Path):
    """The register stage's files in a ``retrieval_world``."""
    from pipeline.registry import RegisterIO

    data = world / "data"
    return RegisterIO(data / "retrieval", data / "mapping" / "mapping.yaml",
                      world / "reports" / "validation" / "gate.json", data / "prepared" / "queries.parquet",
                      world / "reports" / "register.json")
