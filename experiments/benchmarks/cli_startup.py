"""Wall time of `stsc --help` and `stsc --cfg job` (median of 5 runs each).

Targets on a 2-core machine: --help <= 1.0 s, --cfg job <= 1.5 s. Run: python experiments/benchmarks/cli_startup.py
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def median_wall(args: list[str], repeats: int = 5) -> float:
    stsc = shutil.which("stsc") or str(Path(sys.executable).parent / "stsc")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([stsc, *args], cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    help_s = median_wall(["--help"])
    cfg_s = median_wall(["--cfg", "job"])
    print(f"stsc --help:    {help_s:.3f} s (target <= 1.0 s)")
    print(f"stsc --cfg job: {cfg_s:.3f} s (target <= 1.5 s)")
    print(f"cli_startup_help_s: {help_s:.3f}")


if __name__ == "__main__":
    main()
