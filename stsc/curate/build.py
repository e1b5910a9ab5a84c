"""Converting run folders into examples, in this process or in a pool of worker processes.

``examine`` turns one ``RunJob`` into an ``Outcome``: it reads the run, applies the success filters,
builds the messages, measures them with the student's tokenizer, applies ``max_total_tokens`` and
truncation, and renders the JSONL row. Deduplication needs every earlier trajectory of the task and
is therefore applied by the caller, in output order (``Deduplicator``), before the token filters'
verdicts count: a trajectory dropped as a duplicate is never counted as too long.

``examine_all`` yields outcomes in job order. With more than one process it uses a ``spawn`` pool
whose workers each load the tokenizer once; rows travel back as strings, in order.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stsc.config import CurateConfig, HistoryConfig, StudentConfig
from stsc.curate.convert import (
    actions_sha256,
    best_score,
    build_messages,
    build_step_examples,
    check_scores,
    read_run,
)
from stsc.curate.records import DropReason, Outcome, RunJob
from stsc.curate.tokens import TokenCounter, load_student_tokenizer, truncate_turns
from stsc.errors import UnusableTrajectoryError

log = logging.getLogger(__name__)

# Below this many jobs the pool's start-up (a second or two per worker) costs more than it saves.
MIN_JOBS_PER_WORKER = 64
_CHUNK = 8

# Pre-dedup drops: the trajectory never reached the duplicate check.
PRE_DEDUP = frozenset(
    {
        DropReason.UNFINISHED_RUN,
        DropReason.UNREADABLE_RUN,
        DropReason.NO_SUCCESS,
        DropReason.NO_BASELINE_SCORE,
        DropReason.BELOW_BASELINE,
        DropReason.NO_ASSISTANT_TURN,
    }
)


@dataclass(frozen=True)
class BuildSettings:
    """Everything a worker needs (picklable)."""

    curate: CurateConfig
    history: HistoryConfig
    student: StudentConfig
    tokenizer_dir: str


def examine(job: RunJob, settings: BuildSettings, counter: TokenCounter) -> Outcome:
    """The outcome of one run folder (never raises for a bad run: that is a drop reason)."""
    cfg, path = settings.curate, Path(job.path)
    ids = {"index": job.index, "run": path.name, "task_id": job.task.task_id}
    try:
        record = read_run(path, job.task)
        digest = actions_sha256(record.actions)
        best = best_score(record, job.task)
        check_scores(record, job.task, cfg)
        messages = build_messages(record.history, cfg, settings.history)
    except UnusableTrajectoryError as e:
        return Outcome(**ids, reason=DropReason(e.reason))
    ids.update(actions_sha256=digest, best_score=best)
    total = counter.count(messages)
    if cfg.max_total_tokens is not None and total > cfg.max_total_tokens:
        return Outcome(**ids, reason=DropReason.TOO_MANY_TOKENS, tokens_full=total)
    if cfg.examples == "step":
        return _step_outcome(ids, record.history, settings, counter, total)
    turns, kept, tokens = len([m for m in messages if m["role"] == "assistant"]), messages, total
    if cfg.truncate and total > cfg.max_seq_len:
        fitted = truncate_turns(messages, counter, cfg.max_seq_len)
        if fitted is None:
            return Outcome(**ids, reason=DropReason.FIRST_TURN_TOO_LONG, tokens_full=total)
        kept, tokens = fitted
    kept_turns = len([m for m in kept if m["role"] == "assistant"])
    return Outcome(
        **ids,
        tokens_full=total,
        tokens=tokens,
        turns=kept_turns,
        turns_truncated=turns - kept_turns,
        line=row_line(kept),
    )


def _step_outcome(
    ids: dict, history: list[dict], settings: BuildSettings, counter: TokenCounter, total: int
) -> Outcome:
    """``curate.examples=step``: one row per response whose view fits ``max_seq_len`` (with
    ``truncate``; without it every step is kept)."""
    cfg = settings.curate
    rows, skipped = [], 0
    for messages in build_step_examples(history, cfg, settings.history):
        tokens = counter.count(messages)
        if cfg.truncate and tokens > cfg.max_seq_len:
            skipped += 1
            continue
        rows.append((row_line(messages, last_only=True), tokens))
    if not rows:
        return Outcome(
            **ids, reason=DropReason.FIRST_TURN_TOO_LONG, tokens_full=total, steps_too_long=skipped
        )
    return Outcome(
        **ids,
        tokens_full=total,
        tokens=sum(t for _, t in rows),
        turns=len(rows),
        steps=tuple(rows),
        steps_too_long=skipped,
    )


def row_line(messages: list[dict[str, str]], last_only: bool = False) -> str:
    """One JSONL row of the SFT set (no trailing newline); ``last_only`` marks a row whose last
    response alone is trained (``"loss": "last"``)."""
    row: dict = {"messages": messages}
    if last_only:
        row["loss"] = "last"
    return json.dumps(row, ensure_ascii=False)


class Deduplicator:
    """Drops a trajectory whose action sequence an earlier one of the same task already had."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    def apply(self, outcome: Outcome) -> Outcome:
        if outcome.reason in PRE_DEDUP:
            return outcome
        key = (outcome.task_id, outcome.actions_sha256)
        if key in self._seen:
            return Outcome(
                outcome.index, outcome.run, outcome.task_id, DropReason.DUPLICATE, outcome.actions_sha256
            )
        self._seen.add(key)
        return outcome


_WORKER: tuple[BuildSettings, TokenCounter] | None = None  # per worker process, set by _init_worker


def _init_worker(settings: BuildSettings) -> None:
    global _WORKER
    # Each worker already owns a core; the tokenizer's own thread pool would only oversubscribe them.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER = (settings, TokenCounter(load_student_tokenizer(Path(settings.tokenizer_dir), settings.student)))


def _examine_in_worker(job: RunJob) -> Outcome:
    assert _WORKER is not None, "the pool initializer did not run"
    return examine(job, *_WORKER)


def worker_count(requested: int, n_jobs: int) -> int:
    """Processes to use: ``requested`` (0 = one per CPU), at most one per ``MIN_JOBS_PER_WORKER``
    jobs, at least one."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    wanted = requested if requested > 0 else cpus
    return max(1, min(wanted, n_jobs // MIN_JOBS_PER_WORKER))


def examine_all(jobs: list[RunJob], settings: BuildSettings, processes: int) -> Iterator[Outcome]:
    """Outcomes of ``jobs``, in job order, computed by ``processes`` processes (1 = this one)."""
    if processes <= 1:
        counter = TokenCounter(load_student_tokenizer(Path(settings.tokenizer_dir), settings.student))
        for job in jobs:
            yield examine(job, settings, counter)
        return
    log.info("curate: converting %d runs with %d processes", len(jobs), processes)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes, initializer=_init_worker, initargs=(settings,)) as pool:
        yield from pool.imap(_examine_in_worker, jobs, chunksize=_CHUNK)
