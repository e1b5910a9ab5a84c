"""The ``evaluate`` stage: every method of the pool on every task of the suite, then AUP (paper step 9).

Inputs: ``validate`` (the task library, for ``eval.suite=library``) and ``sft`` (its ``model/``
checkpoint, when ``eval.include_sft_student``). Suites: ``stsc.evaluation.suites``; methods and
their policies: ``stsc.evaluation.models``.

Output (``ctx.out_dir``):

- ``runs/<model>__<task>__<agent>__t-<temp>__p-<top_p>__c-<cost>__install-0_run_<k>/``: one
  MLGym-layout run folder per finished episode (``<task>.traj``, ``results.json``, ``stsc.json``),
  ``eval.runs_per_task`` per method and task; ``<model>`` is the method name (``/`` -> ``--``);
  episode ``k`` of a task gets the same seed for every method;
- ``failed_attempts/``: partial run folders of attempts that failed on infrastructure, ran out of
  budget or were interrupted (the episode runs again; see ``stsc.rollout.collector``);
- ``suite.json`` (tasks, scoring, tasks left out), ``split.json`` (library suite), ``mlgym_tasks/``
  (MLGym suite: the imported task folders);
- ``aup.csv``, ``best_scores.csv``, ``last_scores.csv``, ``aup.json``, ``performance_profile.png``:
  AUP over the explicit pool (the methods plus ``baseline``) with seeded bootstrap intervals;
- ``paired.json`` (both students in the pool): the SFT student's AUP minus the base student's, with
  intervals from resampling the held-out tasks, and per-task wins/ties/losses (metrics
  ``aup_delta_best.sft_vs_base`` and its ``_lo``/``_hi``, ``aup_delta_last.sft_vs_base``).

Tracking: tables ``aup``, ``scores_best``, ``scores_last``, ``exit_status_counts`` (episodes per
method and exit status; unfinished ones under their outcome) and ``episodes``; metrics
``aup_best.<method>``, ``aup_last.<method>``, ``max_tau``, ``episodes_submitted``,
``episodes_scored``, ``steps``, ``failed_attempts``, ``tasks``, ``methods``; the output files above
plus ``suite.json`` and ``split.json`` as artifacts.

Resumable: finished run folders are kept and never rerun; the scores are recomputed from the
folders every time. API keys and student servers are checked for every method with episodes left
before the first episode starts. Funnel: items in = episodes planned (tasks left out of the suite count with
reason ``task_<why>``); out = finished episodes (whatever the agent's exit status); drops by reason
``infra_failed_after_retries``, ``budget_exhausted``, ``task_format_error``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stsc.config import RolloutConfig, RootConfig
from stsc.errors import StageError
from stsc.evaluation.models import EvalMethod, check_vllm_server, eval_agent_config, eval_methods
from stsc.evaluation.suites import SPLIT_FILE, SUITE_FILE, Suite, load_suite
from stsc.rollout.collector import EpisodeOutcome, Outcome
from stsc.rollout.folders import RolloutFolders, Spend
from stsc.rollout.plan import EpisodePlan
from stsc.sandbox.base import SandboxFactory
from stsc.store import StageContext, atomic_write_json

if TYPE_CHECKING:
    from stsc.evaluation.aup import AUPResult
    from stsc.rollout.budget import SpendLedger
    from stsc.rollout.progress import RolloutProgress

log = logging.getLogger(__name__)

LLM_CACHE_DIR = "llm_cache"


@dataclass(frozen=True)
class MethodOutcome:
    """How one planned episode of one method ended."""

    method: str
    outcome: EpisodeOutcome


def episode_seed(seed: int, task_id: str, k: int) -> int:
    """A 32-bit seed for the ``k``-th evaluation episode of ``task_id``, shared by all methods."""
    digest = hashlib.sha256(f"{seed}:evaluate:{task_id}:{k}".encode()).hexdigest()
    return int(digest[:8], 16)


def plan_method(cfg: RootConfig, suite: Suite, method: EvalMethod) -> list[EpisodePlan]:
    """``eval.runs_per_task`` episodes of ``method`` on every suite task, in task then ``k`` order."""
    from stsc.agent.trajectory import run_folder_name

    ev, agent = cfg.eval, eval_agent_config(cfg)
    llm = method.policy.llm
    return [
        EpisodePlan(
            task.task_id,
            task.task_dir,
            k,
            episode_seed(cfg.seed, task.task_id, k),
            run_folder_name(
                method.name, task.task_id, agent.name, llm.temperature, llm.top_p, ev.cost_limit_usd, k
            ),
        )  # fmt: skip
        for task in suite.tasks
        for k in range(ev.runs_per_task)
    ]


def _sft_checkpoint(ctx: StageContext) -> Path:
    folder = ctx.input("sft") / "model"
    if not (folder / "config.json").is_file():
        raise StageError(f"the sft stage output {folder} holds no checkpoint; rerun the sft stage")
    return folder


def _base_checkpoint(cfg: RootConfig, ctx: StageContext) -> Path:
    if cfg.eval.student_backend == "vllm" and cfg.student.source == "hub":
        return Path(cfg.student.model_id)  # the server loads it; nothing to build here
    from stsc.train.students import materialize_student, student_cache_dir

    return materialize_student(cfg.student, cache_dir=student_cache_dir(ctx.store))


def run_evaluate(
    cfg: RootConfig, ctx: StageContext, *, sandbox_factory: SandboxFactory | None = None
) -> None:
    """Evaluate every method on the suite and score the runs (see the module docstring).

    ``sandbox_factory`` replaces the one built from ``cfg.sandbox``. Raises ``ConfigError`` for an
    invalid suite or pool, ``StageError`` for a missing upstream output or an unreachable vLLM
    server, ``TaskFormatError`` for an unreadable library, ``MissingAPIKeyError`` before any episode
    of a method whose key is not set, and whatever unknown error stopped an episode (finished
    episodes stay on disk).
    """
    library = ctx.input("validate") if cfg.eval.suite == "library" else None
    suite = load_suite(cfg, library, ctx.out_dir)
    methods = eval_methods(
        cfg, sft_model=lambda: _sft_checkpoint(ctx), base_model=lambda: _base_checkpoint(cfg, ctx)
    )
    log.info("evaluate: %d methods x %d tasks x %d runs (%s suite)", len(methods), len(suite.tasks),
             cfg.eval.runs_per_task, suite.name)  # fmt: skip
    folders = RolloutFolders(ctx.out_dir)
    folders.runs.mkdir(parents=True, exist_ok=True)
    outcomes = _run_methods(cfg, ctx, suite, methods, folders, sandbox_factory)
    _score_and_report(cfg, ctx, suite, methods, folders, outcomes)


def _run_methods(
    cfg: RootConfig,
    ctx: StageContext,
    suite: Suite,
    methods: list[EvalMethod],
    folders: RolloutFolders,
    factory: SandboxFactory | None,
) -> list[MethodOutcome]:
    """Finished episodes from earlier runs of the stage, then the rest, one method at a time."""
    from stsc.rollout.budget import SpendLedger
    from stsc.rollout.progress import RolloutProgress

    plans = {m.name: plan_method(cfg, suite, m) for m in methods}
    every = [p for ps in plans.values() for p in ps]
    finished = [p for p in every if folders.finished(p.run_name)]
    for plan in every:  # left by a run of this stage that was killed mid-episode
        if not folders.finished(plan.run_name):
            folders.move_aside(
                plan.run_name, plan.task_id, "interrupted", "the stage stopped before it finished"
            )
    ledger = SpendLedger(
        cfg.eval.budget_usd,
        None,
        folders.spend_by_task(p.run_name for p in finished),
        budget_key="eval.budget_usd",
    )
    outcomes = [
        MethodOutcome(name, EpisodeOutcome(p, Outcome.FINISHED, folders.result(p.run_name)))
        for name, ps in plans.items()
        for p in ps
        if folders.finished(p.run_name)
    ]
    todo = {m.name: [p for p in plans[m.name] if not folders.finished(p.run_name)] for m in methods}
    for method in methods:
        if todo[method.name]:
            _preflight(method)
    with RolloutProgress(len(every)) as progress:
        progress.resumed(len(finished), sum(o.outcome.result.steps for o in outcomes), ledger.restored_usd)
        for method in methods:
            if todo[method.name]:
                factory = factory or _make_factory(cfg)
                spent = folders.spend_of(p.run_name for p in plans[method.name])
                done = _run_method(
                    cfg, ctx, method, todo[method.name], factory, ledger, folders, progress, spent
                )
                outcomes += [MethodOutcome(method.name, o) for o in done]
    order = {p.run_name: i for i, p in enumerate(every)}
    outcomes.sort(key=lambda o: order[o.outcome.plan.run_name])
    return outcomes


def _preflight(method: EvalMethod) -> None:
    """Fail before any episode starts: a missing API key, a student server not serving."""
    if method.policy.kind == "llm":
        from stsc.llm import resolve_api_key

        resolve_api_key(method.policy.llm)
        check_vllm_server(method)


def _make_factory(cfg: RootConfig) -> SandboxFactory:
    from stsc.sandbox import make_factory

    return make_factory(cfg.sandbox)


def _run_method(
    cfg: RootConfig,
    ctx: StageContext,
    method: EvalMethod,
    todo: list[EpisodePlan],
    factory: SandboxFactory,
    ledger: SpendLedger,
    folders: RolloutFolders,
    progress: RolloutProgress,
    spent_usd: float = 0.0,
) -> list[EpisodeOutcome]:
    """Run the ``todo`` episodes of one method with the rollout collector (concurrency, retries of
    infrastructure failures, budget). A model method's own ``llm.budget_usd`` is what is left of it
    after ``spent_usd``, its spend in earlier runs of the stage."""
    from stsc.agent.policies import make_policy
    from stsc.rollout.collector import Collector

    model_path = method.model_path if method.policy.kind == "transformers" else None
    policy_cfg = method.policy
    if policy_cfg.kind == "llm" and policy_cfg.llm.budget_usd is not None:
        left = max(0.0, policy_cfg.llm.budget_usd - spent_usd)
        policy_cfg = dataclasses.replace(policy_cfg, llm=dataclasses.replace(policy_cfg.llm, budget_usd=left))
    policy = make_policy(
        policy_cfg,
        cache_dir=ctx.store / LLM_CACHE_DIR,
        budget_usd=ledger.remaining_usd(),
        model_path=model_path,
    )
    ev = cfg.eval
    settings = RolloutConfig(
        concurrency=ev.concurrency, sandbox_concurrency=ev.concurrency, max_infra_retries=ev.max_infra_retries,
        infra_backoff_s=ev.infra_backoff_s,
    )  # fmt: skip
    collector = Collector(
        policy=policy, factory=factory, agent_cfg=eval_agent_config(cfg), cfg=settings, ledger=ledger,
        folders=folders, progress=progress, label=f"evaluate-{ctx.key}", config_key=ctx.key,
    )  # fmt: skip
    log.info("evaluate: %s: %d episodes to run", method.name, len(todo))
    return asyncio.run(collector.run(todo))


def episode_row(o: MethodOutcome) -> dict[str, Any]:
    """One row of the ``episodes`` table."""
    from stsc.rollout.stage import episode_row as rollout_row

    return {"model": o.method, **rollout_row(o.outcome)}


def exit_status_rows(outcomes: list[MethodOutcome]) -> list[dict[str, Any]]:
    """Episodes per method and exit status; episodes that did not finish count under their outcome."""
    counts: Counter[tuple[str, str]] = Counter()
    for o in outcomes:
        r = o.outcome.result
        status = r.exit_status if r is not None else o.outcome.outcome.value
        counts[(o.method, status)] += 1
    return [{"model": m, "exit_status": s, "count": n} for (m, s), n in sorted(counts.items())]


def _score_and_report(
    cfg: RootConfig,
    ctx: StageContext,
    suite: Suite,
    methods: list[EvalMethod],
    folders: RolloutFolders,
    outcomes: list[MethodOutcome],
) -> None:
    from stsc.evaluation.aup import compute_aup, write_aup_outputs
    from stsc.evaluation.runs import load_runs

    pool = [m.name for m in methods]
    runs = load_runs(folders.runs, models=pool, tasks=suite.task_ids)
    result = compute_aup(
        runs, suite.scorings(), pool, suite.task_ids, bootstrap=cfg.eval.bootstrap_samples, seed=ctx.seed
    )
    paths = write_aup_outputs(result, ctx.out_dir, suite=suite.name)
    paths += _compare_students(cfg, ctx, result, suite.name)
    log.info("evaluate: AUP over %s + baseline, max_tau %g: %s", pool, result.max_tau,
             {m: (result.best_aup[m], result.last_aup[m]) for m in result.methods})  # fmt: skip
    ctx.log_table("aup", result.rows())
    ctx.log_table("scores_best", result.best_scores.rows())
    ctx.log_table("scores_last", result.last_scores.rows())
    ctx.log_table("exit_status_counts", exit_status_rows(outcomes))
    ctx.log_table("episodes", [episode_row(o) for o in outcomes])
    extra = [ctx.out_dir / name for name in (SUITE_FILE, SPLIT_FILE) if (ctx.out_dir / name).is_file()]
    ctx.artifacts.extend([*paths, *extra])
    _funnel(cfg, ctx, suite, methods, folders, outcomes)
    ctx.report.metrics.update({f"aup_best.{m}": v for m, v in result.best_aup.items()})
    ctx.report.metrics.update({f"aup_last.{m}": v for m, v in result.last_aup.items()})
    for which, intervals in (("best", result.best_ci), ("last", result.last_ci)):
        for m, ci in intervals.items():  # empty without eval.bootstrap_samples
            ctx.report.metrics.update({f"aup_{which}_lo.{m}": ci.lo, f"aup_{which}_hi.{m}": ci.hi})
    ctx.report.metrics["max_tau"] = result.max_tau
    ctx.report.notes.update(pool=pool, tasks=suite.task_ids, max_tau=result.max_tau)


def _compare_students(cfg: RootConfig, ctx: StageContext, result: AUPResult, suite: str) -> list[Path]:
    """With both students in the pool: the SFT student against the base one, task-bootstrapped
    (``paired.json``, metrics ``aup_delta_*``); returns the files written."""
    from stsc.evaluation.bootstrap import PAIRED_FILE, describe_paired, paired_comparison
    from stsc.evaluation.models import BASE, SFT

    if SFT not in result.pool or BASE not in result.pool:
        return []
    comparison = paired_comparison(
        result, SFT, BASE, samples=cfg.eval.bootstrap_samples or 1000, seed=ctx.seed
    )
    paired = {**comparison.as_dict(), "suite": suite}
    log.info("evaluate: %s", describe_paired(paired))
    path = ctx.out_dir / PAIRED_FILE
    atomic_write_json(path, paired)
    ctx.log_table("paired", [paired])
    key = f"{SFT}_vs_{BASE}"
    ctx.report.metrics.update(
        {
            f"aup_delta_best.{key}": comparison.best_delta,
            f"aup_delta_best_lo.{key}": comparison.best_ci.lo,
            f"aup_delta_best_hi.{key}": comparison.best_ci.hi,
            f"aup_delta_last.{key}": comparison.last_delta,
        }
    )
    return [path]


def _funnel(
    cfg: RootConfig,
    ctx: StageContext,
    suite: Suite,
    methods: list[EvalMethod],
    folders: RolloutFolders,
    outcomes: list[MethodOutcome],
) -> None:
    report = ctx.report
    per_task = len(methods) * cfg.eval.runs_per_task
    report.add_in(len(outcomes) + per_task * len(suite.skipped))
    for reason in suite.skipped.values():
        report.drop(f"task_{reason}", per_task)
    finished = [o.outcome for o in outcomes if o.outcome.outcome is Outcome.FINISHED]
    report.add_out(len(finished))
    for o in outcomes:
        if o.outcome.outcome is not Outcome.FINISHED:
            report.drop(o.outcome.outcome.value)
    total = Spend()
    for spend in folders.spend_by_task(o.plan.run_name for o in finished).values():
        total.add(spend)
    report.add_usage(total.prompt_tokens, total.completion_tokens, total.cost_usd)
    results = [o.result for o in finished if o.result is not None]
    report.metrics.update(
        {
            "episodes_submitted": float(sum(1 for r in results if r.exit_status == "submitted")),
            "episodes_scored": float(sum(1 for r in results if r.best_score is not None)),
            "steps": float(sum(r.steps for r in results)),
            "failed_attempts": float(len(folders.failed_attempts())),
            "tasks": float(len(suite.tasks)),
            "methods": float(len(methods)),
        }
    )
