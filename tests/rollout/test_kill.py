"""SIGKILL of the stage mid-run, then a rerun: no finished trajectory is lost or duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stsc.store import atomic_write_json, to_jsonable
from tests.conftest import REPO_ROOT
from tests.rollout.conftest import agent_turn, rollout_config


def _finished(out: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in (out / "runs").glob("*/stsc.json")}


def test_a_killed_stage_resumes_without_losing_or_duplicating_runs(
    library: Path, openai_server, tmp_path: Path
) -> None:
    openai_server.responder = agent_turn
    openai_server.latency_s = 0.15
    cfg = rollout_config(tmp_path, openai_server, per_task=6, concurrency=3, sandbox_concurrency=3)
    cfg.teacher.llm.cache = True
    config = tmp_path / "config.json"
    atomic_write_json(config, to_jsonable(cfg))
    out = tmp_path / "store" / "rollout" / "killed"
    argv = [sys.executable, "-m", "tests.rollout.stage_main", str(config), str(library), str(out)]

    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "runs").is_dir() or len(_finished(out)) < 3:
        assert proc.poll() is None, "the stage ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _finished(out)
    assert 3 <= len(before) < 12
    in_flight = {p.name for p in (out / "runs").iterdir()} - set(before)
    assert in_flight  # killed mid-episode: partial run folders without stsc.json

    rerun = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = _finished(out)
    assert len(after) == 12 and {n: after[n] for n in before} == before
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(after)
    moved = [json.loads(p.read_text()) for p in (out / "failed_attempts").glob("*/attempt-*/failure.json")]
    assert {m["run_name"] for m in moved} == in_flight
    assert all(m["reason"] == "interrupted" for m in moved)
    rows = json.loads((out / "table_episodes.json").read_text())
    assert len(rows) == 12 and len({r["run"] for r in rows}) == 12
    assert all(r["outcome"] == "finished" for r in rows)
    report = json.loads((out / "report.json").read_text())
    assert (report["items_in"], report["items_out"]) == (12, 12)


def test_sigterm_stops_the_stage_like_ctrl_c_and_removes_every_sandbox(
    library: Path, openai_server, tmp_path: Path
) -> None:
    openai_server.responder = agent_turn
    openai_server.latency_s = 0.3
    cfg = rollout_config(tmp_path, openai_server, per_task=4, concurrency=4, sandbox_concurrency=4)
    cfg.sandbox.workdir = str(tmp_path / "sandboxes")
    config = tmp_path / "config.json"
    atomic_write_json(config, to_jsonable(cfg))
    out = tmp_path / "store" / "rollout" / "terminated"
    argv = [sys.executable, "-m", "tests.rollout.stage_main", str(config), str(library), str(out)]

    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sandboxes = Path(cfg.sandbox.workdir)
    deadline = time.monotonic() + 120
    while not sandboxes.is_dir() or len(list(sandboxes.iterdir())) < 4:  # four episodes mid-run
        assert proc.poll() is None, "the stage ended before it could be stopped"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Terminated: received SIGTERM" in stderr, stderr[-3000:]
    assert list(sandboxes.iterdir()) == []  # closed by the episodes, not left for a later sweep
    assert not (out / "report.json").exists()

    rerun = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert len(_finished(out)) == 8
    assert list(sandboxes.iterdir()) == []
