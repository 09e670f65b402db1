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
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert json.loads(target.read_text()) == {"status": "failed"}  # the old file, whole
    # At most a dot-file named with the dead writer's pid is left, which no stage reads.
    assert sorted(p.name for p in target.parent.iterdir() if not p.name.startswith(".")) == ["gate.json"]


def test_write_atomic_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "a" / "b.json"
    write_atomic(target, "one")
    write_atomic(target, b"two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["b.json"]
