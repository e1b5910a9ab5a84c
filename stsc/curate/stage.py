"""The ``curate`` stage: teacher trajectories -> the SFT set (paper step 7).

Inputs: the rollout stage's run folders (``<rollout>/runs/``, MLGym layout, up to three levels deep)
and the validate stage's task library. Filters, in funnel order (each drop reason is a
``DropReason``): held-out and unknown tasks, ``task_fraction``, unfinished or unreadable runs,
``require_success``, ``require_beats_baseline``, a response-less history, ``dedup``,
``max_total_tokens`` (the example in the configured view, before truncation), then ``truncate`` to
``max_seq_len`` (an example whose first turn alone is too long is dropped). The library is split with
``split.*`` exactly as the rollout stage splits it. Views, system prompt and thinking:
``stsc.curate.convert``; token lengths (the student's tokenizer and training chat template):
``stsc.curate.tokens``.

Outputs (in ``ctx.out_dir``), each written atomically once every run is converted (a killed stage
simply runs again, removing its temp file; it is a pure function of its inputs):

- ``sft.jsonl``: rows ``{"messages": [{"role", "content"}, ...]}``, ordered by task id, then run
  folder name;
- ``index.jsonl``: line *i* describes row *i* (task, run folder, tokens, turns, truncation);
- ``stats.json``: ``CurateStats`` (kept, dropped per reason, truncation or, with
  ``curate.examples=step``, the responses left out as too long, token-length histogram, per-task
  counts).

The funnel goes to ``ctx.report`` (in = run folders found, out = examples) and the index rows to
``ctx.log_table("sft_examples", ...)``.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import IO

from stsc.config import RootConfig
from stsc.curate.build import BuildSettings, Deduplicator, examine_all, worker_count
from stsc.curate.records import HISTOGRAM_EDGES, CurateStats, DropReason, Outcome, TaskCount
from stsc.curate.select import discover_runs, load_library, runs_root, select_runs
from stsc.errors import ConfigError
from stsc.store import StageContext, atomic_write_json, write_jsonl

log = logging.getLogger(__name__)

SFT_FILE = "sft.jsonl"
INDEX_FILE = "index.jsonl"
STATS_FILE = "stats.json"


@contextmanager
def atomic_lines(path: Path) -> Iterator[IO[str]]:
    """A text file written line by line that appears at ``path`` only when the block succeeds."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Tally:
    """Accumulates the funnel, token lengths and per-task counts into ``CurateStats``."""

    def __init__(self, stats: CurateStats):
        self.stats = stats
        self.lengths: list[int] = []
        self.index: list[dict] = []

    def _task(self, task_id: str) -> TaskCount:
        return self.stats.per_task.setdefault(task_id, TaskCount())

    def drop(self, task_id: str, reason: DropReason, steps_too_long: int = 0) -> None:
        self.stats.trajectories += 1
        self.stats.steps_too_long += steps_too_long
        self.stats.dropped[reason.value] = self.stats.dropped.get(reason.value, 0) + 1
        task = self._task(task_id)
        task.trajectories += 1
        task.dropped[reason.value] = task.dropped.get(reason.value, 0) + 1

    def keep(self, outcome: Outcome) -> None:
        self.stats.trajectories += 1
        task = self._task(outcome.task_id)
        task.trajectories += 1
        self.stats.truncated_examples += int(outcome.turns_truncated > 0)
        self.stats.turns_truncated += outcome.turns_truncated
        self.stats.steps_too_long += outcome.steps_too_long
        # one example per trajectory, or one per response (curate.examples=step: never truncated)
        examples = (
            [(outcome.tokens, outcome.tokens_full, outcome.turns)]
            if not outcome.steps
            else [(t, t, 1) for _, t in outcome.steps]
        )
        for step, (tokens, tokens_full, turns) in enumerate(examples):
            task.examples += 1
            task.tokens += tokens
            self.lengths.append(tokens)
            row = {
                "row": len(self.index),
                "task_id": outcome.task_id,
                "run": outcome.run,
                "tokens": tokens,
                "tokens_full": tokens_full,
                "turns": turns,
                "turns_truncated": outcome.turns_truncated,
                "best_score": outcome.best_score,
            }
            if outcome.steps:
                row["run_example"] = step  # position among the kept responses of the run
            self.index.append(row)

    def finish(self) -> CurateStats:
        s, lengths = self.stats, sorted(self.lengths)
        s.examples = len(lengths)
        s.dropped = dict(sorted(s.dropped.items()))
        s.per_task = dict(sorted(s.per_task.items()))
        s.tasks["with_examples"] = sum(1 for t in s.per_task.values() if t.examples)
        s.tokens_total = sum(lengths)
        s.tokens_mean = round(s.tokens_total / len(lengths), 1) if lengths else 0.0
        s.tokens_max = lengths[-1] if lengths else 0
        s.tokens_p50 = quantile(lengths, 0.5)
        s.tokens_p90 = quantile(lengths, 0.9)
        s.histogram = histogram(lengths)
        return s


