"""Wall time of the quickstart (`stsc`, the default recipe): cold in a fresh root, then cached.

Targets on a 2-core machine after the install: cold <= 10 min, cached rerun <= 60 s.
    python experiments/benchmarks/quickstart_time.py [--root DIR] [stsc overrides ...]
The last line is `quickstart_cold_s: <seconds>`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def timed_run(root: Path, overrides: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "stsc.cli", f"root={root}", *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True)  # fmt: skip
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"stsc failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, help="fresh folder for mlruns/ (default: a temp dir)")
    args, overrides = ap.parse_known_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="stsc-quickstart-"))
    cold = timed_run(root, overrides)
    cached = timed_run(root, overrides)
    print(f"quickstart cold:   {cold:7.1f} s (target <= 600 s)")
    print(f"quickstart cached: {cached:7.1f} s (target <= 60 s)")
    print(f"quickstart_cached_s: {cached:.1f}")
    print(f"quickstart_cold_s: {cold:.1f}")


if __name__ == "__main__":
    main()
