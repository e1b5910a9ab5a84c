"""How each task is scored: priority metric, direction and baseline.

MLGym keeps the priority metric and direction of its tasks in its evaluation code, not in the task
yaml, so the 13 MLGym-Bench tasks are listed here (reference/mlgym.md §5). stsc tasks carry the same
facts in their ``meta.json`` (fields ``metric``, ``higher_is_better``, ``baseline_score``); the
loaders below turn those files into :class:`TaskScoring` records. A scoring mapping is a plain
``dict[task_id, TaskScoring]``; :func:`merge_scorings` combines several with later ones winning.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stsc.errors import TaskFormatError

logger = logging.getLogger(__name__)

META_FILE = "meta.json"


@dataclass(frozen=True)
class TaskScoring:
    """The scoring facts of one task.

    ``metric`` is the priority key of the metric dicts in ``results.json``; ``higher_is_better`` its
    direction; ``baseline`` the task's baseline score, used only when no run's ``results.json``
    ``baseline`` dict holds the metric (None = unknown).
    """

    task_id: str
    metric: str
    higher_is_better: bool
    baseline: float | None = None

    def is_better(self, a: float, b: float) -> bool:
        """True iff score ``a`` is strictly better than score ``b`` in this task's direction."""
        return a > b if self.higher_is_better else a < b


def _mlgym(task_id: str, metric: str, higher: bool, baseline: float) -> tuple[str, TaskScoring]:
    return task_id, TaskScoring(task_id, metric, higher, baseline)


MLGYM_TASKS: dict[str, TaskScoring] = dict(
    [
        _mlgym("regressionKaggleHousePrice", "r2", True, 0.8799891474739243),
        _mlgym("3SATTime", "Time", False, 16.158),
        _mlgym("imageClassificationCifar10", "accuracy", True, 0.4971),
        _mlgym("imageClassificationFMnist", "accuracy", True, 0.7835),
        _mlgym("imageCaptioningCOCO", "BLEU Score", True, 0.2793602467563585),
        _mlgym("languageModelingFineWeb", "val_loss", False, 4.672730922698975),
        _mlgym("naturalLanguageInferenceMNLI", "validation_accuracy", True, 52.51146204788589),
        _mlgym("battleOfSexes", "Score", True, 1.0226699113845825),
        _mlgym("prisonersDilemma", "Score", True, 2.3716301918029785),
        _mlgym("blotto", "Score", True, -0.24797001481056213),
        _mlgym("rlBreakoutMinAtar", "Reward Mean", True, 48.81718826293945),
        _mlgym("rlMetaMazeMisc", "Reward Mean", True, 15.734375),
        _mlgym("rlMountainCarContinuous", "Reward Mean", True, 33.793758392333984),
    ]
)
"""The 13 MLGym-Bench tasks (MLGym ``9d40c1b``), keyed by task id."""


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def scoring_from_meta(meta: Mapping[str, Any], task_id: str | None = None) -> TaskScoring:
    """Build a :class:`TaskScoring` from a task's ``meta.json`` (or a run's ``stsc.json``) content.

    ``task_id`` defaults to ``meta["task_id"]``. The baseline is read from ``baseline_score`` when it
    is a finite number. Raises :class:`TaskFormatError` when the task id, ``metric`` (non-empty
    string) or ``higher_is_better`` (bool) is missing or mistyped.
    """
    tid = task_id if task_id is not None else meta.get("task_id")
    metric = meta.get("metric")
    higher = meta.get("higher_is_better")
    if not isinstance(tid, str) or not tid:
        raise TaskFormatError(f"task metadata has no task_id (got {tid!r}); add a 'task_id' string")
    if not isinstance(metric, str) or not metric:
        raise TaskFormatError(f"task {tid}: 'metric' must be the priority metric key, got {metric!r}")
    if not isinstance(higher, bool):
        raise TaskFormatError(f"task {tid}: 'higher_is_better' must be true or false, got {higher!r}")
    return TaskScoring(tid, metric, higher, _as_number(meta.get("baseline_score")))


def has_scoring_fields(meta: Mapping[str, Any]) -> bool:
    """True iff ``meta`` names a priority metric and a direction (as ``meta.json`` always does)."""
    return isinstance(meta.get("metric"), str) and isinstance(meta.get("higher_is_better"), bool)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TaskFormatError(f"cannot read task metadata {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise TaskFormatError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def load_task_meta_dir(root: Path) -> dict[str, TaskScoring]:
    """Read the scoring of every task folder under ``root``.

    ``root`` is either one task folder (it holds ``meta.json``) or a folder of task folders (each
    ``<task>/meta.json``). The task id is ``meta.json``'s ``task_id``, else the folder name.
    Raises :class:`TaskFormatError` when ``root`` holds no ``meta.json`` at all, or a file is
    malformed.
    """
    root = Path(root)
    candidates = [root / META_FILE] if (root / META_FILE).is_file() else sorted(root.glob(f"*/{META_FILE}"))
    if not candidates:
        raise TaskFormatError(
            f"no {META_FILE} found in {root} or its sub-folders; pass a task folder or a folder of tasks"
        )
    scorings: dict[str, TaskScoring] = {}
    for path in candidates:
        meta = _read_meta(path)
        tid = meta.get("task_id") or path.parent.name
        scorings[tid] = scoring_from_meta(meta, task_id=tid)
    logger.debug("read scoring of %d tasks from %s", len(scorings), root)
    return scorings


def merge_scorings(*mappings: Mapping[str, TaskScoring]) -> dict[str, TaskScoring]:
    """Combine scoring mappings; for a task in several, the later mapping wins."""
    merged: dict[str, TaskScoring] = {}
    for mapping in mappings:
        merged.update(mapping)
    return merged
