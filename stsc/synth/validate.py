"""The ``validate`` stage: self-debugging and acceptance of task drafts (paper step 5).

Each draft of ``<generate>/tasks/`` is copied to a scratch folder and checked by
``stsc.synth.checks.check_task`` (data build, baseline, evaluation, gates). On a failure the
failure report goes back to the generator model (``TaskFixer``), whose fixed files replace the old
ones, up to ``validate.max_rounds`` fixes; then the task is discarded with its last failure as the
reason. Without a model to fix with (``generator=template``) or with ``validate.self_debug=false``,
the gates still apply and the skipped self-debug is recorded in the task's history.

Outputs (in ``ctx.out_dir``): ``library/<task_id>/`` for every accepted task (built in a temp folder
and renamed, with ``baseline_scores``, ``baseline_score`` and ``self_debug_history`` filled in), and
``rejected.jsonl`` with one ``RejectedTask`` row per discarded task. Tasks in either are decided
and skipped by a rerun, and the fix calls recorded in their histories count against
``generator.llm.budget_usd``. Funnel: drafts in, accepted out, drops by failing step; tokens and USD
of the fix calls (of every run of the stage folder).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from stsc.config import RootConfig
from stsc.errors import LLMError, TaskFormatError
from stsc.sandbox.base import SandboxFactory
from stsc.store import JsonlJournal, StageContext
from stsc.synth.checks import CheckResult, Failure, Step, check_task, tail
from stsc.synth.generate import TASKS_DIR
from stsc.synth.task import (
    BUILD,
    META_FILE,
    TASK_YAML,
    DebugRound,
    TaskMeta,
    dump_yaml,
    load_task,
    publish_folder,
)

log = logging.getLogger(__name__)

LIBRARY_DIR = "library"
REJECTED_FILE = "rejected.jsonl"
WORK_DIR = ".work"


@dataclass
class FixResult:
    """A fix proposed by the generator model. ``files`` maps task-folder-relative paths to new
    contents; ``error`` is set (and ``files`` empty) when the answer could not be used."""

    files: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    prompt_sha256: str | None = None


class TaskFixer(Protocol):
    def fix(self, folder: Path, failure: Failure, attempt: int) -> FixResult:
        """Ask for fixed files of the task in ``folder`` after ``failure`` (``attempt`` >= 1).
        Raises ``LLMError`` when the model cannot be reached."""
        ...


class RejectedTask(BaseModel):
    """One row of ``rejected.jsonl``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: int = 1
    task_id: str
    dataset_id: str
    generator: str
    reason: str  # the failing step (``stsc.synth.checks.Step``)
    message: str
    fix_rounds: int
    history: list[DebugRound] = Field(default_factory=list)


@dataclass
class Outcome:
    task_id: str
    result: CheckResult
    history: list[DebugRound]

    @property
    def fix_rounds(self) -> int:
        return sum(1 for r in self.history if r.round > 0 and r.skipped is None)


def _summary(failure: Failure) -> str:
    if not failure.stderr.strip():
        return failure.message
    return f"{failure.message}\nstderr (tail): {tail(failure.stderr, 600)}"


def _round(
    index: int, result: CheckResult, fix: FixResult | None = None, skipped: str | None = None
) -> DebugRound:
    failure = result.failure
    return DebugRound(
        round=index,
        step=failure.step.value if failure else "ok",
        message=_summary(failure) if failure else f"baseline {result.metrics}",
        fixed_files=sorted(fix.files) if fix else [],
        prompt_sha256=fix.prompt_sha256 if fix else None,
        prompt_tokens=fix.prompt_tokens if fix else 0,
        completion_tokens=fix.completion_tokens if fix else 0,
        cost_usd=fix.cost_usd if fix else 0.0,
        skipped=skipped,
    )


