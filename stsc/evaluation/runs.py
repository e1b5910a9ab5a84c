"""Reading folders of MLGym-layout run folders (reference/mlgym.md §4), stsc's and MLGym's own.

A run folder is named ``<model>__<taskId>__<agent>__t-<temp>__p-<top_p>__c-<cost>__install-<n>``
followed by ``_run_<k>`` (stsc, MLGym's default) or ``__parallel_agents_run_<k>`` (MLGym's published
benchmark runs). Model ids may contain ``-``, ``.``, single ``_`` and stsc's ``--`` in place of
``/``, but neither ``__`` nor a trailing ``_``; agent config names neither ``__`` nor a leading ``_``.
So the model ends at the first ``__`` and the agent starts after the last one before ``__t-``, and
the task id is everything between: it may start or end with ``_`` and contain ``__``. A model
filter compares whole ids, never prefixes.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stsc.agent.trajectory import safe_model_id
from stsc.errors import EvaluationError

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
STSC_META_FILE = "stsc.json"
# A stage folder's moved-aside attempts (stsc.rollout.folders.FAILED_DIR) hold partial copies of
# runs, not runs: never searched.
FAILED_ATTEMPTS_DIR = "failed_attempts"

_SEG = r"(?:(?!__).)*"
_RUN_NAME = re.compile(
    rf"^(?P<model>.+?)__(?P<task>.+)__(?P<agent>[^_]{_SEG}_?)"
    rf"__t-(?P<temperature>{_SEG})__p-(?P<top_p>{_SEG})__c-(?P<cost>{_SEG})__install-(?P<install>\d+)"
    r"(?:__parallel_agents)?_run_(?P<run>\d+)$"
)
_MAX_DEPTH = 3


@dataclass(frozen=True)
class RunFolderName:
    """The parts of a run folder's name; ``model`` is the folder-safe id."""

    model: str
    task_id: str
    agent: str
    temperature: str
    top_p: str
    cost: str
    run_index: int


def parse_run_folder_name(name: str) -> RunFolderName | None:
    """Parse a run folder name; None when ``name`` is not one (so other folders can sit beside runs)."""
    m = _RUN_NAME.match(name)
    if m is None:
        return None
    return RunFolderName(
        model=m["model"],
        task_id=m["task"],
        agent=m["agent"],
        temperature=m["temperature"],
        top_p=m["top_p"],
        cost=m["cost"],
        run_index=int(m["run"]),
    )


MetricDict = dict[str, float]


@dataclass(frozen=True)
class RunResult:
    """What one run folder holds for scoring.

    ``agent`` is the ordered list of metric dicts of every validate/submit (empty when the run scored
    nothing or has no ``results.json``); ``baseline`` the ``baseline`` dict (empty when absent);
    ``meta`` the content of ``stsc.json`` (empty for MLGym's runs). Metric values that are not finite
    numbers are dropped on reading, so every value here is a float.
    """

    model: str
    task_id: str
    run_index: int
    path: Path
    agent: tuple[MetricDict, ...] = ()
    baseline: MetricDict = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def values(self, metric: str) -> list[float]:
        """The ``metric`` values of the agent's entries, in order, skipping entries without it."""
        return [entry[metric] for entry in self.agent if metric in entry]


def _numeric_dict(raw: Any) -> MetricDict:
    if not isinstance(raw, dict):
        return {}
    out: MetricDict = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[str(key)] = float(value)
    return out


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"cannot read {path}: {exc}; fix or delete the run folder") from exc
    if not isinstance(data, dict):
        raise EvaluationError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def read_run(path: Path) -> RunResult:
    """Read one run folder.

    A folder without ``results.json``, or whose ``agent`` list is missing or empty, gives a run with
    no entries (it is ignored by scoring but still counted as a run). Raises :class:`EvaluationError`
    when the folder name is not a run folder name, or ``results.json`` or ``stsc.json`` exists but
    is not a JSON object.
    """
    path = Path(path)
    name = parse_run_folder_name(path.name)
    if name is None:
        raise EvaluationError(
            f"{path.name!r} is not a run folder name (<model>__<task>__<agent>__t-..._run_<k>)"
        )
    results: dict[str, Any] = {}
    if (path / RESULTS_FILE).is_file():
        results = _read_json_object(path / RESULTS_FILE)
    meta: dict[str, Any] = {}
    if (path / STSC_META_FILE).is_file():
        meta = _read_json_object(path / STSC_META_FILE)
    raw_agent = results.get("agent") or []
    if not isinstance(raw_agent, list):
        raise EvaluationError(f"{path / RESULTS_FILE}: 'agent' must be a list of metric dicts")
    return RunResult(
        model=name.model,
        task_id=name.task_id,
        run_index=name.run_index,
        path=path,
        agent=tuple(_numeric_dict(entry) for entry in raw_agent),
        baseline=_numeric_dict(results.get("baseline")),
        meta=meta,
    )


def iter_run_folders(root: Path) -> Iterator[Path]:
    """Yield run folders under ``root`` in sorted order.

    A folder whose name parses as a run folder is yielded and not descended into; other folders
    (e.g. MLGym's ``trajectories/<user>/``) are searched up to three levels deep, except a stage's
    ``failed_attempts/`` (so a whole rollout or evaluate stage folder can be given).
    """

    def walk(folder: Path, depth: int) -> Iterator[Path]:
        for child in sorted(p for p in folder.iterdir() if p.is_dir()):
            if child.name == FAILED_ATTEMPTS_DIR:
                continue
            if parse_run_folder_name(child.name) is not None:
                yield child
            elif depth < _MAX_DEPTH:
                yield from walk(child, depth + 1)

    root = Path(root)
    if not root.is_dir():
        raise EvaluationError(f"runs folder {root} does not exist or is not a folder")
    yield from walk(root, 1)


def load_runs(
    root: Path, models: Iterable[str] | None = None, tasks: Iterable[str] | None = None
) -> list[RunResult]:
    """Read every run folder under ``root``, optionally keeping only the given models and tasks.

    Models are compared as whole folder-safe ids (``org/name`` matches folder model ``org--name``;
    ``gpt-4o`` never matches ``gpt-4o-mini``). Runs are returned sorted by model, task, run index
    and path. Raises :class:`EvaluationError` as :func:`read_run` and when ``root`` is missing.
    """
    keep_models = None if models is None else {safe_model_id(m) for m in models}
    keep_tasks = None if tasks is None else set(tasks)
    runs = []
    for folder in iter_run_folders(root):
        name = parse_run_folder_name(folder.name)
        assert name is not None
        if keep_models is not None and name.model not in keep_models:
            continue
        if keep_tasks is not None and name.task_id not in keep_tasks:
            continue
        runs.append(read_run(folder))
    runs.sort(key=lambda r: (r.model, r.task_id, r.run_index, str(r.path)))
    logger.debug("read %d runs from %s", len(runs), root)
    return runs
