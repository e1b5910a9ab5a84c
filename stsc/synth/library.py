"""The task library: the accepted task folders of a ``validate`` run, and its held-out split.

``list_tasks(folder)`` reads every task folder under ``folder`` (a ``validate`` stage folder, its
``library/`` sub-folder, or any folder of task folders). ``split_library`` splits the tasks *by
dataset*: every dataset is either held out or used for training, so no held-out task shares a
dataset with a training task. The split is a pure function of the dataset ids and the seed (each
dataset's side is decided by a seeded hash rank, so adding datasets rarely moves existing ones) and
is recorded with ``LibrarySplit.save``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from stsc.errors import TaskFormatError
from stsc.store import atomic_write_json, read_json
from stsc.synth.task import TASK_YAML, Task, load_task

log = logging.getLogger(__name__)

LIBRARY_DIR = "library"
SPLIT_FILE = "split.json"


def library_root(folder: Path) -> Path:
    """``folder/library`` when ``folder`` is a validate stage folder, else ``folder`` itself."""
    folder = Path(folder)
    return folder / LIBRARY_DIR if (folder / LIBRARY_DIR).is_dir() else folder


def list_tasks(folder: Path) -> list[Task]:
    """Every task under ``folder`` (see ``library_root``), sorted by id. Hidden folders (temp
    folders of an interrupted write) are skipped. Raises ``TaskFormatError`` when ``folder`` does not
    exist or a task folder cannot be read."""
    root = library_root(folder)
    if not root.is_dir():
        raise TaskFormatError(
            f"task library {root} does not exist; pass a validate stage folder or a folder of tasks"
        )
    if (root / TASK_YAML).is_file():
        return [load_task(root)]
    paths = sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / TASK_YAML).is_file()
    )
    return [load_task(p) for p in paths]


@dataclass(frozen=True)
class LibrarySplit:
    """Which tasks train (teacher rollouts, SFT) and which are held out (evaluation)."""

    seed: int
    heldout_fraction: float
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    train_datasets: tuple[str, ...]
    heldout_datasets: tuple[str, ...]

    def side(self, task_id: str) -> str:
        """``"train"`` or ``"heldout"``; raises ``KeyError`` for a task not in the split."""
        if task_id in self.train:
            return "train"
        if task_id in self.heldout:
            return "heldout"
        raise KeyError(f"task {task_id!r} is not part of this split")

    def to_dict(self) -> dict:
        return {
            "schema_version": 1,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()},
        }

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> LibrarySplit:
        data = read_json(path)
        data.pop("schema_version", None)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _rank(seed: int, dataset_id: str) -> str:
    return hashlib.sha256(f"{seed}:{dataset_id}".encode()).hexdigest()


def split_library(tasks: Sequence[Task], heldout_fraction: float, seed: int) -> LibrarySplit:
    """Hold out ``round(heldout_fraction * n_datasets)`` whole datasets (at least one when the
    fraction is positive and there are two or more datasets; never all unless the fraction is 1).
    Raises ``ValueError`` for a fraction outside [0, 1]."""
    if not 0.0 <= heldout_fraction <= 1.0:
        raise ValueError(
            f"heldout_fraction={heldout_fraction} must be between 0 and 1 (split.heldout_fraction)"
        )
    datasets = sorted({t.meta.dataset_id for t in tasks})
    n = len(datasets)
    if heldout_fraction >= 1.0:
        k = n
    elif heldout_fraction <= 0.0 or n < 2:
        k = 0
    else:
        k = min(max(round(heldout_fraction * n), 1), n - 1)
    if n == 1 and 0.0 < heldout_fraction < 1.0:
        log.warning("split: the library has a single dataset; nothing can be held out without sharing it")
    heldout_ds = set(sorted(datasets, key=lambda d: _rank(seed, d))[:k])
    ordered = sorted(tasks, key=lambda t: t.task_id)
    return LibrarySplit(
        seed=seed,
        heldout_fraction=heldout_fraction,
        train=tuple(t.task_id for t in ordered if t.meta.dataset_id not in heldout_ds),
        heldout=tuple(t.task_id for t in ordered if t.meta.dataset_id in heldout_ds),
        train_datasets=tuple(d for d in datasets if d not in heldout_ds),
        heldout_datasets=tuple(d for d in datasets if d in heldout_ds),
    )
