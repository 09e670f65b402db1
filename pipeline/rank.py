"""Ranking a gallery of attribute probabilities for parsed captions (numpy only).

This is the serving-time core, shared by the ``retrieve`` stage and the MLflow pyfunc model, so it
imports nothing heavier than numpy at module level (``threadpoolctl`` and ``faiss`` are optional
and imported where used).

**Every distance form is a sum of per-group terms**, so ranking is one matrix product. For a group
``g`` with probabilities ``p_g`` of an image, and a target class ``v``:

- ``published`` (the authors' code): the cost of stating ``v`` is ``1 - p_g[v]``.
- ``paper`` (eq. 1, masked squared Euclidean): ``||e_v - p_g||^2`` (``e_v`` the one-hot of ``v``).
- ``full`` (the "no keywords-only" ablation): ``||t_g - p_g||^2`` over *every* group; an unstated
  group targets what the paper's bit code means when a keyword is absent: the group's "absent"
  class (``male``, ``no``, ``none`` - its one value without a bit) where it has one, else the
  all-zero vector (age, orientation, sleeve and the vehicle groups), which costs ``sum p_g**2``.

:func:`gallery_terms` gives the term matrix ``T`` (N, K): one column per (group, value), plus for
``full`` one "zero target" column per group without an absent class. :func:`query_terms` gives a
0/1 row ``a`` per query selecting one column per costed group, and ``c = 0``; the distances are
``c + a @ T.T``. The terms are computed in float64 from the probabilities, are non-negative and
are rounded to a power-of-two grid (:func:`term_grid`, 1.9e-6 for pedestrians) on which every
distance is an *exact* float32 sum: the same image gets the same distance wherever it sits and
whichever BLAS kernel adds it up (FAISS's included), so ties are real ties. The former ``[P, S]``
augmentation computed ``#stated - 2 p + S``, whose cancellation blurred near-zero distances by
about 1e-6 in a way that depended on the kernel; it also had 12 more columns for pedestrians
(42 instead of 30; vehicles 85 instead of 82).

**Exact top-k** (:func:`top_k`) works on any ``a``, ``c`` and gallery. Per (query block, gallery
chunk) the chunk's distances are computed slice by slice (BLAS sgemm, float32) while a running
minimum over slices is folded in cache; a chunk's columns ``j, j + W, ..., j + 15 W`` form a
*group*, and only groups whose minimum can still beat the query's current k-th distance are looked
at (after the first chunk, about k * chunk / seen groups per query). Candidates are kept as
``(distance, gallery index)`` packed into one sortable uint64, so ties are broken by gallery index
exactly, also at the k-th place. Work is spread over the CPU cores with Python threads (numpy and
BLAS release the GIL; BLAS is held to one thread each via ``threadpoolctl`` when it is installed).
Queries that select nothing (a caption stating nothing in its domain) are at distance ``c`` from
every image and get the first k images.

**Approximate path** (:class:`ApproximateIndex`, needs ``faiss-cpu``): FAISS IVF-Flat on the same
term matrix for galleries far above a million images; see docs/retrieval.md for where it pays.
"""

from __future__ import annotations

import contextlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import numpy as np

from pipeline import schema

Form = Literal["published", "paper", "full"]
FORMS: tuple[str, ...] = ("published", "paper", "full")


def _check_form(form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"unknown distance form {form!r}; expected one of {list(FORMS)}")


def group_offsets(groups: Sequence[schema.Group]) -> dict[str, int]:
    """First column of each group in the flat probability vector."""
    out, at = {}, 0
    for g in groups:
        out[g.name] = at
        at += g.n_classes
    return out


def absent_index(group: schema.Group) -> int | None:
    """The class meaning "none of the group's bits is set" (``male``, ``no``, ``none``), if any.

    Only a bit-coded group with exactly one bit-less value has one; vehicle groups carry no bits
    at all, so they have none (their unstated target is the zero vector).
    """
    return group.bits.index(None) if group.bits.count(None) == 1 else None


