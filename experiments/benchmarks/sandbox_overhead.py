"""Start time and per-command overhead of each sandbox backend.

For every backend that can run here (local always; docker when an engine answers and the task image
is built), prints the median wall time of ``factory.start`` on a small task workspace, and the
median extra time of one command over a bare ``subprocess.run`` of the same command on the host,
both for a one-shot ``exec`` and for a command of the persistent ``shell`` (the command is
``true``: the same binary doing the same nothing everywhere, so the difference is pure overhead).

Targets: local <= 10 ms per command; docker start <= 0.7 s, exec <= 60 ms.
Run: python experiments/benchmarks/sandbox_overhead.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from stsc.config import SandboxConfig
from stsc.errors import SandboxError
from stsc.sandbox import make_factory

COMMAND = ["true"]  # the same binary and the same work on the host and in both backends


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _workspace(root: Path) -> Path:
    ws = root / "workspace"
    (ws / "data").mkdir(parents=True)
    (ws / "data" / "train.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(1000)))
    (ws / "baseline.py").write_text("print('baseline')\n")
    return ws


def _bare_engine_exec(sb) -> None:
    """One plain ``docker exec`` of COMMAND (create, attach, read, inspect): the engine's own cost."""
    api = sb._client.api
    exec_id = api.exec_create(sb.container_id, COMMAND)["Id"]
    api.exec_start(exec_id)
    api.exec_inspect(exec_id)


def measure(backend: str, workspace: Path, repeats: int, starts: int) -> dict[str, float]:
    """Median start time (s) and per-command overheads (ms) over a bare run of COMMAND."""
    factory = make_factory(SandboxConfig(backend=backend))
    start_times = []
    for _ in range(starts):
        t0 = time.perf_counter()
        sb = factory.start(workspace, "benchmark")
        start_times.append(time.perf_counter() - t0)
        sb.close()
    with factory.start(workspace, "benchmark") as sb:
        shell = sb.shell()
        sb.exec(COMMAND, timeout=60)
        bare = _median_ms(lambda: subprocess.run(COMMAND, capture_output=True, check=True), repeats)
        exec_ms = _median_ms(lambda: sb.exec(COMMAND, timeout=60), repeats)
        shell_ms = _median_ms(lambda: shell.run(" ".join(COMMAND), timeout=60), repeats)
        engine = _median_ms(lambda: _bare_engine_exec(sb), repeats) if backend == "docker" else float("nan")
    return {
        "engine_ms": engine,
        "start_s": statistics.median(start_times),
        "bare_ms": bare,
        "exec_overhead_ms": exec_ms - bare,
        "shell_overhead_ms": shell_ms - bare,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="stsc-bench-") as tmp:
        workspace = _workspace(Path(tmp))
        for backend, starts in (("local", 20), ("docker", 8)):
            try:
                results[backend] = measure(backend, workspace, args.repeats, starts)
            except SandboxError as e:
                print(f"{backend}: skipped ({e})")
    print(
        f"command: {' '.join(COMMAND)}; overhead = median sandbox time - median bare subprocess.run on the host"
    )
    print(f"{'backend':8} {'start':>10} {'bare':>9} {'exec +':>9} {'shell +':>9}")
    for backend, r in results.items():
        print(
            f"{backend:8} {r['start_s'] * 1000:8.1f}ms {r['bare_ms']:7.2f}ms "
            f"{r['exec_overhead_ms']:7.1f}ms {r['shell_overhead_ms']:7.1f}ms"
        )
    if "docker" in results:
        engine = results["docker"]["engine_ms"] - results["docker"]["bare_ms"]
        print(f"(a bare `docker exec` of the same command costs +{engine:.1f} ms on this engine)")
    print("targets: local exec <= 10 ms; docker start <= 700 ms, exec <= 60 ms")
    summary = " ".join(
        f"{b}_start_s={r['start_s']:.3f} {b}_exec_ms={r['exec_overhead_ms']:.1f}" for b, r in results.items()
    )
    print(f"sandbox_overhead: {summary}")


if __name__ == "__main__":
    main()
