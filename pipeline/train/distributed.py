"""Several processes for one train stage: DistributedDataParallel over ``train.nproc`` ranks.

The ranks split the work (docs/training.md, "Several processes"): each runs the frozen prefix on
its shard of the images (``rank::world``) and the shards are all-gathered, so every rank holds
the whole cache in the original row order; each global batch is split across the ranks and DDP
averages the gradients. Rank 0 alone writes outputs, checkpoints and MLflow runs.

Two ways in. Under ``torchrun`` (several machines: the user runs it on each) the process finds
``WORLD_SIZE``/``RANK`` in its environment and joins the group. Otherwise, with ``train.nproc >
1``, the ``train`` command re-launches itself with :func:`launch` - a small stand-in for
``torchrun --standalone`` that sets the same variables but returns the ranks' own exit codes
(torchrun turns every failure into 1 and a traceback, which would hide train's exit 2 for bad
input and 3 for an interrupted run that resumes).

Rank and world come from the environment, so this module imports torch only where it needs it
(the CLI asks for the rank before anything heavy loads).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

log = logging.getLogger(__name__)


def rank() -> int:
    """This process's global rank (0 outside a distributed launch)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """How many processes train together (1 outside a distributed launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0: the one process that writes files and MLflow runs."""
    return rank() == 0


def launched() -> bool:
    """Inside torchrun or :func:`launch` (``WORLD_SIZE`` set): do not launch again."""
    return "WORLD_SIZE" in os.environ


def is_distributed() -> bool:
    """A process group of more than one rank is up."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def threads_per_rank() -> int:
    """The cores of this machine shared evenly by the ranks on it."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


@contextmanager
def process_group(device: str, timeout_s: float | None = None) -> Iterator[str]:
    """Join the process group the environment describes (no-op for one process); yield this
    rank's device (``cuda:<local rank>`` on GPUs). ``timeout_s`` bounds its collectives (torch's
    default when None). The group is destroyed on the way out, error or not."""
    if world_size() <= 1:
        yield device
        return
    import torch
    import torch.distributed as dist

    if device.startswith("cuda"):
        device = f"cuda:{local_rank()}"
        torch.cuda.set_device(device)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    extra: dict[str, Any] = {}
    if timeout_s is not None:
        import datetime

        extra["timeout"] = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group(backend, init_method="env://", **extra)
    log.info("rank %d/%d joined (%s, %s)", rank(), world_size(), backend, device)
    try:
        yield device
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()


def all_reduce_mean(value: Any) -> Any:
    """The mean of a tensor over the ranks (the tensor itself for one process)."""
    if not is_distributed():
        return value
    import torch.distributed as dist

    out = value.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()


def broadcast_state(module: Any) -> None:
    """Rank 0's parameters and buffers to every rank. DDP broadcasts buffers at the start of
    each forward, so after the last step the ranks' BatchNorm statistics still differ."""
    if not is_distributed():
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for t in module.state_dict().values():
            dist.broadcast(t, 0)


def all_gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order."""
    if not is_distributed():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_shards(store: Any, n: int, device: str, chunk: int = 2048) -> None:
    """Fill every row of ``store`` (``(n, ...)`` tensor or memory map) from the rank that owns it.

    Rank ``r`` computed rows ``r, r + world, ...``; after this every rank holds all ``n`` rows at
    their original index, copied bit for bit from the owner. Rows go ``chunk`` per rank at a time
    so that the transfer buffers stay small next to the cache itself.
    """
    import numpy as np
    import torch
    import torch.distributed as dist

    world, me = dist.get_world_size(), dist.get_rank()
    owned = [np.arange(r, n, world) for r in range(world)]
    longest = len(owned[0])
    comm = device if dist.get_backend() == "nccl" else "cpu"
    for s in range(0, longest, chunk):
        rows = owned[me][s:s + chunk]
        part = store[rows]
        part = torch.from_numpy(np.ascontiguousarray(part)) if isinstance(part, np.ndarray) else part
        buf = torch.zeros((min(chunk, longest - s), *part.shape[1:]), dtype=part.dtype, device=comm)
        buf[:len(rows)] = part.to(comm)
        parts = [torch.empty_like(buf) for _ in range(world)]
        dist.all_gather(parts, buf)
        for r in range(world):
            if r == me:
                continue
            theirs = owned[r][s:s + chunk]
            got = parts[r][:len(theirs)].cpu()
            store[theirs] = got.numpy() if isinstance(store, np.ndarray) else got


# ------------------------------------------------------------------ launching

def free_port() -> int:
    """A TCP port free now on this machine, for the ranks' rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: Sequence[str], nproc: int, poll_s: float = 0.2) -> int:
    """Run ``python <args>`` as ``nproc`` ranks on this machine (the environment torchrun sets);
    return 0 when all succeed, else the exit code of the first rank that failed.

    A rank that fails stops the others (they would wait in a collective until its timeout);
    SIGTERM, SIGHUP and Ctrl-C reach every rank, so rank 0 can end its MLflow run KILLED.
    """
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
            "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc), "GROUP_RANK": "0",
            "TORCHELASTIC_RUN_ID": "none"}
    # Each rank's share of the cores; torch reads it at start-up (train.threads overrides it).
    base.setdefault("OMP_NUM_THREADS", str(max(1, threads_per_rank() // nproc)))
    procs: list[subprocess.Popen] = []
    failed: int | None = None

    def stop(signum: int) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, lambda signum, _frame: stop(signum))
                for s in (signal.SIGTERM, signal.SIGHUP)}
    log.info("launching %d ranks: %s %s", nproc, sys.executable, " ".join(args))
    try:
        for r in range(nproc):
            env = {**base, "RANK": str(r), "LOCAL_RANK": str(r), "ROLE_RANK": str(r)}
            if r:
                env["TQDM_DISABLE"] = "1"  # one set of progress bars, rank 0's
            procs.append(subprocess.Popen([sys.executable, *args], env=env))
        while any(p.poll() is None for p in procs):
            bad = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if bad and failed is None:
                failed = bad[0]
                log.error("a rank exited %d: stopping the others", failed)
                stop(signal.SIGTERM)
            time.sleep(poll_s)
        codes = [p.returncode for p in procs]
    except KeyboardInterrupt:
        stop(signal.SIGINT)
        codes = [p.wait() for p in procs]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if failed is None:
        failed = next((c for c in codes if c != 0), 0)
    # A signal kill reads as -N from Popen; a shell says 128 + N.
    return 128 - failed if failed < 0 else failed