def apply_fix(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def self_debug(
    work: Path,
    cfg: RootConfig,
    factory: SandboxFactory,
    fixer: TaskFixer | None,
    skipped: str | None,
    label: str,
) -> Outcome:
    """Check the task in ``work``; while it fails and fixes remain, apply the model's fix and recheck."""
    result = check_task(work, cfg.validate, factory, label)
    history = [_round(0, result, skipped=skipped)]
    attempt = 0
    while result.failure is not None and fixer is not None and attempt < cfg.validate.max_rounds:
        attempt += 1
        log.info("validate: %s failed at %s; asking for fix %d", work.name, result.failure.step, attempt)
        try:
            fix = fixer.fix(work, result.failure, attempt)
        except LLMError as e:  # its billed attempts stay in the ledger a rerun reads
            history.append(
                DebugRound(round=attempt, step="fix", reason="llm_error", message=str(e), cost_usd=e.cost_usd)
            )
            break
        if fix.error is not None:
            history.append(
                DebugRound(
                    round=attempt, step="fix", reason="malformed_output", message=fix.error,
                    prompt_sha256=fix.prompt_sha256, prompt_tokens=fix.prompt_tokens,
                    completion_tokens=fix.completion_tokens, cost_usd=fix.cost_usd,
                )
            )  # fmt: skip
            continue
        apply_fix(work, fix.files)
        result = check_task(work, cfg.validate, factory, label)
        history.append(_round(attempt, result, fix=fix))
    return Outcome(work.name, result, history)


def _usage(history: list[DebugRound]) -> tuple[int, int, float]:
    return (
        sum(r.prompt_tokens for r in history),
        sum(r.completion_tokens for r in history),
        sum(r.cost_usd for r in history),
    )


def publish_accepted(work: Path, library: Path, outcome: Outcome) -> Path:
    """Copy the accepted task (without ``build/``) into ``library/<task_id>`` atomically, recording
    the baseline score, the self-debug history and the id column (``Task.id_column``: a draft
    whose build writes the labels names it only in private/answers.csv)."""
    task = load_task(work)
    score = outcome.result.baseline_score
    prompt, completion, cost = _usage(outcome.history)
    meta = task.meta.model_copy(
        update={
            "id_column": task.id_column,
            "baseline_score": score,
            "public_baseline_scores": outcome.result.public_metrics,
            "self_debug_history": outcome.history,
            "tokens": task.meta.tokens + prompt + completion,
            "cost_usd": task.meta.cost_usd + cost,
        }
    )
    config = task.config.model_copy(update={"baseline_scores": [outcome.result.metrics]})
    tmp = Path(tempfile.mkdtemp(prefix=f".{task.task_id}.", dir=library))
    try:
        shutil.copytree(work, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(BUILD, "__pycache__"))
        (tmp / TASK_YAML).write_text(dump_yaml(config.model_dump()), encoding="utf-8")
        meta = TaskMeta.model_validate(meta.model_dump())
        (tmp / META_FILE).write_text(
            json.dumps(meta.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8"
        )
        publish_folder(tmp, library / task.task_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return library / task.task_id


def make_fixer(
    cfg: RootConfig, store: Path, seed: int, spent_usd: float = 0.0
) -> tuple[TaskFixer | None, str | None]:
    """The fixer, or None with the reason self-debug is skipped; ``spent_usd`` (the fix calls of
    earlier runs of the stage) counts against ``generator.llm.budget_usd``."""
    if not cfg.validate.self_debug:
        return None, "self-debug disabled (validate.self_debug=false)"
    if cfg.generator.kind != "llm":
        return None, f"generator={cfg.generator.kind} has no model to fix with"
    from stsc.synth.llm_generator import LLMTaskGenerator

    return LLMTaskGenerator.from_config(cfg.generator, store, seed, spent_usd), None


def decided(out_dir: Path) -> tuple[list[TaskMeta], list[RejectedTask]]:
    """The accepted tasks' metadata and the rejected rows already in ``out_dir``."""
    library = out_dir / LIBRARY_DIR
    accepted = (
        [load_task(p).meta for p in sorted(library.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        if library.is_dir()
        else []
    )
    rejected = [RejectedTask.model_validate(r) for r in JsonlJournal(out_dir / REJECTED_FILE).read()]
    return accepted, rejected


def fix_spend_usd(accepted: list[TaskMeta], rejected: list[RejectedTask]) -> float:
    """USD of the fix calls recorded in the self-debug histories of decided tasks."""
    return sum(_usage(h)[2] for h in [m.self_debug_history for m in accepted] + [r.history for r in rejected])


@dataclass
class Validator:
    """Decides drafts one by one (thread-safe): accepted ones into ``library``, rejected ones into
    ``journal``."""

    cfg: RootConfig
    factory: SandboxFactory
    fixer: TaskFixer | None
    skipped: str | None
    label: str
    out_dir: Path
    journal: JsonlJournal
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reject(self, row: RejectedTask) -> None:
        with self.lock:
            self.journal.append(row.model_dump(mode="json"))
        log.info("validate: rejected %s at %s", row.task_id, row.reason)

    def decide(self, draft: Path) -> None:
        try:
            meta = load_task(draft).meta
        except TaskFormatError as e:
            self.reject(RejectedTask(task_id=draft.name, dataset_id="", generator="", reason=Step.SHAPE.value,
                                     message=str(e), fix_rounds=0))  # fmt: skip
            return
        scratch = self.out_dir / WORK_DIR / draft.name
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(draft, scratch)
        outcome = self_debug(scratch, self.cfg, self.factory, self.fixer, self.skipped, self.label)
        failure = outcome.result.failure
        if failure is None:
            publish_accepted(scratch, self.out_dir / LIBRARY_DIR, outcome)
            log.info("validate: accepted %s (baseline %s)", draft.name, outcome.result.baseline_score)
        else:
            self.reject(
                RejectedTask(
                    task_id=draft.name, dataset_id=meta.dataset_id, generator=meta.generator,
                    reason=failure.step.value, message=failure.report(), fix_rounds=outcome.fix_rounds,
                    history=outcome.history,
                )
            )  # fmt: skip
        shutil.rmtree(scratch, ignore_errors=True)


def list_drafts(generate_dir: Path) -> list[Path]:
    folder = generate_dir / TASKS_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def run_validate(cfg: RootConfig, ctx: StageContext) -> None:
    """Stage ``validate`` (see module doc). Resumable: decided tasks are skipped.

    Raises ``SandboxError`` on sandbox infrastructure failure (decided tasks are kept).
    """
    from stsc.sandbox import make_factory

    drafts = list_drafts(ctx.input("generate"))
    library = ctx.out_dir / LIBRARY_DIR
    library.mkdir(parents=True, exist_ok=True)
    for stale in library.glob(".*"):
        shutil.rmtree(stale, ignore_errors=True)
    accepted, rejected = decided(ctx.out_dir)
    done = {m.task_id for m in accepted} | {r.task_id for r in rejected}
    todo = [d for d in drafts if d.name not in done]
    fixer, skipped = make_fixer(cfg, ctx.store, ctx.seed, fix_spend_usd(accepted, rejected))
    journal = JsonlJournal(ctx.out_dir / REJECTED_FILE)
    validator = Validator(
        cfg, make_factory(cfg.sandbox), fixer, skipped, f"validate-{ctx.key}", ctx.out_dir, journal
    )
    log.info("validate: %d drafts (%d already decided)", len(drafts), len(drafts) - len(todo))
    with ThreadPoolExecutor(max_workers=max(1, cfg.validate.concurrency)) as pool:
        for future in [pool.submit(validator.decide, d) for d in todo]:
            future.result()
    shutil.rmtree(ctx.out_dir / WORK_DIR, ignore_errors=True)
    _report(ctx, *decided(ctx.out_dir))


def _report(ctx: StageContext, metas: list[TaskMeta], rejected: list[RejectedTask]) -> None:
    """Funnel over everything decided in this stage folder (resumed runs included)."""
    ctx.report.add_in(len(metas) + len(rejected))
    ctx.report.add_out(len(metas))
    for row in rejected:
        ctx.report.drop(row.reason)
    for history in [m.self_debug_history for m in metas] + [r.history for r in rejected]:
        ctx.report.add_usage(*_usage(history))
    fixed = [m for m in metas if any(r.round > 0 and r.skipped is None for r in m.self_debug_history)]
    ctx.report.metrics.update(
        {
            "datasets_accepted": float(len({m.dataset_id for m in metas})),
            "accepted_after_fix": float(len(fixed)),
            "fix_rounds": float(sum(r.fix_rounds for r in rejected))
            + sum(sum(1 for h in m.self_debug_history if h.round > 0) for m in metas),
        }
    )
    rows = [
        {
            "task_id": m.task_id,
            "status": "accepted",
            "reason": "",
            "baseline": m.baseline_score,
            "dataset": m.dataset_id,
        }
        for m in metas
    ] + [
        {
            "task_id": r.task_id,
            "status": "rejected",
            "reason": r.reason,
            "baseline": None,
            "dataset": r.dataset_id,
        }
        for r in rejected
    ]
    ctx.log_table("validation", rows)
