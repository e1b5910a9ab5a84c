"""The rollout stage's folder and what it says about finished, failed and interrupted episodes.

```
<stage>/runs/<run-name>/                       one finished episode (MLGym layout; ``stsc.json`` last)
<stage>/failed_attempts/<run-name>/attempt-<n>/  a partial run folder moved aside, plus failure.json
<stage>/bundles/<task_id>.tar.gz               the task's run folders, for the tracking run
<stage>/split.json                             the library split (train/held-out tasks and datasets)
```

A run folder without ``stsc.json`` is never finished: it is either in progress or was left by an
attempt that failed or was killed. Such folders are moved aside, never deleted, and the episode runs
again. Spend is read back from the folders (``stsc.json`` of finished runs, ``info.model_stats``
of each ``.traj`` moved aside), so budgets hold across resumed runs.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stsc.agent.trajectory import RESULT_FILE, EpisodeResult
from stsc.store import atomic_write_json

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
FAILED_DIR = "failed_attempts"
BUNDLES_DIR = "bundles"
SPLIT_FILE = "split.json"
FAILURE_FILE = "failure.json"


@dataclass
class Spend:
    """Tokens and USD recorded in run folders."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: Spend) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd


def traj_spend(folder: Path) -> tuple[str | None, Spend]:
    """``(task id, spend)`` of the ``<task_id>.traj`` in ``folder``; ``(None, Spend())`` without one.

    A snapshot torn by a crash mid-write (it is rewritten in place, from its start) still ends with
    the previous snapshot's ``info``: that spend is counted (it misses at most the last step's)."""
    for traj in sorted(Path(folder).glob("*.traj")):
        try:
            text = traj.read_text(encoding="utf-8", errors="replace")
            info = _info(text)
            stats = info.get("model_stats", {}) if isinstance(info, dict) else None
            if not isinstance(stats, dict):
                raise ValueError("no model_stats")
        except (OSError, ValueError):
            log.warning("rollout: unreadable trajectory %s; its spend is not counted", traj)
            return traj.stem, Spend()
        spend = Spend(
            int(stats.get("tokens_sent", 0)),
            int(stats.get("tokens_received", 0)),
            float(stats.get("total_cost", 0.0)),
        )
        return traj.stem, spend
    return None, Spend()


def _info(text: str) -> object:
    """The ``info`` of a .traj's text: the whole document's, or for a torn one the last complete
    ``"info": {...}`` at its end (the key the writer puts last). Raises ValueError if neither."""
    try:
        return json.loads(text).get("info", {})
    except (json.JSONDecodeError, AttributeError):
        pass
    key = '"info": '
    at = text.rfind(key)
    if at < 0:
        raise ValueError("no info object")
    info, end = json.JSONDecoder().raw_decode(text, at + len(key))
    if text[end:].strip() != "}":
        raise ValueError("the info object is not the end of the file")
    log.warning("rollout: a trajectory was torn by a crash; its spend is read from its last intact snapshot")
    return info


class RolloutFolders:
    """Paths and moves inside one rollout stage folder (see the module docstring)."""

    def __init__(self, out_dir: Path):
        self.root = Path(out_dir)
        self.runs = self.root / RUNS_DIR
        self.failed = self.root / FAILED_DIR
        self.bundles = self.root / BUNDLES_DIR
        self.split_file = self.root / SPLIT_FILE

    def run_dir(self, run_name: str) -> Path:
        return self.runs / run_name

    def finished(self, run_name: str) -> bool:
        return (self.runs / run_name / RESULT_FILE).is_file()

    def result(self, run_name: str) -> EpisodeResult:
        return EpisodeResult.read(self.runs / run_name)

    def move_aside(self, run_name: str, task_id: str, reason: str, message: str = "") -> Path | None:
        """Move the unfinished run folder of ``run_name`` to ``failed_attempts/<run_name>/attempt-<n>/``
        and record why in its ``failure.json``; returns the new path (None when there was no folder).
        A finished folder is never moved."""
        source = self.runs / run_name
        if not source.exists():
            return None
        assert not self.finished(run_name), f"{source} is finished and must not be moved"
        parent = self.failed / run_name
        parent.mkdir(parents=True, exist_ok=True)
        n = 1 + sum(1 for p in parent.iterdir() if p.name.startswith("attempt-"))
        while (parent / f"attempt-{n}").exists():
            n += 1
        dest = parent / f"attempt-{n}"
        os.rename(source, dest)
        record = {"task_id": task_id, "run_name": run_name, "attempt": n, "reason": reason,
                  "message": message, "moved_at": time.time()}  # fmt: skip
        atomic_write_json(dest / FAILURE_FILE, record)
        log.info("rollout: %s attempt %d moved aside (%s)", run_name, n, reason)
        return dest

    def failed_attempts(self) -> list[Path]:
        """Every attempt folder under ``failed_attempts/``, sorted."""
        if not self.failed.is_dir():
            return []
        return sorted(p for run in self.failed.iterdir() if run.is_dir() for p in run.iterdir() if p.is_dir())

    def spend_by_task(self, finished: Iterable[str]) -> dict[str, Spend]:
        """Spend per task id over the finished runs named in ``finished`` and every failed attempt."""
        totals: dict[str, Spend] = {}
        for task_id, spend in self._spends(finished, attempts_of=None):
            totals.setdefault(task_id, Spend()).add(spend)
        return totals

    def spend_of(self, run_names: Iterable[str]) -> float:
        """USD spent by the runs named (finished ones and their failed attempts), across resumes."""
        names = set(run_names)
        return sum(spend.cost_usd for _, spend in self._spends((n for n in names if self.finished(n)), names))

    def _spends(self, finished: Iterable[str], attempts_of: set[str] | None) -> Iterable[tuple[str, Spend]]:
        """``(task id, spend)`` of the finished runs named, then of the failed attempts of the runs
        in ``attempts_of`` (None: of every run)."""
        for name in finished:
            result = self.result(name)
            yield result.task_id, Spend(result.prompt_tokens, result.completion_tokens, result.cost_usd)
        for folder in self.failed_attempts():
            if attempts_of is None or folder.parent.name in attempts_of:
                task_id, spend = traj_spend(folder)
                if task_id is not None:
                    yield task_id, spend

    def write_bundle(self, task_id: str, run_names: Iterable[str]) -> Path:
        """``bundles/<task_id>.tar.gz`` of the task's run folders (``<run-name>/...`` inside),
        written atomically with fixed timestamps and owners, so equal folders give equal bytes."""
        self.bundles.mkdir(parents=True, exist_ok=True)
        path = self.bundles / f"{task_id}.tar.gz"
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as raw:
            with (
                gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
                tarfile.open(fileobj=gz, mode="w") as tar,
            ):
                for name in sorted(run_names):
                    _add_tree(tar, self.runs / name, name)
            raw.flush()
            os.fsync(raw.fileno())  # on disk before the rename publishes it
        os.replace(tmp, path)
        return path


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def _add_tree(tar: tarfile.TarFile, folder: Path, arcname: str) -> None:
    tar.add(folder, arcname=arcname, recursive=False, filter=_normalise)
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.is_symlink():
            _add_tree(tar, child, f"{arcname}/{child.name}")
        else:
            tar.add(child, arcname=f"{arcname}/{child.name}", recursive=False, filter=_normalise)