def quantile(ordered: list[int], q: float) -> int:
    """The nearest-rank ``q`` quantile of the sorted ``ordered`` (0 when empty): the smallest
    value with at least ``q`` of the values at or below it."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else 0


def histogram(lengths: list[int]) -> dict:
    """Counts of ``lengths`` per bin ``(previous edge, edge]`` of ``HISTOGRAM_EDGES``, plus an open
    last bin ``> last edge``."""
    counts = [0] * (len(HISTOGRAM_EDGES) + 1)
    for n in lengths:
        counts[next((i for i, edge in enumerate(HISTOGRAM_EDGES) if n <= edge), len(HISTOGRAM_EDGES))] += 1
    return {"edges": list(HISTOGRAM_EDGES), "counts": counts}


def check_config(cfg: RootConfig) -> None:
    """Cross-field rules of ``curate``; raises ``ConfigError`` naming the key."""
    c = cfg.curate
    if c.max_seq_len < 1:
        raise ConfigError(f"curate.max_seq_len={c.max_seq_len} must be at least 1")
    if c.max_total_tokens is not None and c.max_total_tokens < 1:
        raise ConfigError(
            f"curate.max_total_tokens={c.max_total_tokens} must be at least 1, or null for no limit"
        )
    if c.concurrency < 0:
        raise ConfigError(f"curate.concurrency={c.concurrency} must be 0 (one process per CPU) or more")
    if not c.include_system:
        log.warning(
            "curate: curate.include_system=false trains the student without the agent's system prompt "
            "(its command reference), which evaluation always sends: a train/test mismatch, meant as an "
            "ablation"
        )


def run_curate(cfg: RootConfig, ctx: StageContext) -> None:
    """Build ``sft.jsonl``, ``index.jsonl`` and ``stats.json`` (see the module docstring).

    Raises ``ConfigError`` for invalid curate settings, ``StageError`` when the rollout output is
    missing, ``TaskFormatError`` for an unreadable task library, and whatever materializing the
    student's tokenizer raises (``ConfigError``, ``HubError``).
    """
    from stsc.train.students import materialize_student, student_cache_dir

    check_config(cfg)
    for stale in ctx.out_dir.glob(f".{SFT_FILE}.*.tmp"):  # left by a killed run
        stale.unlink()
    runs = discover_runs(runs_root(ctx.input("rollout")))
    train, heldout = load_library(ctx.input("validate"), cfg.split.heldout_fraction, cfg.split.seed)
    selection = select_runs(runs, train, heldout, cfg.curate.task_fraction, cfg.curate.seed)
    config = {"curate": asdict(cfg.curate), "agent.history": asdict(cfg.agent.history)}
    tally = Tally(CurateStats(config=config, tokenizer=cfg.student.name, tasks=dict(selection.tasks)))
    for _, task_id, reason in selection.drops:
        tally.drop(task_id, reason)
    folder = materialize_student(cfg.student, student_cache_dir(ctx.store))
    settings = BuildSettings(cfg.curate, cfg.agent.history, cfg.student, str(folder))
    processes = worker_count(cfg.curate.concurrency, len(selection.jobs))
    dedup = Deduplicator() if cfg.curate.dedup else None
    with atomic_lines(ctx.out_dir / SFT_FILE) as sft:
        for outcome in examine_all(selection.jobs, settings, processes):
            outcome = dedup.apply(outcome) if dedup is not None else outcome
            if outcome.reason is not None:
                tally.drop(outcome.task_id, outcome.reason, outcome.steps_too_long)
                continue
            lines = [line for line, _ in outcome.steps] or [outcome.line]
            assert all(line is not None for line in lines)
            sft.write("".join(f"{line}\n" for line in lines))
            tally.keep(outcome)
    stats = tally.finish()
    write_jsonl(ctx.out_dir / INDEX_FILE, tally.index)
    atomic_write_json(ctx.out_dir / STATS_FILE, stats)
    _report(ctx, stats, tally.index)


def _report(ctx: StageContext, stats: CurateStats, index: list[dict]) -> None:
    ctx.report.add_in(stats.trajectories)
    ctx.report.add_out(stats.examples)
    for reason, n in stats.dropped.items():
        ctx.report.drop(reason, n)
    ctx.report.metrics.update(
        {
            "tokens_total": float(stats.tokens_total),
            "tokens_mean": float(stats.tokens_mean),
            "tokens_p90": float(stats.tokens_p90),
            "tokens_max": float(stats.tokens_max),
            "truncated_examples": float(stats.truncated_examples),
            "steps_too_long": float(stats.steps_too_long),
            "tasks_selected": float(stats.tasks.get("selected", 0)),
            "tasks_with_examples": float(stats.tasks.get("with_examples", 0)),
        }
    )
    ctx.artifacts.append(ctx.out_dir / STATS_FILE)
    ctx.log_table("sft_examples", index)
    log.info(
        "curate: %d trajectories -> %d examples (%d tokens); dropped %s",
        stats.trajectories,
        stats.examples,
        stats.tokens_total,
        stats.dropped or "nothing",
    )
