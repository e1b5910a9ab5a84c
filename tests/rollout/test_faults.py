"""Fault injection: failing model calls, sandboxes killed mid-episode, a dead sandbox engine and an
unexpected error. Every planned episode must end with a recorded outcome, partial folders are
kept, and no sandbox outlives the stage."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from stsc.agent.policies import PolicyReply
from stsc.config import SandboxConfig
from stsc.rollout import run_rollout
from tests.agent.conftest import command
from tests.fakes.openai_server import Reply
from tests.rollout.conftest import FaultyFactory, agent_turn, flaky, rollout_config, stage_context


def _attempts(out: Path) -> list[dict[str, Any]]:
    return [
        json.loads(p.read_text()) for p in sorted((out / "failed_attempts").glob("*/attempt-*/failure.json"))
    ]


def test_the_collector_survives_failing_model_calls_and_killed_sandboxes(
    library: Path, openai_server, tmp_path: Path
) -> None:
    injected = flaky(openai_server, fraction=0.3, seed=3, timeout_delay_s=0.8)
    cfg = rollout_config(tmp_path, openai_server, per_task=4, concurrency=4, max_infra_retries=4)
    cfg.teacher.llm.timeout_s = 0.5
    cfg.teacher.llm.max_retries = 2
    factory = FaultyFactory(kill=lambda i: i in (0, 3, 5), at=2)
    ctx = stage_context(tmp_path, library)
    run_rollout(cfg, ctx, sandbox_factory=factory)

    requests = openai_server.chat_requests
    assert len(requests) > 30 and 0.15 <= len(injected) / len(requests) <= 0.45
    assert {r.status for r in injected} >= {429, 200} and openai_server.pending <= 1
    rows = ctx.tables["episodes"]
    assert len(rows) == 8 and len({r["run"] for r in rows}) == 8
    assert all(r["outcome"] == "finished" and r["exit_status"] == "submitted" for r in rows), rows
    assert (ctx.report.items_in, ctx.report.items_out) == (8, 8)
    assert len(list((ctx.out_dir / "runs").glob("*/stsc.json"))) == 8

    # Killed sandboxes (and calls failing past the client's retries) cost attempts, kept aside.
    attempts = _attempts(ctx.out_dir)
    assert factory.killed == 3
    assert len(attempts) >= 3 and all(a["reason"] == "infra_error" for a in attempts)
    assert any("sandbox" in a["message"] for a in attempts), [a["message"] for a in attempts]
    assert sum(r["attempts"] - 1 for r in rows) == len(attempts)
    for attempt in (ctx.out_dir / "failed_attempts").glob("*/attempt-*"):
        assert not (attempt / "stsc.json").exists() and list(attempt.glob("*.traj"))


def test_infrastructure_failures_are_retried_then_dropped(
    library: Path, openai_server, tmp_path: Path
) -> None:
    openai_server.responder = agent_turn
    cfg = rollout_config(tmp_path, openai_server, per_task=1, max_infra_retries=2)
    factory = FaultyFactory(refuse=lambda i: True)
    ctx = stage_context(tmp_path, library)
    run_rollout(cfg, ctx, sandbox_factory=factory)

    assert factory.started == 2 * 3
    rows = ctx.tables["episodes"]
    assert [(r["outcome"], r["attempts"]) for r in rows] == [("infra_failed_after_retries", 3)] * 2
    assert "did not start" in rows[0]["error"]
    assert (ctx.report.items_in, ctx.report.items_out) == (2, 0)
    assert ctx.report.drops == {"infra_failed_after_retries": 2}
    assert len(_attempts(ctx.out_dir)) == 6
    assert not (ctx.out_dir / "runs").exists() or not any((ctx.out_dir / "runs").iterdir())
    assert ctx.artifacts == []


class _Exploding:
    """A policy that works for four calls (over all episodes), then fails in a way nobody handles.
    Just before it raises it counts the sandbox folders open in ``workdir``."""

    name = "exploding"

    def __init__(self, workdir: Path) -> None:
        self.calls = 0
        self.workdir = workdir
        self.open_sandboxes: int | None = None

    async def act(self, messages: list[dict[str, str]], *, seed: int) -> PolicyReply:
        self.calls += 1
        if self.calls > 4:
            self.open_sandboxes = len(list(self.workdir.iterdir()))
            raise RuntimeError("a bug in the policy")
        return PolicyReply(text=command("sleep 0.2"))


def test_an_unknown_error_stops_the_stage_and_closes_every_sandbox(library: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "sandboxes"
    workdir.mkdir()
    from stsc.sandbox import make_factory

    factory = make_factory(SandboxConfig(backend="local", workdir=str(workdir)))
    cfg = rollout_config(tmp_path, None, per_task=3, concurrency=3)
    ctx = stage_context(tmp_path, library)
    policy = _Exploding(workdir)
    with pytest.raises(RuntimeError, match="a bug in the policy"):
        run_rollout(cfg, ctx, sandbox_factory=factory, policy=policy)
    assert policy.open_sandboxes is not None and policy.open_sandboxes > 0, "sandboxes lived in workdir"
    assert list(workdir.iterdir()) == []
    assert not list((ctx.out_dir / "runs").glob("*/stsc.json"))


class _SlowThirdStart:
    """Local sandboxes; the third start takes a second (a container being created), so the stage
    stops while it is still coming up."""

    def __init__(self, workdir: Path) -> None:
        from stsc.sandbox import make_factory

        self.inner = make_factory(SandboxConfig(backend="local", workdir=str(workdir)))
        self.started: list[Path] = []

    def start(self, workspace: Path, label: str) -> Any:
        if len(self.started) == 2:
            self.started.append(Path("pending"))
            time.sleep(1.0)
            sandbox = self.inner.start(workspace, label)
            self.started[2] = sandbox.layout.root
            return sandbox
        sandbox = self.inner.start(workspace, label)
        self.started.append(sandbox.layout.root)
        return sandbox


def test_a_sandbox_still_starting_when_the_stage_stops_is_closed_too(library: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "sandboxes"
    workdir.mkdir()
    factory = _SlowThirdStart(workdir)
    cfg = rollout_config(tmp_path, None, per_task=3, concurrency=3)
    policy = _Exploding(workdir)
    with pytest.raises(RuntimeError, match="a bug in the policy"):
        run_rollout(cfg, stage_context(tmp_path, library), sandbox_factory=factory, policy=policy)
    assert len(factory.started) == 3 and factory.started[2].parent == workdir  # it did come up
    assert list(workdir.iterdir()) == []  # and was closed before the stage returned


def test_a_rejected_key_stops_the_stage_at_once_instead_of_retrying_every_episode(
    library: Path, openai_server, tmp_path: Path
) -> None:
    from stsc.errors import RequestRejectedError

    openai_server.push(*[Reply(status=401)] * 20)
    cfg = rollout_config(tmp_path, openai_server, per_task=3, concurrency=2, max_infra_retries=3)
    cfg.sandbox.workdir = str(tmp_path / "sandboxes")
    ctx = stage_context(tmp_path, library)
    with pytest.raises(RequestRejectedError, match="AuthenticationError"):
        run_rollout(cfg, ctx)
    assert len(openai_server.chat_requests) <= 2  # one per episode running, no retries of any kind
    assert not (ctx.out_dir / "failed_attempts").exists()
    assert list((tmp_path / "sandboxes").iterdir()) == []


def test_sandboxes_of_finished_and_failed_episodes_are_all_removed(
    library: Path, openai_server, tmp_path: Path
) -> None:
    openai_server.responder = agent_turn
    workdir = tmp_path / "sandboxes"
    workdir.mkdir()
    factory = FaultyFactory(kill=lambda i: i == 0, at=2)
    factory.inner.cfg.workdir = str(workdir)
    cfg = rollout_config(tmp_path, openai_server, per_task=2)
    ctx = stage_context(tmp_path, library)
    run_rollout(cfg, ctx, sandbox_factory=factory)
    assert ctx.report.items_out == 4 and len(_attempts(ctx.out_dir)) == 1
    assert len(factory.roots) == 5 and all(r.parent == workdir for r in factory.roots)  # 4 + 1 retry
    assert list(workdir.iterdir()) == []
