"""Outputs written whole or not at all (docs/reliability.md): every file a later stage reads goes
through :func:`atomic_path` or :func:`write_atomic`."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (``.<name>.tmp-<pid><suffix>``) for any writer - pyarrow,
    ``torch.save``, ``np.savez``, matplotlib - then flushed to disk and renamed over ``path`` when
    the block ends; removed if it raises. A process killed mid-write leaves the previous file (or
    none), never a truncated one that a later stage would take for good."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix stays last: np.savez appends ".npz" to a name without it.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write ``path`` whole or not at all (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)
