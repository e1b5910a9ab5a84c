"""`dry_run=true` prints the plan of the paper recipes without running anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("experiment", ["paper_qwen3_4b", "paper_qwen3_8b"])
def test_a_paper_recipe_dry_run_prints_stages_items_calls_tokens_and_usd(
    tmp_path: Path, experiment: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OPENAI_API_KEY", None)  # a plan needs no credentials
    proc = subprocess.run([sys.executable, "-m", "stsc.cli", f"experiment={experiment}", "dry_run=true", f"root={tmp_path}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {
        line.split()[0]: line for line in proc.stdout.splitlines() if line and line.split()[0].isidentifier()
    }
    for stage in (
        "topics",
        "propose",
        "verify",
        "generate",
        "validate",
        "rollout",
        "curate",
        "sft",
        "evaluate",
    ):
        assert stage in lines, proc.stdout
    assert "openai/gpt-5" in lines["rollout"] and "x 256 trajectories" in lines["rollout"]
    rollout_calls = int(lines["rollout"].split()[3].replace(",", ""))
    assert rollout_calls > 1_000_000  # ~hundreds of tasks x 256 trajectories x ~40 steps
    assert "estimated total: $" in proc.stdout
    assert not (tmp_path / "mlruns" / "store").exists()  # nothing ran
