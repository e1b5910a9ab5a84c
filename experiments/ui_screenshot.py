"""Screenshot the MLflow UI of a stsc store with headless Chromium (Debian package `chromium`).

    python experiments/ui_screenshot.py --root . --output mlflow_ui.png

Starts `mlflow server` for ``<root>/mlruns`` on a free loopback port, opens the runs of experiment
``stsc`` (parent runs with their nested stage runs), saves a PNG and stops the server. The last line
is ``ui_screenshot: <path>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
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


def wait_until_up(url: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {url} did not answer within {timeout_s:.0f}s")


def experiment_id(url: str, name: str) -> str:
    import json

    q = urllib.request.quote(name)
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={q}") as r:
        return json.load(r)["experiment"]["experiment_id"]


def screenshot(page: str, output: Path, chromium: str) -> None:
    with tempfile.TemporaryDirectory(prefix="stsc-chromium-") as profile:
        cmd = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--window-size=1600,1000", "--virtual-time-budget=15000",
            f"--screenshot={output}", page,
        ]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=180)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("."), help="project root holding mlruns/")
    ap.add_argument("--experiment", default="stsc")
    ap.add_argument("--output", type=Path, default=Path("mlflow_ui.png"))
    args = ap.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed (Debian: apt-get install -y chromium)")
    mlruns = args.root.resolve() / "mlruns"
    if not (mlruns / "mlflow.db").exists():
        sys.exit(f"no MLflow store at {mlruns}/mlflow.db; run `stsc` first")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow = str(Path(sys.executable).parent / "mlflow")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen(
        [mlflow, "server", "--backend-store-uri", f"sqlite:///{mlruns / 'mlflow.db'}",
         "--artifacts-destination", str(mlruns / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until_up(url, server)
        exp = experiment_id(url, args.experiment)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        screenshot(f"{url}/#/experiments/{exp}/runs", args.output.resolve(), chromium)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its gunicorn workers
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    print(f"ui_screenshot: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
