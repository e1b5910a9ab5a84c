"""The ``rollout`` stage function (see ``stsc.rollout`` for the stage's contract)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from typing import Any

from stsc.agent.policies import Policy
from stsc.config import RootConfig
from stsc.rollout.budget import SpendLedger, tightest
from stsc.rollout.collector import Collector, EpisodeOutcome, Outcome
from stsc.rollout.folders import RolloutFolders, Spend
from stsc.rollout.plan import EpisodePlan, plan_episodes, select_training_tasks
from stsc.rollout.progress import RolloutProgress
from stsc.sandbox.base import SandboxFactory
from stsc.store import StageContext

log = logging.getLogger(__name__)

LLM_CACHE_DIR = "llm_cache"


def run_rollout(
    cfg: RootConfig,
    ctx: StageContext,
    *,
    sandbox_factory: SandboxFactory | None = None,
    policy: Policy | None = None,
) -> None:
    """Collect ``rollout.per_task`` teacher trajectories of every training task into
    ``ctx.out_dir/runs/``. Resumable: finished run folders are kept and never rerun; unfinished ones
    are moved to ``failed_attempts/`` and their episodes run again, with their spend counted
    against the budgets.

    ``sandbox_factory`` and ``policy`` replace the ones built from ``cfg.sandbox`` and
    ``cfg.teacher`` (the stage runner passes neither).

    Raises ``TaskFormatError`` when the library cannot be read, ``MissingAPIKeyError`` (before any
    episode starts) when the teacher's key is not set, ``ConfigError`` for an invalid teacher or
    sandbox, and whatever unknown error stopped an episode (finished episodes stay on disk).
    """
    folders = RolloutFolders(ctx.out_dir)
    tasks, split = select_training_tasks(cfg, ctx.input("validate"))
    split.save(folders.split_file)
    plans = plan_episodes(cfg, tasks)
    finished = [p for p in plans if folders.finished(p.run_name)]
    todo = [p for p in plans if not folders.finished(p.run_name)]
    for plan in todo:  # left by a run of this stage that was killed mid-episode
        folders.move_aside(plan.run_name, plan.task_id, "interrupted", "the stage stopped before it finished")
    # the teacher's own cap is a cap on this stage's calls too, kept across resumed runs like the stage's
    teacher_cap = cfg.teacher.llm.budget_usd if cfg.teacher.kind == "llm" and policy is None else None
    budget, key = tightest(rollout__budget_usd=cfg.rollout.budget_usd, teacher__llm__budget_usd=teacher_cap)
    ledger = SpendLedger(
        budget,
        cfg.rollout.per_task_budget_usd,
        folders.spend_by_task(p.run_name for p in finished),
        budget_key=key,
    )
    log.info("rollout: %d episodes planned, %d already finished, $%.4f spent before", len(plans),
             len(finished), ledger.restored_usd)  # fmt: skip
    outcomes = [EpisodeOutcome(p, Outcome.FINISHED, folders.result(p.run_name)) for p in finished]
    with RolloutProgress(len(plans), cfg.rollout.progress_interval_s) as progress:
        progress.resumed(
            len(finished), sum(o.result.steps for o in outcomes if o.result), ledger.restored_usd
        )
        if todo:
            collector = Collector(
                policy=policy or _teacher(cfg, ctx, ledger), factory=sandbox_factory or _factory(cfg),
                agent_cfg=cfg.agent, cfg=cfg.rollout, ledger=ledger, folders=folders, progress=progress,
                label=f"rollout-{ctx.key}", config_key=ctx.key,
            )  # fmt: skip
            outcomes += _collect(cfg, ctx, collector, todo)
    order = {p.run_name: i for i, p in enumerate(plans)}
    outcomes.sort(key=lambda o: order[o.plan.run_name])
    _report(cfg, ctx, folders, outcomes)


def _collect(
    cfg: RootConfig, ctx: StageContext, collector: Collector, todo: list[EpisodePlan]
) -> list[EpisodeOutcome]:
    from stsc.rollout.tracing import model_call_tracing

    with model_call_tracing(cfg, ctx.tracker):
        return asyncio.run(_run_and_flush(collector, todo))


async def _run_and_flush(collector: Collector, todo: list[EpisodePlan]) -> list[EpisodeOutcome]:
    from stsc.rollout.tracing import flush_model_call_logs

    try:
        return await collector.run(todo)
    finally:
        await flush_model_call_logs()


def _factory(cfg: RootConfig) -> SandboxFactory:
    from stsc.sandbox import make_factory

    return make_factory(cfg.sandbox)


def _teacher(cfg: RootConfig, ctx: StageContext, ledger: SpendLedger) -> Policy:
    """The teacher policy; an ``llm`` one gets ``rollout.llm_concurrency`` calls in flight, the
    shared response cache and what is left of the stage budget. Raises ``MissingAPIKeyError``."""
    from stsc.agent.policies import make_policy

    teacher = cfg.teacher
    if teacher.kind == "llm":
        from stsc.llm import resolve_api_key
        from stsc.llm.providers import load_litellm

        resolve_api_key(teacher.llm)  # fail before any sandbox starts
        load_litellm()  # seconds to import: not inside the event loop, where it would stall every episode
        llm = dataclasses.replace(teacher.llm, concurrency=cfg.rollout.llm_concurrency)
        teacher = dataclasses.replace(teacher, llm=llm)
    return make_policy(teacher, cache_dir=ctx.store / LLM_CACHE_DIR, budget_usd=ledger.remaining_usd())


def episode_row(o: EpisodeOutcome) -> dict[str, Any]:
    """One row of the ``episodes`` table."""
    r = o.result
    return {
        "task": o.plan.task_id,
        "k": o.plan.k,
        "seed": o.plan.seed,
        "policy": r.policy if r else "",
        "outcome": o.outcome.value,
        "exit_status": r.exit_status if r else "",
        "steps": r.steps if r else 0,
        "tokens": r.tokens if r else 0,
        "cost_usd": r.cost_usd if r else 0.0,
        "best_score": r.best_score if r else None,
        "last_score": r.last_score if r else None,
        "baseline_score": r.baseline_score if r else None,
        "attempts": o.attempts,
        "run": o.plan.run_name,
        "error": o.error[:500],
    }


def _report(
    cfg: RootConfig, ctx: StageContext, folders: RolloutFolders, outcomes: list[EpisodeOutcome]
) -> None:
    """Funnel (episodes planned -> finished, drops by outcome), usage over every attempt ever made
    in this stage folder, the episodes table and the per-task bundles."""
    report = ctx.report
    report.add_in(len(outcomes))
    finished = [o for o in outcomes if o.outcome is Outcome.FINISHED]
    report.add_out(len(finished))
    for o in outcomes:
        if o.outcome is not Outcome.FINISHED:
            report.drop(o.outcome.value)
    total = Spend()
    for spend in folders.spend_by_task(o.plan.run_name for o in finished).values():
        total.add(spend)
    report.add_usage(total.prompt_tokens, total.completion_tokens, total.cost_usd)
    results = [o.result for o in finished if o.result is not None]
    statuses = Counter(r.exit_status for r in results)
    report.metrics.update(
        {
            "episodes_submitted": float(statuses.get("submitted", 0)),
            "episodes_scored": float(sum(1 for r in results if r.best_score is not None)),
            "steps": float(sum(r.steps for r in results)),
            "failed_attempts": float(len(folders.failed_attempts())),
            "tasks": float(len({o.plan.task_id for o in outcomes})),
        }
    )
    report.notes["exit_statuses"] = dict(sorted(statuses.items()))
    ctx.log_table("episodes", [episode_row(o) for o in outcomes])
    if cfg.rollout.bundles:
        by_task: dict[str, list[str]] = {}
        for o in finished:
            by_task.setdefault(o.plan.task_id, []).append(o.plan.run_name)
        for task_id, names in sorted(by_task.items()):
            ctx.artifacts.append(folders.write_bundle(task_id, names))