def query_vectors(attributes: Sequence[Mapping[str, str]], groups: Sequence[schema.Group]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One-hot targets and masks (both (Q, D) float32) of stated attributes.

    Groups outside ``groups`` (e.g. a vehicle word in a pedestrian caption) are ignored; an unknown
    value raises ``KeyError`` naming the group.
    """
    offsets = group_offsets(groups)
    by_name = {g.name: g for g in groups}
    dim = sum(g.n_classes for g in groups)
    onehot = np.zeros((len(attributes), dim), dtype=np.float32)
    mask = np.zeros_like(onehot)
    for i, attrs in enumerate(attributes):
        for name, value in attrs.items():
            if name in by_name:
                g, at = by_name[name], offsets[name]
                onehot[i, at + g.index(value)] = 1.0
                mask[i, at:at + g.n_classes] = 1.0
    return onehot, mask


def full_targets(onehot: np.ndarray, mask: np.ndarray, groups: Sequence[schema.Group]) -> np.ndarray:
    """Targets over every group: stated values, else the group's absent class, else zeros."""
    target = onehot.copy()
    offsets = group_offsets(groups)
    for g in groups:
        absent = absent_index(g)
        if absent is not None:
            at = offsets[g.name]
            unstated = mask[:, at] == 0
            target[unstated, at + absent] = 1.0
    return target


def term_columns(groups: Sequence[schema.Group], form: Form) -> list[tuple[str, int]]:
    """The columns of the term matrix: ``(group, class index)``, class ``-1`` = the zero target."""
    _check_form(form)
    cols = []
    for g in groups:
        cols += [(g.name, v) for v in range(g.n_classes)]
        if form == "full" and absent_index(g) is None:
            cols.append((g.name, -1))
    return cols


def column_groups(groups: Sequence[schema.Group], form: Form) -> list[int]:
    """The group (its position in ``groups``) of each :func:`term_columns` column, for
    :func:`top_k`'s ``column_groups``."""
    at = {g.name: i for i, g in enumerate(groups)}
    return [at[name] for name, _ in term_columns(groups, form)]


def query_terms(onehot: np.ndarray, mask: np.ndarray, groups: Sequence[schema.Group], form: Form
                ) -> tuple[np.ndarray, np.ndarray]:
    """The 0/1 query rows ``a`` (Q, K) over :func:`term_columns` and constants ``c`` (Q,) of a form."""
    _check_form(form)
    onehot = np.asarray(onehot, dtype=np.float32)
    mask = np.asarray(mask, dtype=np.float32)
    target = full_targets(onehot, mask, groups) if form == "full" else onehot
    offsets = group_offsets(groups)
    parts = []
    for g in groups:
        at = offsets[g.name]
        parts.append(target[:, at:at + g.n_classes])
        if form == "full" and absent_index(g) is None:
            parts.append(1.0 - mask[:, at:at + 1])  # unstated: the zero-target column
    a = np.hstack(parts).astype(np.float32) if parts else np.zeros((len(onehot), 0), np.float32)
    return a, np.zeros(len(onehot), dtype=np.float32)


def term_grid(groups: Sequence[schema.Group], form: Form) -> float:
    """The step (a power of two) that :func:`gallery_terms` rounds terms to.

    A query adds one term per group, each at most 1 (``published``) or 2, so a distance is at
    most ``G * max_term``; on a grid of step ``2**-e`` with ``G * max_term * 2**e < 2**24`` every
    such sum is exact in float32, whatever order a BLAS kernel adds in. The same image therefore
    always gets the same distance (wherever it sits in a chunk, in any engine, FAISS included),
    and images at equal distance are really tied, which is what makes ties by gallery index
    well-defined. The step is 2**-19 (1.9e-6) for 12 pedestrian groups, 2**-21 for 3 vehicle ones.
    """
    _check_form(form)
    most = max(1, len(groups)) * (1.0 if form == "published" else 2.0)
    return 2.0 ** -math.floor(math.log2(2**24 / most))


def gallery_terms(probs: np.ndarray, groups: Sequence[schema.Group], form: Form) -> np.ndarray:
    """The term matrix ``T`` (N, K) float32 over :func:`term_columns`: computed in float64 and
    rounded to :func:`term_grid`, so that distances are exact float32 sums."""
    _check_form(form)
    p = np.asarray(probs, dtype=np.float64)
    parts, at = [], 0
    for g in groups:
        pg = p[:, at:at + g.n_classes]
        at += g.n_classes
        if form == "published":
            parts.append(1.0 - pg)
            continue
        sq = (pg * pg).sum(axis=1, keepdims=True)
        parts.append((1.0 - pg) ** 2 + (sq - pg * pg))  # ||e_v - p_g||^2 without cancellation
        if form == "full" and absent_index(g) is None:
            parts.append(sq)
    if not parts:
        return np.zeros((len(p), 0), np.float32)
    step = term_grid(groups, form)
    return (np.rint(np.hstack(parts) / step) * step).astype(np.float32)


def distances(onehot: np.ndarray, mask: np.ndarray, probs: np.ndarray,
              groups: Sequence[schema.Group], form: Form) -> np.ndarray:
    """The full (Q, N) distance matrix (small inputs and tests; ranking uses :func:`top_k`)."""
    a, c = query_terms(onehot, mask, groups, form)
    return c[:, None] + a @ gallery_terms(probs, groups, form).T


# --------------------------------------------------------------------------- exact top-k

_SLICES = 16        # a chunk is 16 slices of W gallery rows; a group = one row of each slice
_SUPER = 32         # first chunk: k-th smallest of 32 super-group minima bounds the k-th distance
_CAP = 8            # more than _CAP * k candidate groups in a chunk (mass ties): take the row whole
_SIGN = np.uint32(0x80000000)
_LOW = np.uint64(0xFFFFFFFF)


def _keys(d: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Order-preserving uint64 keys of (float32 distance, gallery index): sorting them sorts by
    distance, then index. ``+ 0`` turns -0.0 into +0.0 so that equal distances have equal keys."""
    u = (np.asarray(d, dtype=np.float32) + np.float32(0)).view(np.uint32)
    u = np.where(u & _SIGN, ~u, u | _SIGN)
    return (u.astype(np.uint64) << np.uint64(32)) | np.asarray(index).astype(np.uint64)


def _key_distance(key: np.ndarray) -> np.ndarray:
    u = (key >> np.uint64(32)).astype(np.uint32)
    return np.where(u & _SIGN, u & ~_SIGN, ~u).view(np.float32)


def _key_index(key: np.ndarray) -> np.ndarray:
    return (key & _LOW).astype(np.int64)


_EMPTY = _keys(np.float32(np.inf), np.uint64(0xFFFFFFFF))[()]  # an unfilled slot: +inf, last


def _slice_width(n: int, chunk: int) -> int:
    """Rows per slice for a gallery range of n rows: chunks of about ``chunk`` rows, balanced so
    that the last one is not mostly padding (a multiple of _SUPER once it is large)."""
    per = math.ceil(n / max(1, math.ceil(n / max(1, chunk))))
    w = max(1, math.ceil(per / _SLICES))
    return -(-w // _SUPER) * _SUPER if w >= 2 * _SUPER else w


def _first_bound(gmin: np.ndarray, k: int) -> np.ndarray:
    """An upper bound of each row's k-th smallest distance in a chunk, from its group minima:
    k disjoint groups (or super-groups) with minima <= t hold k distances <= t."""
    q, w = gmin.shape
    if w % _SUPER == 0 and w >= 2 * _SUPER and _SUPER > 2 * k:
        sup = gmin[:, :_SUPER].copy()
        for i in range(1, w // _SUPER):
            np.minimum(sup, gmin[:, i * _SUPER:(i + 1) * _SUPER], out=sup)
        return np.partition(sup, k - 1, axis=1)[:, k - 1]
    if w > k:
        return np.partition(gmin, k - 1, axis=1)[:, k - 1]
    return np.full(q, np.inf, np.float32)


def _merge(best: np.ndarray, thr: np.ndarray, rows: np.ndarray, keys: np.ndarray,
           presorted: bool = False) -> None:
    """Fold candidate keys into each row's k best (in place) and update the rows' k-th distance."""
    if rows.size == 0:
        return
    k = best.shape[1]
    if not presorted:
        order = np.argsort(rows, kind="stable")
        rows, keys = rows[order], keys[order]
    counts = np.bincount(rows, minlength=len(best))
    touched = np.flatnonzero(counts)
    n = counts[touched]
    starts = np.cumsum(n) - n
    dense = np.full((len(touched), k + int(n.max())), _EMPTY, dtype=np.uint64)
    dense[:, :k] = best[touched]
    dense[np.repeat(np.arange(len(touched)), n), k + np.arange(len(rows)) - np.repeat(starts, n)] = keys
    kept = np.partition(dense, k - 1, axis=1)[:, :k]
    best[touched] = kept
    thr[touched] = _key_distance(kept.max(axis=1))


def _scan(a: np.ndarray, gallery: np.ndarray, g0: int, g1: int, k: int, chunk: int,
          cols: np.ndarray | None = None) -> np.ndarray:
    """Keys (Q, k) of the k nearest rows of ``gallery[g0:g1]`` for each row of ``a`` (unordered);
    ``a`` holds only the gallery columns ``cols`` (all when None).

    A chunk is _SLICES slices of w rows; group j of a query is element j of every slice. The
    minimum of each quarter of a group (4 slices) is folded in while its slice is in cache; a
    group is a candidate when its minimum can still enter the k best, and then only its quarters
    that can are read back.
    """
    q = a.shape[0]
    w = _slice_width(g1 - g0, chunk)
    width = _SLICES * w
    quarter = _SLICES // 4
    buf = np.empty((_SLICES, q, w), dtype=np.float32)  # slices contiguous: GEMM and fold stream
    flat = buf.reshape(-1)
    qmin = np.empty((4, q, w), dtype=np.float32)  # minimum over each quarter of each group
    qflat = qmin.reshape(-1)
    gmin = np.empty((q, w), dtype=np.float32)
    best = np.full((q, k), _EMPTY, dtype=np.uint64)
    thr = np.full(q, np.inf, dtype=np.float32)  # the k-th kept distance; later rows must beat it
    below = np.float32(-np.inf)
    q_steps = np.arange(4) * (q * w)
    s_steps = np.arange(quarter) * (q * w)
    for c0 in range(g0, g1, width):
        m = min(width, g1 - c0)
        for s in range(_SLICES):
            lo, hi = c0 + s * w, min(c0 + (s + 1) * w, g1)
            out = buf[s]
            n = max(hi - lo, 0)
            if n:
                part = gallery[lo:hi] if cols is None else np.take(gallery[lo:hi], cols, axis=1)
                np.matmul(a, part.T, out=out[:, :n])
            if n < w:
                out[:, n:] = np.inf
            dest = qmin[s // quarter]
            if s % quarter == 0:
                np.copyto(dest, out)
            else:  # folded while the slice is still in cache
                np.minimum(dest, out, out=dest)
        np.minimum(qmin[0], qmin[1], out=gmin)
        np.minimum(gmin, qmin[2], out=gmin)
        np.minimum(gmin, qmin[3], out=gmin)
        # Later chunks hold larger indices, so a distance equal to the k-th kept one cannot enter.
        bound = np.nextafter(thr, below)
        if c0 == g0:
            bound = np.minimum(bound, _first_bound(gmin, k))
        hits = np.flatnonzero(gmin <= bound[:, None])  # candidate groups, as row * w + j
        rows = hits // w
        counts = np.bincount(rows, minlength=q)
        heavy = np.flatnonzero(counts > _CAP * k)
        if heavy.size:
            keep = counts[rows] <= _CAP * k
            hits, rows = hits[keep], rows[keep]
        # Quarters of the candidate groups that can enter: row r, group j, quarter u.
        qv = np.take(qflat, hits[:, None] + q_steps)
        h_i, u = np.divmod(np.flatnonzero(qv <= bound[rows, None]), 4)
        rows = rows[h_i]
        # Their members: slice s = quarter * u + t, at s * q * w + r * w + j.
        at = (hits[h_i] + u * (quarter * q * w))[:, None] + s_steps
        vals = np.take(flat, at)
        sel = np.flatnonzero(vals <= bound[rows, None])
        cand_rows = rows[sel // quarter]  # still in row order
        pos = at.reshape(-1)[sel]  # -> column s * w + j of the chunk
        cand_keys = _keys(vals.reshape(-1)[sel], c0 + (pos // (q * w)) * w + pos % w)
        if heavy.size:  # rows with mass ties: their whole chunk row, exactly
            sub = np.moveaxis(buf[:, heavy, :], 1, 0).reshape(len(heavy), width)
            chunk_cols = np.arange(width)
            hk = _keys(sub, c0 + chunk_cols)
            hk[(sub >= thr[heavy, None]) | (chunk_cols >= m)] = _EMPTY
            hk = np.partition(hk, min(k, width) - 1, axis=1)[:, :k]
            real = hk != _EMPTY
            cand_rows = np.concatenate([cand_rows, np.broadcast_to(heavy[:, None], hk.shape)[real]])
            cand_keys = np.concatenate([cand_keys, hk[real]])
        _merge(best, thr, cand_rows, cand_keys, presorted=not heavy.size)
    return best


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[bool]:
    """Hold BLAS to one thread while our own threads run (yields False when that is impossible)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield False
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield True


def top_k(a: np.ndarray, c: np.ndarray, gallery: np.ndarray, k: int = 10, chunk: int = 4096,
          query_block: int = 1024, workers: int | None = None,
          column_groups: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances (Q, k') of the k nearest gallery rows, nearest first (k' = min(k, N)).

    Distances are ``c + a @ gallery.T`` (float32); ``a``/``c`` from :func:`query_terms`,
    ``gallery`` from :func:`gallery_terms`, or any finite matrices. Exact: equal distances are
    ordered by gallery index, also where they straddle the k-th place. Memory is bounded by
    ``query_block x chunk`` floats per worker thread; ``workers`` defaults to the usable cores.

    A query block multiplies only the columns some of its queries use. With ``column_groups``
    (the group of each column, e.g. from :func:`term_columns`), queries are first ordered by
    which groups they state, largest groups first, so that blocks share unused groups - a
    caption states a few groups, and their columns are all the product needs.
    """
    a = np.ascontiguousarray(a, dtype=np.float32)
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    c = np.asarray(c, dtype=np.float32).reshape(-1)
    n_q, n_g = a.shape[0], gallery.shape[0]
    k = max(0, min(k, n_g))
    idx = np.broadcast_to(np.arange(k, dtype=np.int64), (n_q, k)).copy()
    dist = np.zeros((n_q, k), dtype=np.float32)
    if k == 0 or n_q == 0:
        return idx, dist
    if a.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries have {a.shape[1]} columns, the gallery {gallery.shape[1]}")
    if n_g >= 2**32:
        raise ValueError("galleries of 2**32 images or more are not supported (index packing)")
    if not (np.isfinite(a).all() and np.isfinite(gallery).all()):
        raise ValueError("queries and gallery must be finite")
    live = np.flatnonzero(a.any(axis=1))  # an all-zero row is at distance c from every image
    if live.size:
        order = live if column_groups is None else live[_by_groups(a[live], column_groups)]
        keys = _search(a[order], gallery, k, chunk, query_block, workers or _cpu_count())
        idx[order], dist[order] = _key_index(keys), _key_distance(keys)
    dist += c[:, None]
    return idx, dist


def _by_groups(a: np.ndarray, column_groups: Sequence[int]) -> np.ndarray:
    """A stable order of the query rows by the groups they use, the widest group as first key."""
    col_group = np.asarray(column_groups)
    if col_group.shape != (a.shape[1],):
        raise ValueError(f"column_groups has {col_group.size} entries for {a.shape[1]} columns")
    ids, width = np.unique(col_group, return_counts=True)
    used = np.stack([(a[:, col_group == g] != 0).any(axis=1) for g in ids], axis=1)
    widest_last = np.argsort(width, kind="stable")  # np.lexsort's last key is the primary one
    return np.lexsort([used[:, j] for j in widest_last])


def _search(a: np.ndarray, gallery: np.ndarray, k: int, chunk: int, query_block: int,
            workers: int) -> np.ndarray:
    """Sorted keys (Q, k): query blocks (and, for few queries, gallery parts) over worker threads."""
    with contextlib.ExitStack() as stack:
        if workers > 1 and not stack.enter_context(_single_threaded_blas()):
            workers = 1  # no threadpoolctl: one thread of ours, BLAS threads as they are
        n_q, n_g = len(a), len(gallery)
        qb = max(1, min(query_block, math.ceil(n_q / workers)))
        blocks = [(q0, min(q0 + qb, n_q)) for q0 in range(0, n_q, qb)]
        # Few queries: split the gallery too, so that every thread has work.
        parts = max(1, min(workers // len(blocks), n_g // 4096)) if len(blocks) < workers else 1
        edges = np.linspace(0, n_g, parts + 1).astype(np.int64)
        jobs = [(q0, q1, int(edges[p]), int(edges[p + 1])) for q0, q1 in blocks for p in range(parts)]

        def run(job: tuple[int, int, int, int]) -> np.ndarray:
            q0, q1, g0, g1 = job
            block = a[q0:q1]
            used = np.flatnonzero(block.any(axis=0))  # columns no query of the block needs add 0
            if len(used) == block.shape[1]:
                return _scan(block, gallery, g0, g1, k, chunk)
            return _scan(np.ascontiguousarray(block[:, used]), gallery, g0, g1, k, chunk, used)

        if workers > 1 and len(jobs) > 1:
            with ThreadPoolExecutor(min(workers, len(jobs))) as pool:
                found = list(pool.map(run, jobs))
        else:
            found = [run(job) for job in jobs]
    out = np.empty((n_q, k), dtype=np.uint64)
    for b, (q0, q1) in enumerate(blocks):
        keys = np.concatenate(found[b * parts:(b + 1) * parts], axis=1)
        out[q0:q1] = np.sort(keys, axis=1)[:, :k]
    if (out == _EMPTY).any():  # cannot happen for k <= N; guards the packing
        raise AssertionError("top_k left a slot unfilled")
    return out


# --------------------------------------------------------------------------- approximate path

def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError as e:
        raise ImportError("the approximate path needs faiss-cpu (pip install faiss-cpu); the exact "
                          "top_k needs only numpy") from e
    return faiss


class ApproximateIndex:
    """FAISS IVF-Flat over a gallery's term matrix: the approximate path for very large galleries.

    k-means (L2) cells over the term rows; a query scans the ``nprobe`` cells whose centroids it
    is nearest to by its own distance (inner product with ``-a``), so results are approximate:
    check recall against :func:`top_k` with :meth:`calibrate`. Build cost grows with
    ``nlist`` (default ``sqrt(N)``); the k-means sample is ``64 nlist`` rows.
    """

    def __init__(self, gallery: np.ndarray, nlist: int | None = None, seed: int = 0,
                 niter: int = 10) -> None:
        faiss = _import_faiss()
        g = np.ascontiguousarray(gallery, dtype=np.float32)
        n, dim = g.shape
        self.nlist = int(nlist or max(1, min(n // 39, round(math.sqrt(n)))))
        rng = np.random.default_rng(seed)
        sample = g[np.sort(rng.choice(n, min(n, 64 * self.nlist), replace=False))]
        kmeans = faiss.Kmeans(dim, self.nlist, niter=niter, seed=seed, verbose=False)
        kmeans.train(sample)
        self._quantizer = faiss.IndexFlatL2(dim)  # kept: the IVF index refers to it
        self._quantizer.add(kmeans.centroids)
        self.index = faiss.IndexIVFFlat(self._quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.add(g)
        self.nprobe = 1

    def search(self, a: np.ndarray, c: np.ndarray, k: int = 10, nprobe: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate (indices, distances) like :func:`top_k`; fewer than k found pad with -1/inf."""
        self.index.nprobe = int(min(self.nlist, nprobe or self.nprobe))
        sim, idx = self.index.search(np.ascontiguousarray(-np.asarray(a, np.float32)), k)
        dist = np.where(idx >= 0, np.asarray(c, np.float32)[:, None] - sim, np.inf).astype(np.float32)
        order = np.lexsort((np.where(idx >= 0, idx, np.iinfo(np.int64).max), dist), axis=1)
        return np.take_along_axis(idx, order, 1), np.take_along_axis(dist, order, 1)

    def calibrate(self, a: np.ndarray, c: np.ndarray, exact_dist: np.ndarray, target: float = 0.99,
                  k: int = 10) -> tuple[int, float]:
        """Smallest ``nprobe`` whose :func:`recall_at_k` against ``exact_dist`` (the :func:`top_k`
        distances of the same sample queries) reaches ``target`` (doubling, then bisection); sets
        and returns it with the recall it reached."""

        def recall(nprobe: int) -> float:
            return recall_at_k(self.search(a, c, k, nprobe)[1], exact_dist)

        hi, rec_hi = 1, recall(1)
        while rec_hi < target and hi < self.nlist:
            hi = min(2 * hi, self.nlist)
            rec_hi = recall(hi)
        lo = hi // 2  # below target (or 0)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            rec_mid = recall(mid)
            if rec_mid >= target:
                hi, rec_hi = mid, rec_mid
            else:
                lo = mid
        self.nprobe = hi
        return hi, rec_hi


def recall_at_k(found_dist: np.ndarray, exact_dist: np.ndarray) -> float:
    """Recall@k that counts ties as hits: the share of the k returned images whose distance is
    within the exact k-th distance (any of them could stand in a correct top-k).

    Distances from :func:`gallery_terms` are exact float32 sums in every engine, so equal means
    equal; comparing indices instead would count a tied image from another cell as a miss.
    """
    if exact_dist.size == 0:
        return 1.0
    kth = exact_dist[:, -1:]
    return float(np.minimum((found_dist <= kth).sum(axis=1), exact_dist.shape[1]).sum() / exact_dist.size)


# --------------------------------------------------------------------------- the gallery index

@dataclass
class GalleryIndex:
    """A routed gallery: every image's name and domain, and per domain its probability matrix.

    ``probs[d]`` is (n_d, D_d) over ``schema.prob_columns(GROUPS_BY_DOMAIN[d])`` for the images
    ``names[domain == d]``, in that order.
    """

    names: np.ndarray  # (N,) str
    domain: np.ndarray  # (N,) str, the router's decision
    probs: dict[str, np.ndarray]
    _terms: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def image_names(self, d: str) -> np.ndarray:
        """Names of the images routed to domain ``d``, in the order of ``probs[d]``."""
        return self.names[self.domain == d]

    def terms(self, d: str, form: Form) -> np.ndarray:
        """The term matrix of domain ``d`` for a distance form (computed once per index)."""
        if (d, form) not in self._terms:
            groups = schema.GROUPS_BY_DOMAIN[d]
            probs = self.probs.get(d, np.zeros((0, sum(g.n_classes for g in groups)), np.float32))
            self._terms[(d, form)] = gallery_terms(probs, groups, form)
        return self._terms[(d, form)]

    def save(self, path: str | Path) -> None:
        arrays = {"names": self.names.astype(str), "domain": self.domain.astype(str)}
        arrays.update({f"probs_{d}": p.astype(np.float32) for d, p in self.probs.items()})
        from pipeline.formats.atomic import atomic_path

        with atomic_path(Path(path)) as tmp:
            np.savez_compressed(tmp, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "GalleryIndex":
        with np.load(path, allow_pickle=False) as z:
            probs = {k[len("probs_"):]: z[k] for k in z.files if k.startswith("probs_")}
            return cls(names=z["names"], domain=z["domain"], probs=probs)


@dataclass
class Ranking:
    """Per query: the routed domain, the ranked names and their distances."""

    domain: list[str]
    names: list[list[str]]
    distances: list[list[float]]


def rank(index: GalleryIndex, queries: Sequence[tuple[str, Mapping[str, str]]], form: Form = "published",
         k: int = 10, chunk: int = 4096) -> Ranking:
    """Rank the routed gallery for ``(domain, attributes)`` queries (e.g. parsed captions).

    A query goes to the images the router gave its domain. An ``unknown`` caption states no
    group, so every image of the whole gallery is at distance 0 and it gets the first k images in
    gallery order (deterministic, and as good as any other choice with nothing stated).
    """
    _check_form(form)
    n = len(queries)
    out_names: list[list[str]] = [[] for _ in range(n)]
    out_dist: list[list[float]] = [[] for _ in range(n)]
    domains = [d if d in schema.DOMAINS else "unknown" for d, _ in queries]
    for d in schema.DOMAINS:
        rows = [i for i in range(n) if domains[i] == d]
        if not rows:
            continue
        groups = schema.GROUPS_BY_DOMAIN[d]
        names = index.image_names(d)
        # Rank each distinct attribute set once.
        keys = [tuple(sorted(queries[i][1].items())) for i in rows]
        unique = list(dict.fromkeys(keys))
        where = {key: j for j, key in enumerate(unique)}
        onehot, mask = query_vectors([dict(key) for key in unique], groups)
        a, c = query_terms(onehot, mask, groups, form)
        idx, dist = top_k(a, c, index.terms(d, form), k=k, chunk=chunk,
                          column_groups=column_groups(groups, form))
        ranked = [names[row].tolist() for row in idx]
        dists = [[float(x) for x in row] for row in dist]
        for i, key in zip(rows, keys):
            out_names[i] = list(ranked[where[key]])
            out_dist[i] = list(dists[where[key]])
    for i in range(n):
        if domains[i] == "unknown":
            out_names[i] = index.names[:k].tolist()
            out_dist[i] = [0.0] * len(out_names[i])
    return Ranking(domains, out_names, out_dist)


def pad_to_k(names: list[str], all_names: Sequence[str], k: int = 10) -> list[str]:
    """Fill a ranking shorter than k (a routed gallery with fewer than k images) with the other
    gallery images in gallery order, so a submission always has k distinct names."""
    if len(names) >= k:
        return names[:k]
    seen = set(names)
    return names + [n for n in all_names if n not in seen][:k - len(names)]
