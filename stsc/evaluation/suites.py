"""Task suites: which task folders an evaluation runs, and how each is scored.

- ``library``: the held-out side of the task library (``stsc.synth.library.split_library``, split
  by dataset, so no held-out task shares a dataset with a training task); scoring from each task's
  ``meta.json``. The split is saved as ``split.json``.
- ``mlgym``: the tasks of a user's MLGym checkout (``eval.mlgym_root``), imported into stsc task
  folders by ``stsc.evaluation.mlgym_import``; scoring from ``MLGYM_TASKS``. By default the 13
  MLGym-Bench tasks present in the checkout; tasks MLGym-Bench does not score are refused.

``eval.tasks`` restricts either suite to the listed ids (every id must belong to the suite). The
chosen suite is saved as ``suite.json`` (task ids, folders, scoring, and tasks left out with why).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stsc.config import RootConfig, SplitConfig
from stsc.errors import ConfigError, TaskFormatError
from stsc.evaluation.mlgym_tasks import MLGYM_TASKS, TaskScoring, scoring_from_meta
from stsc.store import atomic_write_json

log = logging.getLogger(__name__)

SPLIT_FILE = "split.json"
SUITE_FILE = "suite.json"
MLGYM_TASKS_DIR = "mlgym_tasks"
SUITES = ("library", "mlgym")


@dataclass(frozen=True)
class SuiteTask:
    """One task to evaluate: its folder (the task contract) and its scoring."""

    task_id: str
    task_dir: Path
    scoring: TaskScoring


@dataclass(frozen=True)
class Suite:
    """The tasks of one evaluation, sorted by id; ``skipped`` maps tasks left out to the reason."""

    name: str
    tasks: tuple[SuiteTask, ...]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def task_ids(self) -> list[str]:
        return [t.task_id for t in self.tasks]

    def scorings(self) -> dict[str, TaskScoring]:
        return {t.task_id: t.scoring for t in self.tasks}

    def to_dict(self) -> dict:
        return {
            "schema_version": 1,
            "suite": self.name,
            "tasks": [
                {
                    "task_id": t.task_id,
                    "task_dir": str(t.task_dir),
                    "metric": t.scoring.metric,
                    "higher_is_better": t.scoring.higher_is_better,
                    "baseline": t.scoring.baseline,
                }
                for t in self.tasks
            ],
            "skipped": dict(sorted(self.skipped.items())),
        }

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())


def _chosen(available: Sequence[str], wanted: Sequence[str], what: str) -> list[str]:
    """``wanted`` (all of ``available`` when empty); raises ``ConfigError`` for ids not available."""
    if not wanted:
        return sorted(available)
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise ConfigError(
            f"eval.tasks names {unknown}, which are not {what}; choose from {sorted(available)}"
        )
    return sorted(set(wanted))


def library_suite(library: Path, split_cfg: SplitConfig, wanted: Sequence[str], out_dir: Path) -> Suite:
    """The held-out tasks of the library in ``library`` (a validate stage folder or a folder of
    tasks), restricted to ``wanted``; the split is written to ``out_dir/split.json``. Raises
    ``TaskFormatError`` when the library cannot be read, ``ConfigError`` when ``wanted`` names a
    task that is not held out or nothing is held out."""
    from stsc.synth.library import list_tasks, split_library

    tasks = {t.task_id: t for t in list_tasks(library)}
    split = split_library(list(tasks.values()), split_cfg.heldout_fraction, split_cfg.seed)
    split.save(Path(out_dir) / SPLIT_FILE)
    if not split.heldout:
        raise ConfigError(
            f"the library ({len(tasks)} tasks, {len(split.train_datasets)} datasets) has no held-out task "
            f"at split.heldout_fraction={split_cfg.heldout_fraction}; raise it or add datasets"
        )
    training = sorted(set(wanted) & set(split.train))
    if training:
        raise ConfigError(
            f"eval.tasks names training tasks {training}; evaluate held-out tasks only: {list(split.heldout)}"
        )
    chosen = _chosen(split.heldout, wanted, "held-out tasks of the library")
    suite_tasks = tuple(
        SuiteTask(tid, tasks[tid].path, scoring_from_meta(tasks[tid].meta.model_dump(), task_id=tid))
        for tid in chosen
    )
    log.info("evaluate: %d of %d held-out library tasks (%d datasets held out)", len(suite_tasks),
             len(split.heldout), len(split.heldout_datasets))  # fmt: skip
    return Suite("library", suite_tasks)


def mlgym_suite(mlgym_root: Path, wanted: Sequence[str], dest: Path) -> Suite:
    """MLGym tasks of the checkout ``mlgym_root``, imported under ``dest``. Default: the MLGym-Bench
    tasks found in the checkout. A task whose files are missing is skipped with its reason. Raises
    ``ConfigError`` for a checkout without task configs, or for ``wanted`` ids that are not in it
    or have no known priority metric."""
    from stsc.evaluation.mlgym_import import import_task, index_tasks

    sources = index_tasks(Path(mlgym_root))
    unscored = sorted(set(wanted) & set(sources) - set(MLGYM_TASKS))
    if unscored:
        raise ConfigError(
            f"eval.tasks names MLGym tasks {unscored} whose priority metric and direction are unknown; "
            f"choose from the MLGym-Bench tasks {sorted(MLGYM_TASKS)}"
        )
    available = [tid for tid in sources if tid in MLGYM_TASKS]
    chosen = _chosen(available, wanted, f"MLGym-Bench tasks in {mlgym_root}")
    skipped = {tid: "not_in_checkout" for tid in MLGYM_TASKS if tid not in sources and not wanted}
    suite_tasks = []
    for tid in chosen:
        try:
            folder = import_task(Path(mlgym_root), sources[tid], MLGYM_TASKS[tid], Path(dest))
        except TaskFormatError as e:
            log.warning("evaluate: MLGym task %s left out: %s", tid, e)
            skipped[tid] = "task_format_error"
            continue
        suite_tasks.append(SuiteTask(tid, folder, MLGYM_TASKS[tid]))
    log.info("evaluate: %d MLGym tasks from %s (%d left out)", len(suite_tasks), mlgym_root, len(skipped))
    return Suite("mlgym", tuple(suite_tasks), skipped)


def load_suite(cfg: RootConfig, library: Path | None, out_dir: Path) -> Suite:
    """The suite ``cfg.eval.suite`` names, saved as ``out_dir/suite.json``. ``library`` is the
    validate stage folder (needed by ``library`` only). Raises ``ConfigError`` for a bad choice, a
    missing ``eval.mlgym_root`` or an empty suite, and what the suite builders raise."""
    ev = cfg.eval
    if ev.suite == "library":
        if library is None:
            raise ConfigError("eval.suite=library needs the validate stage's task library")
        suite = library_suite(library, cfg.split, ev.tasks, out_dir)
    elif ev.suite == "mlgym":
        if not ev.mlgym_root:
            raise ConfigError("eval.suite=mlgym needs eval.mlgym_root=/path/to/MLGym (a checkout of MLGym)")
        suite = mlgym_suite(Path(ev.mlgym_root).expanduser(), ev.tasks, Path(out_dir) / MLGYM_TASKS_DIR)
    else:
        raise ConfigError(f"eval.suite={ev.suite!r} is not valid; choose one of {list(SUITES)}")
    suite.save(Path(out_dir) / SUITE_FILE)
    if not suite.tasks:
        raise ConfigError(f"the {suite.name} suite has no task to evaluate (left out: {suite.skipped})")
    return suite
