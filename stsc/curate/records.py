"""Typed records of the curate stage: drop reasons, the per-trajectory job and its outcome, stats."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SCHEMA_VERSION = 2

# Upper edges (tokens) of the token-length histogram of kept examples; the last bin is open.
HISTOGRAM_EDGES = (512, 1024, 2048, 4096, 8192, 16384, 32768, 49152, 65536, 131072)


class DropReason(StrEnum):
    """Why a trajectory does not become an SFT example, in the order the checks run."""

    HELDOUT_TASK = "heldout_task"  # the task is held out for evaluation
    UNKNOWN_TASK = "unknown_task"  # the task is not in the task library
    TASK_FRACTION = "task_fraction"  # the task is outside the kept ``curate.task_fraction`` subset
    UNFINISHED_RUN = "unfinished_run"  # no ``stsc.json`` or no ``<task>.traj``: the episode never finished
    UNREADABLE_RUN = "unreadable_run"  # a run file is not valid JSON or lacks the MLGym fields
    NO_SUCCESS = "no_success"  # no scored submission with the priority metric
    NO_BASELINE_SCORE = "no_baseline_score"  # beating the baseline is required, but it is unknown
    BELOW_BASELINE = "below_baseline"  # the best score does not beat the baseline
    NO_ASSISTANT_TURN = "no_assistant_turn"  # the history holds no response of the teacher
    DUPLICATE = "duplicate"  # same action sequence as an earlier trajectory of the task
    TOO_MANY_TOKENS = "too_many_tokens"  # above ``curate.max_total_tokens`` before truncation
    FIRST_TURN_TOO_LONG = "first_turn_too_long"  # system + task + first response exceed max_seq_len


@dataclass(frozen=True)
class TaskInfo:
    """What the filters need to know about one library task (from its ``meta.json``)."""

    task_id: str
    metric: str
    higher_is_better: bool
    baseline_score: float | None


@dataclass(frozen=True)
class RunJob:
    """One run folder to convert. ``index`` is its position in the deterministic output order."""

    index: int
    path: str
    task: TaskInfo


@dataclass(frozen=True)
class Outcome:
    """What became of one run folder.

    ``reason`` is None for an example (``line`` then holds its JSONL row); a duplicate check still
    needs ``actions_sha256`` when a later filter dropped the trajectory. Token counts are 0 when
    tokenization was not reached.
    """

    index: int
    run: str
    task_id: str
    reason: DropReason | None = None
    actions_sha256: str = ""
    tokens_full: int = 0  # the whole example, before truncation
    tokens: int = 0  # the example as written
    turns: int = 0  # assistant turns written
    turns_truncated: int = 0  # trailing assistant turns removed by truncation
    best_score: float | None = None
    line: str | None = None
    # curate.examples=step: one (JSONL row, tokens) per kept response (``line`` is then None), and
    # the responses left out because their view exceeded max_seq_len (nothing is truncated)
    steps: tuple[tuple[str, int], ...] = ()
    steps_too_long: int = 0


@dataclass
class TaskCount:
    """Per-task funnel in ``stats.json``."""

    trajectories: int = 0
    examples: int = 0
    tokens: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass
class CurateStats:
    """``stats.json``: the funnel, token lengths and per-task counts of one SFT set."""

    schema_version: int = SCHEMA_VERSION
    config: dict[str, Any] = field(default_factory=dict)  # the curate config and the history view
    tokenizer: str = ""  # student name whose tokenizer measured every length
    trajectories: int = 0
    examples: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # DropReason -> count
    tasks: dict[str, int] = field(default_factory=dict)  # library/training/heldout/selected/with_examples
    truncated_examples: int = 0  # examples whose trailing turns truncation removed
    turns_truncated: int = 0
    steps_too_long: int = 0  # curate.examples=step: responses whose view exceeded max_seq_len
    tokens_total: int = 0
    tokens_mean: float = 0.0
    tokens_max: int = 0
    tokens_p50: int = 0
    tokens_p90: int = 0
    histogram: dict[str, Any] = field(default_factory=dict)  # {"edges": [...], "counts": [...]}
    per_task: dict[str, TaskCount] = field(default_factory=dict)
