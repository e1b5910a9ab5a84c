"""The dry-run plan: which stages run (or are cached), how many items, model calls, tokens and USD.

Counts follow the config; the per-call token sizes and stage yields below are planning assumptions
(from the paper where it reports them: ~50% of topics become tasks, ~60% of trajectories are kept),
stated in the printed plan so nobody mistakes them for measurements.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from stsc.config import LLMConfig, PolicyConfig, RootConfig, TopicsConfig

log = logging.getLogger(__name__)

# In a ``-m`` sweep's folder: one empty file per stage key a dry-run job of the sweep has planned.
PLANNED_DIR = ".stsc-planned"


@dataclass(frozen=True)
class Assumptions:
    verified_fraction: float = 0.7  # proposals whose dataset passes the Hub checks
    accepted_fraction: float = (
        0.7  # generated tasks surviving self-debug (paper: ~500 of ~1000 topics overall)
    )
    fix_rounds_mean: float = 1.5  # self-debug rounds per generated task
    steps_per_episode_mean: float = 0.8  # fraction of agent.max_steps an episode uses on average
    prompt_tokens_per_step: int = 12_000  # processed history the agent sends each step
    completion_tokens_per_step: int = 600
    topic_call: tuple[int, int] = (600, 1_500)  # (prompt, completion) tokens per call
    propose_call: tuple[int, int] = (1_500, 800)
    generate_call: tuple[int, int] = (4_000, 6_000)
    fix_call: tuple[int, int] = (8_000, 4_000)
    kept_fraction: float = 0.6  # paper: ~34k of 56k trajectories kept
    sft_tokens_per_example: int = 20_000


@dataclass
class StagePlan:
    name: str
    cached: bool
    items: int
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float | None = 0.0
    model: str = ""
    note: str = ""
    shared: bool = False  # an earlier job of the same sweep runs this stage key (counted there)


@dataclass
class Plan:
    stages: list[StagePlan] = field(default_factory=list)
    assumptions: Assumptions = field(default_factory=Assumptions)

    @property
    def total_usd(self) -> float | None:
        runs = [s for s in self.stages if not s.cached and not s.shared]
        costs = [s.usd for s in runs if s.usd is not None]
        unknown = any(s.usd is None for s in runs)
        return None if unknown else sum(costs)


def _usd(llm: LLMConfig, prompt: int, completion: int) -> float | None:
    if llm.input_cost_per_token is not None and llm.output_cost_per_token is not None:
        return prompt * llm.input_cost_per_token + completion * llm.output_cost_per_token
    try:
        from stsc.llm.providers import load_litellm

        p, c = load_litellm().cost_per_token(
            model=llm.model, prompt_tokens=prompt, completion_tokens=completion
        )
        return p + c
    except Exception:  # litellm raises a bare Exception for models missing from its price map
        log.info("no price known for %s; set input/output_cost_per_token to estimate it", llm.model)
        return None


def _llm_stage(
    name: str, llm: LLMConfig, calls: float, sizes: tuple[int, int], items: int, note: str
) -> StagePlan:
    calls_i = int(math.ceil(calls))
    prompt, completion = calls_i * sizes[0], calls_i * sizes[1]
    return StagePlan(
        name, False, items, calls_i, prompt, completion, _usd(llm, prompt, completion), llm.model, note
    )


def _policy_stage(
    name: str, policy: PolicyConfig, episodes: int, steps: float, a: Assumptions, note: str
) -> StagePlan:
    if policy.kind != "llm":
        return StagePlan(name, False, episodes, note=f"{note}; policy '{policy.name}' makes no API calls")
    calls = int(episodes * steps)
    prompt, completion = calls * a.prompt_tokens_per_step, calls * a.completion_tokens_per_step
    return StagePlan(
        name,
        False,
        episodes,
        calls,
        prompt,
        completion,
        _usd(policy.llm, prompt, completion),
        policy.llm.model,
        note,
    )


def _eval_methods(cfg: RootConfig) -> list[tuple[str, PolicyConfig]]:
    """``(name, policy)`` of every evaluated method, built as the evaluate stage builds them (a
    placeholder stands for the checkpoints, which do not exist yet); raises ``ConfigError`` as the
    stage would, for duplicate or reserved names."""
    from stsc.evaluation.models import eval_methods

    def checkpoint() -> Path:
        return Path("<checkpoint>")

    return [(m.name, m.policy) for m in eval_methods(cfg, sft_model=checkpoint, base_model=checkpoint)]


def _evaluate_stage(
    cfg: RootConfig, methods: list[tuple[str, PolicyConfig]], n_tasks: int, a: Assumptions
) -> StagePlan:
    """Every method runs ``n_tasks x eval.runs_per_task`` episodes of up to ``eval.max_steps`` steps;
    ``llm`` methods are priced like the rollout teacher, local and offline methods cost nothing."""
    per_method = n_tasks * cfg.eval.runs_per_task
    steps = cfg.eval.max_steps * a.steps_per_episode_mean
    sp = StagePlan(
        "evaluate",
        False,
        len(methods) * per_method,
        note=f"{len(methods)} models x {n_tasks} tasks x {cfg.eval.runs_per_task} runs, suite={cfg.eval.suite}",
    )
    models = []
    for _, policy in methods:
        if policy.kind != "llm":
            continue
        one = _policy_stage("evaluate", policy, per_method, steps, a, "")
        sp.calls += one.calls
        sp.prompt_tokens += one.prompt_tokens
        sp.completion_tokens += one.completion_tokens
        sp.usd = None if sp.usd is None or one.usd is None else sp.usd + one.usd
        models.append(policy.llm.model)
    sp.model = ", ".join(dict.fromkeys(models))
    return sp


def topic_expansion_calls(cfg: TopicsConfig) -> int:
    """Model calls the topics stage makes to expand the curated seeds, assuming every call parses and
    returns its batch without duplicates: as ``stsc.synth.topics`` does, each area's quota is filled
    from its own (deduplicated) seeds first, then every call asks one short area for at most
    ``batch_size`` topics, and the stage stops after ``max_llm_calls`` calls."""
    from stsc.store import StageReport
    from stsc.synth.topics import TopicPool, make_topic, quotas

    if not cfg.expand_with_llm:
        return 0
    scratch = TopicPool(cfg.dedup_threshold, StageReport(stage="plan"))
    curated = [make_topic(s.area, s.title, s.description, "curated") for s in cfg.seeds]
    seeds = [t for t in curated if scratch.add(t)]
    weights = dict(cfg.areas) if cfg.areas else dict.fromkeys(dict.fromkeys(t.area for t in seeds), 1.0)
    want = quotas(cfg.n, weights)
    have = {area: min(q, sum(t.area == area for t in seeds)) for area, q in want.items()}
    missing = [q - have[area] for area, q in want.items() if q > have[area]]
    if not missing:
        return 0
    if cfg.batch_size < 1:  # the stage asks for nothing per call until its cap
        return max(0, cfg.max_llm_calls)
    return max(0, min(cfg.max_llm_calls, sum(math.ceil(m / cfg.batch_size) for m in missing)))


def eval_task_count(cfg: RootConfig, n_heldout: int) -> int:
    """Tasks the evaluate stage runs: the listed ``eval.tasks``, else every task of the suite."""
    from stsc.evaluation.mlgym_tasks import MLGYM_TASKS

    if cfg.eval.tasks:
        return len(cfg.eval.tasks)
    return n_heldout if cfg.eval.suite == "library" else len(MLGYM_TASKS)


def _count(n: float) -> str:
    """``n`` in three significant digits with a k/M/B suffix."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def _first_to_plan(sweep_dir: Path, name: str, key: str) -> bool:
    """Whether this job is the first of its sweep to plan stage ``name`` under ``key`` (atomic: with
    parallel jobs exactly one is)."""
    marker = sweep_dir / PLANNED_DIR / f"{name}-{key}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


