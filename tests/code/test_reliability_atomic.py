"""Outputs are written whole or not at all (issue 11): a process SIGKILLed while writing leaves
the previous file intact, never a truncated one a later stage would take for good."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.stage import write_atomic

ROOT = Path(__file__).resolve().parents[2]

# The writer stalls after its bytes are in the temporary file and before the rename (a slow disk's
# fsync): the moment a kill does the most harm to a plain open-and-write.
CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from pipeline.stage import write_atomic
    os.fsync = lambda fd: time.sleep(60)
    write_atomic(Path(sys.argv[1]), '{"status": "passed", "rows": [' + ','.join(['1'] * 200000) + ']}')
""")


def _kill(child: subprocess.Popen) -> None:
    """SIGKILL, as a crash would, and reap it (also when the test failed before)."""
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)


def test_kill_9_while_writing_leaves_the_previous_file(tmp_path):
    target = tmp_path / "reports" / "gate.json"
    write_atomic(target, json.dumps({"status": "failed"}))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(target)], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.time() + 60
        while not list(target.parent.glob(".gate.json.tmp-*")):
            assert child.poll() is None and time.time() < deadline
            time.sleep(0.02)
        tmp = next(target.parent.glob(".gate.json.tmp-*"))
        while tmp.stat().st_size < 400_000:  # the new content is in the temporary file
            time.sleep(0.02)
    finally:
        _kill(child)
    assert json.loads(target.read_text()) == {"status": "failed"}  # the old file, whole
    # At most a dot-file named with the dead writer's pid is left, which no stage reads.
    assert sorted(p.name for p in target.parent.iterdir() if not p.name.startswith(".")) == ["gate.json"]


def test_write_atomic_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "a" / "b.json"
    write_atomic(target, "one")
    write_atomic(target, b"two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["b.json"]


# A parquet table written through write_table (ingest's tables, which every later stage reads).
TABLE_CHILD = textwrap.dedent("""
    import os, sys, time
    import pandas as pd
    from pipeline.formats import write_table
    os.fsync = lambda fd: time.sleep(60)
    n = 200000
    write_table(sys.argv[1], "queries", pd.DataFrame({"query_id": range(n), "split": ["val"] * n,
                                                      "text": ["new caption"] * n, "image": ["x.jpg"] * n}))
""")


def _queries(text: str):
    import pandas as pd

    return pd.DataFrame({"query_id": [0], "split": ["val"], "text": [text], "image": ["a.jpg"]})


def test_kill_9_while_writing_a_table_leaves_the_previous_table(tmp_path):
    import pandas as pd

    from pipeline.formats import read_table, write_table

    prepared = tmp_path / "prepared"
    write_table(prepared, "queries", _queries("old"))
    target = next(prepared.iterdir())
    child = subprocess.Popen([sys.executable, "-c", TABLE_CHILD, str(prepared)], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.time() + 120
        while not list(prepared.glob(f".{target.name}.tmp-*")) or child.poll() is not None:
            assert child.poll() is None and time.time() < deadline
            time.sleep(0.05)
        tmp = next(prepared.glob(f".{target.name}.tmp-*"))
        size = -1
        while tmp.stat().st_size != size:  # pyarrow done: the writer now waits in fsync
            size = tmp.stat().st_size
            time.sleep(0.5)
    finally:
        _kill(child)
    assert read_table(prepared, "queries")["text"].tolist() == ["old"]  # the old table, whole


def test_every_file_a_later_stage_reads_is_written_atomically(tmp_path, monkeypatch):
    """The writers of the inter-stage files (tables, mapping, predictions, subtask models, gallery
    index, metrics) all go through atomic_path: a failure mid-write leaves the old file whole."""
    import numpy as np
    import torch

    from pipeline import schema
    from pipeline.formats import atomic, write_table
    from pipeline.mapping import Rule, save_mapping
    from pipeline.rank import GalleryIndex
    from pipeline.stage import write_metrics
    from pipeline.train.outputs import save_subtask, write_predictions

    written: list[str] = []
    real = atomic.atomic_path

    def recording(path):
        written.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(atomic, "atomic_path", recording)
    write_table(tmp_path, "queries", _queries("x"))
    save_mapping([Rule("female", "gender", "female")], tmp_path / "mapping.yaml")
    write_metrics(tmp_path / "metrics.json", {"a": 1.0})
    GalleryIndex(np.array(["a"]), np.array(["vehicle"]), {}).save(tmp_path / "gallery.npz")

    group = schema.GROUPS_BY_DOMAIN["vehicle"][0]

    class Res:
        name, groups, crop = "color", (group,), "full"
        net = torch.nn.Linear(2, 2)

    save_subtask(tmp_path / "models", Res, "tf_efficientnet_lite0", 1, (8, 8), ((0.5,) * 3, (0.5,) * 3))

    class Data:
        names = np.array(["a", "b"])
        groups = (group,)

        @staticmethod
        def index(split):
            return np.array([0, 1])

    write_predictions(tmp_path / "predictions", Data, {"val": {group.name: np.full((2, group.n_classes), 0.5)}})
    assert {"queries.parquet", "mapping.yaml", "metrics.json", "gallery.npz", "color.pt", "val.parquet"} <= set(written)
    assert not [p for p in tmp_path.rglob(".*tmp-*")]  # nothing left behind

    def crash(path):  # a writer that dies half-way
        Path(path).write_bytes(b"PAR1 trunc")
        raise OSError("disk full")

    before = (tmp_path / "metrics.json").read_bytes()
    with pytest.raises(OSError, match="disk full"), real(tmp_path / "metrics.json") as tmp:
        crash(tmp)
    assert (tmp_path / "metrics.json").read_bytes() == before and not list(tmp_path.glob(".metrics.json.tmp-*"))
