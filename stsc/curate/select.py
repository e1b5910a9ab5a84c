"""Which trajectories the curate stage looks at: run discovery, the held-out guard, task_fraction.

Only training tasks may feed the SFT set: the library is split with ``stsc.synth.library`` (the
split the rollout stage used), and trajectories of held-out or unknown tasks are dropped before
anything is read from them. ``task_subset`` then keeps a seeded fraction of the training tasks that
have trajectories; it ranks tasks by a seeded hash of their id, so a smaller fraction always keeps a
subset of a larger one (the 25% subset lies inside the 50% subset) and adding a task never reshuffles
the others.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stsc.curate.records import DropReason, RunJob, TaskInfo
from stsc.errors import StageError

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
_FRACTION_EPS = 1e-9  # 0.3 * 10 is 3.0000000000000004 in floating point: still 3 tasks


@dataclass(frozen=True)
class Selection:
    """The jobs to convert (in output order), the drops decided from the folder name alone, and the
    task counts for ``stats.json``."""

    jobs: list[RunJob]
    drops: list[tuple[str, str, DropReason]]  # (run folder name, task id, reason)
    tasks: dict[str, int]


def subset_size(n: int, fraction: float) -> int:
    """How many of ``n`` tasks ``curate.task_fraction=fraction`` keeps: ``ceil(fraction * n)``."""
    return max(0, math.ceil(fraction * n - _FRACTION_EPS))


def task_subset(task_ids: Iterable[str], fraction: float, seed: int) -> list[str]:
    """The ``subset_size`` tasks of lowest seeded rank, sorted; nested in ``fraction``."""
    ids = sorted(set(task_ids))
    k = subset_size(len(ids), fraction)
    ranked = sorted(ids, key=lambda t: (hashlib.sha256(f"{seed}:{t}".encode()).hexdigest(), t))
    return sorted(ranked[:k])


def runs_root(rollout_dir: Path) -> Path:
    """``<rollout>/runs`` when present, else the rollout folder itself. Raises ``StageError``."""
    rollout_dir = Path(rollout_dir)
    root = rollout_dir / RUNS_DIR if (rollout_dir / RUNS_DIR).is_dir() else rollout_dir
    if not root.is_dir():
        raise StageError(f"the rollout output {rollout_dir} does not exist; run the rollout stage first")
    return root


def discover_runs(root: Path) -> list[tuple[Path, str]]:
    """``(run folder, task id)`` for every MLGym-layout run folder up to three levels under
    ``root``, sorted by task id, then folder name, then path (the SFT set's row order)."""
    from stsc.evaluation.runs import iter_run_folders, parse_run_folder_name

    found = []
    for path in iter_run_folders(root):
        name = parse_run_folder_name(path.name)
        assert name is not None
        found.append((path, name.task_id))
    found.sort(key=lambda item: (item[1], item[0].name, str(item[0])))
    return found


def load_library(
    validate_dir: Path, heldout_fraction: float, seed: int
) -> tuple[dict[str, TaskInfo], set[str]]:
    """``(training tasks by id, held-out task ids)`` of the validate stage's library, split by
    dataset exactly as the rollout stage splits it. Raises ``TaskFormatError`` for a bad library."""
    from stsc.synth.library import list_tasks, split_library

    tasks = list_tasks(validate_dir)
    split = split_library(tasks, heldout_fraction, seed)
    train = set(split.train)
    infos = {
        t.task_id: TaskInfo(t.task_id, t.meta.metric, t.meta.higher_is_better, t.meta.baseline_score)
        for t in tasks
        if t.task_id in train
    }
    return infos, set(split.heldout)


def select_runs(
    runs: list[tuple[Path, str]], train: dict[str, TaskInfo], heldout: set[str], fraction: float, seed: int
) -> Selection:
    """Guard the split, apply ``task_fraction``, and number the remaining runs in order."""
    candidates = {task_id for _, task_id in runs if task_id in train}
    keep = set(task_subset(candidates, fraction, seed))
    jobs: list[RunJob] = []
    drops: list[tuple[str, str, DropReason]] = []
    for path, task_id in runs:
        if task_id in heldout:
            drops.append((path.name, task_id, DropReason.HELDOUT_TASK))
        elif task_id not in train:
            drops.append((path.name, task_id, DropReason.UNKNOWN_TASK))
        elif task_id not in keep:
            drops.append((path.name, task_id, DropReason.TASK_FRACTION))
        else:
            jobs.append(RunJob(len(jobs), str(path), train[task_id]))
    if any(reason is DropReason.HELDOUT_TASK for _, _, reason in drops):
        log.warning("curate: dropped trajectories of held-out tasks; the rollout should not have run them")
    tasks = {
        "training": len(train),
        "heldout": len(heldout),
        "training_with_trajectories": len(candidates),
        "selected": len(keep),
    }
    return Selection(jobs, drops, tasks)
