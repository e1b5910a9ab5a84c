"""Budgets: once the stage's or a task's USD budget is spent, no episode starts and running ones
stop at their next model call; spend recorded in the stage folder still counts after a restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stsc.rollout import run_rollout
from stsc.rollout.budget import SpendLedger, tightest
from stsc.rollout.folders import RolloutFolders
from tests.agent.conftest import command
from tests.fakes.openai_server import count_words
from tests.rollout.conftest import agent_turn, rollout_config, stage_context

PRICE = 0.01  # USD per completion token (a word of the fake server's reply)
CALL_USD = PRICE * count_words(command("cp sample_submission.csv submission.csv"))  # the dearest call


def _cost_of(out: Path) -> float:
    total = 0.0
    for traj in out.glob("**/*.traj"):
        total += json.loads(traj.read_text())["info"]["model_stats"]["total_cost"]
    return total


@pytest.mark.parametrize("key", ["rollout.budget_usd", "teacher.llm.budget_usd"])
def test_a_spent_stage_budget_stops_new_and_running_episodes(
    library: Path, openai_server, tmp_path: Path, key: str
) -> None:
    openai_server.responder = agent_turn
    cfg = rollout_config(tmp_path, openai_server, per_task=3, concurrency=2, sandbox_concurrency=2)
    if key == "rollout.budget_usd":
        cfg.rollout.budget_usd, cfg.teacher.llm.budget_usd = 0.35, 5.0  # the lower one binds
    else:  # the teacher's own cap binds the stage the same way, across restarts included
        cfg.rollout.budget_usd, cfg.teacher.llm.budget_usd = None, 0.35
    cfg.teacher.llm.output_cost_per_token = PRICE
    ctx = stage_context(tmp_path, library)
    run_rollout(cfg, ctx)

    # An episode costs four calls (~$0.27): two running at once cannot both finish under $0.35.
    report = ctx.report
    assert report.items_in == 6 and report.items_out + report.drops["budget_exhausted"] == 6
    assert report.drops["budget_exhausted"] >= 3
    assert 0.35 <= report.cost_usd <= 0.35 + 2 * CALL_USD
    assert abs(report.cost_usd - _cost_of(ctx.out_dir)) < 1e-9
    stopped = [json.loads(p.read_text()) for p in (ctx.out_dir / "failed_attempts").glob("*/*/failure.json")]
    assert stopped and all(s["reason"] == "budget_exhausted" for s in stopped)
    assert all(f"{key}=$0.3500 is spent" in s["message"] for s in stopped)
    rows = [r for r in ctx.tables["episodes"] if r["outcome"] == "budget_exhausted"]
    assert len(rows) == report.drops["budget_exhausted"] and all(r["exit_status"] == "" for r in rows)

    calls = len(openai_server.chat_requests)
    again = stage_context(tmp_path, library)
    run_rollout(cfg, again)
    assert len(openai_server.chat_requests) == calls
    assert again.report.drops == report.drops and abs(again.report.cost_usd - report.cost_usd) < 1e-9


def test_each_task_spends_its_own_budget_then_stops(library: Path, openai_server, tmp_path: Path) -> None:
    openai_server.responder = agent_turn
    cfg = rollout_config(tmp_path, openai_server, per_task=2, concurrency=1, per_task_budget_usd=0.1)
    cfg.teacher.llm.output_cost_per_token = PRICE
    ctx = stage_context(tmp_path, library)
    run_rollout(cfg, ctx)

    rows = ctx.tables["episodes"]
    assert [(r["k"], r["outcome"]) for r in rows] == [(0, "budget_exhausted"), (1, "budget_exhausted")] * 2
    assert [r["attempts"] for r in rows] == [1, 0, 1, 0]
    assert len(openai_server.chat_requests) == 2 * 2  # per task: the calls made while under $0.10
    for task in {r["task"] for r in rows}:
        spent = _cost_of(next((ctx.out_dir / "failed_attempts").glob(f"*__{task}__*")))
        assert 0.1 <= spent <= 0.1 + CALL_USD


def test_the_ledger_restores_spend_and_names_the_budget_to_raise() -> None:
    from stsc.rollout.folders import Spend

    ledger = SpendLedger(1.0, 0.3, {"a": Spend(cost_usd=0.25), "b": Spend(cost_usd=0.5)})
    assert ledger.restored_usd == 0.75 and ledger.remaining_usd() == 0.25
    assert ledger.exhausted("a") is None
    assert "rollout.per_task_budget_usd" in ledger.exhausted("b")
    ledger.charge("a", 0.3)
    assert "rollout.budget_usd" in ledger.exhausted("c")
    assert SpendLedger(None, None).exhausted("a") is None


def test_the_tightest_budget_wins_and_is_named() -> None:
    assert tightest(rollout__budget_usd=2.0, teacher__llm__budget_usd=0.5) == (0.5, "teacher.llm.budget_usd")
    assert tightest(rollout__budget_usd=2.0, teacher__llm__budget_usd=None) == (2.0, "rollout.budget_usd")
    assert tightest(rollout__budget_usd=None, teacher__llm__budget_usd=None) == (None, "rollout.budget_usd")


def test_the_spend_of_a_snapshot_torn_by_a_crash_is_read_from_its_intact_end(tmp_path: Path) -> None:
    from stsc.agent.trajectory import TrajWriter
    from stsc.rollout.folders import traj_spend

    def stats(cost: float, calls: int) -> dict:
        model = {"total_cost": cost, "task_cost": cost, "tokens_sent": 100 * calls, "tokens_received": 10 * calls,
                 "api_calls": calls}  # fmt: skip
        return {"model_stats": model, "exit_status": "", "submission": None, "score": []}

    step = {"action": "ls", "observation": 'a file named "info": x', "response": "r", "state": "{}",
            "thought": "t", "execution_time": 0.1}  # fmt: skip
    history = [{"role": "system", "content": "s"}, {"role": "user", "content": "task"}]
    path = tmp_path / "task-a.traj"
    writer = TrajWriter(path)
    writer.snapshot([step], history, stats(0.25, 1))
    assert traj_spend(tmp_path)[1].cost_usd == 0.25
    older = path.read_bytes()
    # the next snapshot, cut short at byte k: its start over the old file, the old end still there
    writer.snapshot([step, step], history, stats(0.5, 2))
    newer = path.read_bytes()
    path.write_bytes(newer[:200] + older[200:])
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text())
    task, spend = traj_spend(tmp_path)
    assert task == "task-a" and (spend.cost_usd, spend.prompt_tokens, spend.completion_tokens) == (
        0.25,
        100,
        10,
    )
    # nothing to recover: counted as nothing, as before
    path.write_bytes(newer[: len(newer) // 2])
    assert traj_spend(tmp_path)[1].cost_usd == 0.0


def test_billed_replies_without_a_choice_count_against_the_budget_and_stay_on_disk(
    library: Path, openai_server, tmp_path: Path
) -> None:
    from tests.fakes.openai_server import Reply

    empty = {"id": "x", "object": "chat.completion", "created": 0, "model": "fake-model", "choices": [],
             "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}  # fmt: skip
    openai_server.push(*[Reply(body=empty)] * 40)
    cfg = rollout_config(tmp_path, openai_server, per_task=1, concurrency=1, max_infra_retries=1)
    cfg.teacher.llm.input_cost_per_token, cfg.teacher.llm.output_cost_per_token = 0.001, PRICE
    ctx = stage_context(tmp_path, library)
    run_rollout(cfg, ctx)

    # every call was billed and none answered: the episodes end exit_api, their spend recorded
    calls = len(openai_server.chat_requests)
    assert calls > 0 and ctx.report.items_out == 0
    billed = calls * (5 * 0.001 + 7 * PRICE)
    assert ctx.report.cost_usd == pytest.approx(billed) == _cost_of(ctx.out_dir)
    restored = RolloutFolders(ctx.out_dir).spend_by_task([])  # what a rerun starts from
    assert SpendLedger(None, None, restored).total_usd == pytest.approx(billed)
