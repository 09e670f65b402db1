"""Screenshot MLflow's run comparison of the `retrieve` runs of several DVC experiments.

    python scripts/screenshot_compare.py --repo PATH --out docs/mlflow_compare.png [--experiments A B]

Starts `mlflow ui` on a free loopback port over the repository's own store (``mlflow.db``),
opens the compare page of the newest `retrieve` run of each named DVC experiment (default: every
experiment that has one) in headless Chromium (Debian's `chromium`), saves the PNG, stops the UI.
For the README's "compare experiments" walkthrough; not part of the pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def retrieve_runs(uri: str, experiments: list[str] | None) -> tuple[str, list[str]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("track2-retrieval")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'retrieve'", order_by=["attributes.start_time DESC"])
    newest: dict[str, str] = {}
    for r in runs:
        name = r.data.tags.get("dvc.exp_name", "workspace")
        newest.setdefault(name, r.info.run_id)
    wanted = experiments or list(newest)
    return exp.experiment_id, [newest[n] for n in wanted if n in newest]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--experiments", nargs="*")
    args = ap.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium not found (Debian: apt-get install chromium)")
    uri = f"sqlite:///{args.repo.resolve() / 'mlflow.db'}"
    exp_id, run_ids = retrieve_runs(uri, args.experiments)
    if len(run_ids) < 2:
        sys.exit(f"need two retrieve runs to compare, found {len(run_ids)}")
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    ui = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", uri,
                           "--host", "127.0.0.1", "--port", str(port)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or ui.poll() is not None:
                    sys.exit(f"mlflow ui did not come up on port {port}")
                time.sleep(1)
        url = (f"http://127.0.0.1:{port}/#/compare-runs?runs={json.dumps(run_ids, separators=(',', ':'))}"
               f"&experiments={json.dumps([exp_id], separators=(',', ':'))}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        profile = tempfile.mkdtemp(prefix="chromium-")
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--hide-scrollbars",
                        # Virtual time: the shot waits for the page to settle, not for a fixed wall time.
                        "--window-size=1500,1400", "--virtual-time-budget=30000",
                        f"--screenshot={args.out.resolve()}", url], check=True, timeout=900,
                       capture_output=True)
        shutil.rmtree(profile, ignore_errors=True)
        print(f"{len(run_ids)} runs compared -> {args.out}")
    finally:
        ui.terminate()
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ui.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
