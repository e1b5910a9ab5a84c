"""The benchmark scripts at a tiny size: they run end to end and print their headline figure last
(``<name>: <value>``), so a change elsewhere cannot leave them broken until someone measures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "experiments" / "benchmarks"


def _run(script: str, *args: str, timeout: float = 600) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()


def _headline(lines: list[str], name: str) -> float:
    match = re.fullmatch(rf"{name}: ([0-9.]+)", lines[-1])
    assert match, lines[-1]
    return float(match[1])


def test_the_rollout_benchmark_measures_stsc_bare_litellm_and_the_sharded_ceiling() -> None:
    lines = _run(
        "rollout_throughput.py", "--episodes", "4", "--steps", "3", "--latency", "0.05", "--shards", "2"
    )
    fraction = _headline(lines, "rollout_throughput_fraction")
    assert 0 < fraction <= 1.05
    text = "\n".join(lines)
    # every episode ran its steps through the stage, and the same calls were replayed twice
    assert "episodes 4 x 3 steps" in text
    assert re.search(
        r"bare litellm, the same 12 prompts .* fraction 0\.\d+, CPU [0-9.]+ ms per call", text
    ), text
    assert re.search(r"bare litellm over 2 processes: .* fraction [0-9.]+, CPU [0-9.]+ ms per call", text), (
        text
    )


def test_the_curate_benchmark_builds_an_sft_set_from_generated_runs(tmp_path: Path) -> None:
    lines = _run(
        "curate_scale.py", "-n", "40", "--tasks", "6", "--processes", "1", "--workdir", str(tmp_path)
    )
    assert _headline(lines, "curate_scale_s") > 0
    assert (tmp_path / "rollout" / "runs").is_dir()


def test_the_sandbox_benchmark_measures_the_local_backend() -> None:
    lines = _run("sandbox_overhead.py", "--repeats", "3")
    assert any(line.startswith("local") for line in lines), lines
    assert lines[-1].startswith("sandbox_overhead: "), lines[-1]
