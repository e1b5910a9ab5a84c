"""The rollout stage end to end: local sandboxes, a loopback teacher, real template tasks."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from stsc.agent.parser import parse_response
from stsc.rollout import run_rollout
from stsc.rollout.plan import plan_episodes, select_training_tasks
from stsc.synth.library import LibrarySplit
from tests.rollout.conftest import SCRIPT, agent_turn, rollout_config, stage_context


def _runs(out: Path) -> list[Path]:
    return sorted(p for p in (out / "runs").iterdir() if p.is_dir())


def test_every_training_task_gets_per_task_finished_runs(
    library: Path, openai_server, tmp_path: Path
) -> None:
    openai_server.responder = agent_turn
    cfg = rollout_config(tmp_path, openai_server, per_task=2)
    ctx = stage_context(tmp_path, library)
    run_rollout(cfg, ctx)

    split = LibrarySplit.load(ctx.out_dir / "split.json")
    assert len(split.train) == 2 and len(split.heldout) == 2
    assert set(split.train_datasets).isdisjoint(split.heldout_datasets)
    runs = _runs(ctx.out_dir)
    assert len(runs) == 4
    results = [json.loads((run / "stsc.json").read_text()) for run in runs]
    assert {r["task_id"] for r in results} == set(split.train)
    assert all(r["exit_status"] == "submitted" and r["best_score"] is not None for r in results)
    assert len({r["seed"] for r in results}) == 4
    for run, result in zip(runs, results, strict=True):
        assert (run / f"{result['task_id']}.traj").is_file()
        assert json.loads((run / "results.json").read_text())["agent"]

    report = ctx.report
    assert (report.items_in, report.items_out, sum(report.drops.values())) == (4, 4, 0)
    assert report.prompt_tokens == sum(r["prompt_tokens"] for r in results) > 0
    assert report.metrics["episodes_submitted"] == 4
    rows = ctx.tables["episodes"]
    assert [(r["task"], r["k"]) for r in rows] == sorted((t, k) for t in split.train for k in range(2))
    assert all(
        r["outcome"] == "finished" and r["exit_status"] == "submitted" and r["steps"] == 4 for r in rows
    )

    bundles = sorted(p.name for p in ctx.artifacts)
    assert bundles == sorted(f"{t}.tar.gz" for t in split.train)
    with tarfile.open(ctx.artifacts[0]) as tar:
        names = tar.getnames()
    task = ctx.artifacts[0].name.removesuffix(".tar.gz")
    assert sum(1 for n in names if n.endswith("/stsc.json")) == 2
    assert all(n.split("/")[0].split("__")[1] == task for n in names)


def test_a_rerun_skips_finished_runs_and_calls_no_model(library: Path, openai_server, tmp_path: Path) -> None:
    openai_server.responder = agent_turn
    cfg = rollout_config(tmp_path, openai_server, per_task=1)
    run_rollout(cfg, stage_context(tmp_path, library))
    calls = len(openai_server.chat_requests)
    first = {
        p.name: (p / "stsc.json").read_bytes() for p in _runs(tmp_path / "store" / "rollout" / "rollout-key")
    }

    again = stage_context(tmp_path, library)
    run_rollout(cfg, again)
    assert len(openai_server.chat_requests) == calls
    assert {p.name: (p / "stsc.json").read_bytes() for p in _runs(again.out_dir)} == first
    assert (again.report.items_in, again.report.items_out) == (2, 2)
    assert not (again.out_dir / "failed_attempts").exists()


def test_agent_failures_are_recorded_statuses_not_retried(
    library: Path, openai_server, tmp_path: Path
) -> None:
    openai_server.responder = lambda messages: "I will not use the response format."
    cfg = rollout_config(tmp_path, openai_server, per_task=1)
    ctx = stage_context(tmp_path, library)
    run_rollout(cfg, ctx)
    rows = ctx.tables["episodes"]
    assert [r["exit_status"] for r in rows] == ["submission_not_found (exit_format)"] * 2
    assert all(r["outcome"] == "finished" and r["attempts"] == 1 for r in rows)
    assert ctx.report.items_out == 2
    assert not (ctx.out_dir / "failed_attempts").exists()
    assert len(openai_server.chat_requests) == 2 * cfg.agent.max_format_retries


def test_episode_seeds_follow_the_run_seed_task_and_index(library: Path, tmp_path: Path) -> None:
    cfg = rollout_config(tmp_path, None, per_task=3)
    tasks, _ = select_training_tasks(cfg, library)
    plans = plan_episodes(cfg, tasks)
    assert len(plans) == 6 and len({p.seed for p in plans}) == 6
    assert len({p.run_name for p in plans}) == 6
    assert plans == plan_episodes(cfg, tasks)
    cfg.seed = 1
    assert {p.seed for p in plan_episodes(cfg, tasks)}.isdisjoint({p.seed for p in plans})
    assert all(p.run_name.startswith("scripted__") and p.run_name.endswith(f"_run_{p.k}") for p in plans)


def test_max_tasks_caps_the_training_tasks(library: Path, tmp_path: Path) -> None:
    cfg = rollout_config(tmp_path, None, max_tasks=1)
    tasks, split = select_training_tasks(cfg, library)
    assert len(tasks) == 1 and tasks[0].task_id in split.train
    assert len(split.train) == 2  # the split itself is not capped


def test_the_scripted_agent_helper_speaks_the_agent_format() -> None:
    messages: list[dict[str, str]] = [{"role": "user", "content": "task"}]
    actions = []
    for _ in range(len(SCRIPT) + 1):
        reply = agent_turn(messages)
        actions.append(parse_response(reply).action)
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": "output"}]
    assert actions == [*SCRIPT, SCRIPT[-1]]  # the production parser reads each step's command


def test_a_missing_api_key_fails_before_any_episode_starts(library: Path, tmp_path: Path) -> None:
    from stsc.config import LLMConfig, PolicyConfig
    from stsc.errors import MissingAPIKeyError

    cfg = rollout_config(tmp_path, None, per_task=1)
    cfg.teacher = PolicyConfig(
        kind="llm", name="gpt5", llm=LLMConfig(model="openai/gpt-5", api_key_env="STSC_UNSET_KEY")
    )
    ctx = stage_context(tmp_path, library)
    with pytest.raises(MissingAPIKeyError, match="STSC_UNSET_KEY"):
        run_rollout(cfg, ctx)
    assert not (ctx.out_dir / "runs").exists()
