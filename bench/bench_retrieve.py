"""Benchmark the ranking and the official metric; writes bench/results/retrieve.json.

Targets (issue 6): ranking a full-size gallery (17,611 images) for 17,611 queries in under 5 s and
2 GB on 2 cores; a scaling run up to 1,000,000 gallery images with time growing linearly and the
working memory flat; the official metric over 17,611 queries in under 2 s.

Each case runs in its own subprocess so its peak RSS (``ru_maxrss``) is its own. Galleries are
random probability vectors with the real dimensions (30 pedestrian, 82 vehicle dims); queries
state random groups (each with probability 0.5). The scaling run uses 1,000 queries (not 17,611)
to keep the 1M case short. The gallery matrix itself grows with N (``gallery_mb``);
``ranking_extra_rss_mb`` is the resident memory the ranking adds on top of its inputs (sampled),
which is what must stay flat as the gallery grows. The machine is shared, so each case reports
its own CPU seconds next to the wall time. Usage: ``python bench/bench_retrieve.py [--quick]``.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "retrieve.json"


def _random_queries(rng, groups, n):
    return [{g.name: g.values[rng.integers(g.n_classes)] for g in groups if rng.random() < 0.5}
            for _ in range(n)]


def case_full(form: str) -> dict:
    """The real shape: 17,611 test images routed 10,000 / 7,611, 17,611 captions likewise."""
    import numpy as np

    from pipeline import rank, schema

    rng = np.random.default_rng(0)
    n = {"pedestrian": 10_000, "vehicle": 7_611}
    probs = {d: rng.dirichlet(np.ones(sum(g.n_classes for g in schema.GROUPS_BY_DOMAIN[d])), n[d])
             .astype(np.float32) for d in schema.DOMAINS}
    names = np.array([f"img{i:06d}.jpg" for i in range(sum(n.values()))])
    domain = np.array(["pedestrian"] * n["pedestrian"] + ["vehicle"] * n["vehicle"])
    index = rank.GalleryIndex(names, domain, probs)
    queries = [(d, a) for d in schema.DOMAINS for a in _random_queries(rng, schema.GROUPS_BY_DOMAIN[d], n[d])]
    rank._has_torch()  # the one-off torch import is not part of ranking
    t, cpu = time.perf_counter(), time.process_time()
    r = rank.rank(index, queries, form=form, k=10)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    assert len(r.names) == 17_611 and all(len(x) == 10 for x in r.names)
    return {"queries": len(queries), "gallery": len(names), "form": form, "seconds": seconds,
            "cpu_seconds": cpu}


def case_one_domain(n_gallery: int, n_queries: int, domain: str) -> dict:
    """Every image and query in one domain: the worst case for one matrix product."""
    import numpy as np

    from pipeline import rank, schema

    rng = np.random.default_rng(0)
    groups = schema.GROUPS_BY_DOMAIN[domain]
    dim = sum(g.n_classes for g in groups)
    gallery = np.empty((n_gallery, dim + len(groups)), dtype=np.float32)
    for g0 in range(0, n_gallery, 10_000):  # generate in chunks to keep the generator's memory small
        p = rng.dirichlet(np.ones(dim), min(10_000, n_gallery - g0)).astype(np.float32)
        gallery[g0:g0 + len(p)] = rank.gallery_terms(p, groups)
    onehot, mask = rank.query_vectors(_random_queries(rng, groups, n_queries), groups)
    a, c = rank.query_terms(onehot, mask, groups, "paper")
    rank._has_torch()
    with RssSampler() as rss:
        t, cpu = time.perf_counter(), time.process_time()
        idx, _ = rank.top_k(a, c, gallery, k=10)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    assert idx.shape == (n_queries, 10)
    return {"queries": n_queries, "gallery": n_gallery, "domain": domain, "seconds": seconds,
            "cpu_seconds": cpu,
            "gallery_mb": gallery.nbytes / 2**20, "ranking_extra_rss_mb": rss.extra_mb}


class RssSampler:
    """Peak resident memory above the starting level while the block runs (sampled every 2 ms).

    ``ru_maxrss`` is a high-water mark of the whole process (data generation included), so the
    memory the ranking itself adds is measured here from /proc/self/statm.
    """

    def __enter__(self):
        import threading

        self.start = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())
        self.extra_mb = self.peak - self.start


def _rss_mb() -> float:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def case_metric(n: int = 17_611) -> dict:
    """The official metric (and the standard ones) over n queries with realistic relevant sets."""
    import numpy as np

    from pipeline import metrics

    rng = np.random.default_rng(0)
    pool = np.array([f"img{i:06d}.jpg" for i in range(17_611)])
    ranked = [list(pool[rng.integers(0, len(pool), 10)]) for _ in range(n)]
    relevant = [set(pool[rng.integers(0, len(pool), rng.integers(1, 1000))]) for _ in range(n)]
    t = time.perf_counter()
    official = metrics.official_map(ranked, relevant)
    t_official = time.perf_counter() - t
    t = time.perf_counter()
    metrics.retrieval_metrics(ranked, relevant)
    t_all = time.perf_counter() - t
    return {"queries": n, "seconds_official": t_official, "seconds_all_metrics": t_all, "value": official}


CASES = {"full": case_full, "one_domain": case_one_domain, "metric": case_metric}


def child(name: str, args: list) -> None:
    out = CASES[name](*args)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run(name: str, *args) -> dict:
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'bench')!r}); " \
           f"import bench_retrieve as b; b.child({name!r}, {list(args)!r})"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        raise SystemExit(f"case {name}{args} failed:\n{res.stderr[-2000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(name, args, {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}, flush=True)
    return out


def main(quick: bool = False) -> dict:
    import os

    import numpy as np

    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "load_average_at_start": os.getloadavg()[0],
                                 "note": "wall times on a shared machine; cpu_seconds are the case's own"}}
    results["full_17611"] = [run("full", form) for form in ("published", "paper", "full")]
    results["one_domain_17611"] = [run("one_domain", 17_611, 17_611, d) for d in ("pedestrian", "vehicle")]
    sizes = [17_611, 100_000, 300_000] + ([] if quick else [1_000_000])
    scaling = [run("one_domain", n, 1_000, "pedestrian") for n in sizes]
    # linear fit of time on gallery size: a slope with a small intercept means linear growth
    x, y = np.array([s["gallery"] for s in scaling]), np.array([s["seconds"] for s in scaling])
    slope, intercept = np.polyfit(x, y, 1)
    cpu = np.array([s["cpu_seconds"] for s in scaling])
    cpu_slope, cpu_intercept = np.polyfit(x, cpu, 1)
    results["scaling_1000_queries"] = {
        "runs": scaling, "wall_seconds_per_million_images": slope * 1e6, "wall_intercept_s": intercept,
        "cpu_seconds_per_million_images": cpu_slope * 1e6, "cpu_intercept_s": cpu_intercept,
        "ranking_extra_rss_mb": [s["ranking_extra_rss_mb"] for s in scaling]}
    results["metric_17611"] = run("metric")
    full = results["full_17611"]
    # Wall time on a shared, oversubscribed machine overstates the cost; a CPU-bound process on 2
    # dedicated cores finishes within its own CPU seconds, so both are judged.
    results["targets"] = {
        "rank_17611_under_5s_wall": all(r["seconds"] < 5 for r in full + results["one_domain_17611"]),
        "rank_17611_under_5s_cpu": all(r["cpu_seconds"] < 5 for r in full + results["one_domain_17611"]),
        "rank_17611_under_2gb": all(r["peak_rss_mb"] < 2048 for r in full + results["one_domain_17611"]),
        "metric_17611_under_2s": results["metric_17611"]["seconds_all_metrics"] < 2,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(json.dumps(results["targets"]))
    return results


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