def make_plan(cfg: RootConfig, a: Assumptions | None = None, sweep_dir: Path | None = None) -> Plan:
    """Estimate every selected stage; stages whose output is already in the store are marked cached.

    In a ``-m`` sweep (``sweep_dir``) a stage key that an earlier job of the sweep planned is marked
    shared: the jobs share it when they run (a forced one too: ``force`` recomputes a key once per
    sweep), so the sweep's cost is the sum of the jobs' totals."""
    from stsc.curate.select import subset_size
    from stsc.pipeline import compute_keys, descendants, is_complete, select_stages, stage_dir

    a = a or Assumptions()
    keys = compute_keys(cfg)
    n_topics = cfg.topics.n
    n_props = n_topics
    n_verified = int(n_props * a.verified_fraction) if cfg.hub.kind == "huggingface" else n_props
    n_generated = n_verified * (cfg.generator.tasks_per_dataset if cfg.generator.kind == "template" else 1)
    n_tasks = int(n_generated * a.accepted_fraction)
    # the rollout runs every training task (up to rollout.max_tasks); curate.task_fraction only
    # selects which tasks' trajectories the curate stage keeps
    n_train = int(n_tasks * (1 - cfg.split.heldout_fraction))
    if cfg.rollout.max_tasks is not None:
        n_train = min(n_train, max(0, cfg.rollout.max_tasks))
    n_heldout = n_tasks - int(n_tasks * (1 - cfg.split.heldout_fraction))
    episodes = n_train * cfg.rollout.per_task
    n_curated_tasks = subset_size(n_train, cfg.curate.task_fraction)
    kept = int(n_curated_tasks * cfg.rollout.per_task * a.kept_fraction)
    steps = cfg.agent.max_steps * a.steps_per_episode_mean
    n_eval_tasks = eval_task_count(cfg, n_heldout)
    plans = {
        "topics": _llm_stage(
            "topics",
            cfg.topics.llm,
            topic_expansion_calls(cfg.topics),
            a.topic_call,
            n_topics,
            f"<= {cfg.topics.batch_size} topics per call, at most {cfg.topics.max_llm_calls} calls"
            if cfg.topics.expand_with_llm
            else "curated seeds only",
        ),
        "propose": _llm_stage(
            "propose",
            cfg.propose.llm,
            n_topics if cfg.propose.kind == "llm" else 0,
            a.propose_call,
            n_props,
            f"propose.kind={cfg.propose.kind}",
        ),
        "verify": StagePlan(
            "verify",
            False,
            n_verified,
            note=f"hub={cfg.hub.kind}; ~{n_props * cfg.propose.max_candidates} lookups",
        ),
        "generate": _llm_stage(
            "generate",
            cfg.generator.llm,
            n_verified if cfg.generator.kind == "llm" else 0,
            a.generate_call,
            n_generated,
            f"generator={cfg.generator.kind}",
        ),
        "validate": _llm_stage(
            "validate",
            cfg.generator.llm,
            n_generated * a.fix_rounds_mean if cfg.generator.kind == "llm" and cfg.validate.self_debug else 0,
            a.fix_call,
            n_tasks,
            f"max_rounds={cfg.validate.max_rounds}",
        ),
        "rollout": _policy_stage(
            "rollout",
            cfg.teacher,
            episodes,
            steps,
            a,
            f"{n_train} training tasks x {cfg.rollout.per_task} trajectories",
        ),
        "curate": StagePlan(
            "curate",
            False,
            kept,
            note=f"{n_curated_tasks} of {n_train} training tasks (task_fraction={cfg.curate.task_fraction}); "
            f"<= {cfg.curate.max_total_tokens} tokens",
        ),
        "sft": StagePlan(
            "sft",
            False,
            kept,
            note=f"~{_count(kept * a.sft_tokens_per_example)} tokens x "
            f"{cfg.sft.num_train_epochs} epochs; {cfg.student.name}, {cfg.sft.method}",
        ),
        "evaluate": _evaluate_stage(cfg, _eval_methods(cfg), n_eval_tasks, a),
        "report": StagePlan("report", False, 1),
    }
    plan = Plan(assumptions=a)
    for name in select_stages(list(cfg.stages)):
        sp = plans.get(name) or StagePlan(name, False, 0, note="plugin stage")
        forced = name in descendants(list(cfg.force))  # force recomputes descendants too
        sp.cached = is_complete(stage_dir(cfg.store_path, name, keys[name])) and not forced
        sp.shared = (
            not sp.cached and sweep_dir is not None and not _first_to_plan(sweep_dir, name, keys[name])
        )
        plan.stages.append(sp)
    return plan


def format_plan(plan: Plan) -> str:
    header = f"{'stage':<9} {'status':<7} {'items':>8} {'calls':>10} {'tokens in':>14} {'tokens out':>12} {'USD':>11}  model / note"
    lines = ["Dry run: nothing will be executed.", "", header, "-" * len(header)]
    for s in plan.stages:
        usd = "unknown" if s.usd is None else f"{s.usd:,.2f}"
        status = "cached" if s.cached else "shared" if s.shared else "run"
        what = " ".join(x for x in (s.model, f"({s.note})" if s.note else "") if x)
        lines.append(
            f"{s.name:<9} {status:<7} {s.items:>8,} {s.calls:>10,} {s.prompt_tokens:>14,} "
            f"{s.completion_tokens:>12,} {usd:>11}  {what}"
        )
    total = plan.total_usd
    lines.append("-" * len(header))
    lines.append(f"estimated total: {'unknown (some prices missing)' if total is None else f'${total:,.2f}'}")
    if any(s.shared for s in plan.stages):
        lines.append("shared: run by an earlier job of this sweep and counted in its total, not here")
    lines.append(f"assumptions: {plan.assumptions}")
    return "\n".join(lines)
