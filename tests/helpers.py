"""Helpers the tests import (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    """A loopback port nobody listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served_model(model: str, env: dict[str, str], cwd: Path | None = None, start_s: float = 120) -> Iterator[int]:
    """``mlflow models serve -m model`` on a free loopback port, waited for (``/ping``) for up to
    ``start_s`` seconds; yields the port and stops the server's whole process group, also when the
    test fails. ``env`` is added to this process's environment."""
    import pytest

    port = free_port()
    bin_dir = Path(sys.executable).parent  # mlflow runs `uvicorn` from PATH
    env = {**os.environ, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port), "-w", "1"], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + start_s
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    proc.kill()
                    pytest.fail(f"server did not start:\n{proc.stdout.read().decode()[-3000:]}")
                time.sleep(1)
        yield port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=20)


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
