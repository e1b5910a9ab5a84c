"""The task folder: one self-contained MLGym-layout task, its records, and its shape check.

Layout (``<task_id>/``)::

    task.yaml            MLGym TaskConfig (MLGym field names only)
    datasets/<name>.yaml MLGym DatasetConfig(s)
    workspace/           what the agent's workspace starts as: baseline.py, evaluate.py,
                         sample_submission.csv, data/{train,validation,test}.csv (test without labels)
    private/             held-out labels (answers.csv); never copied into an agent workspace
    meta.json            ``TaskMeta``: provenance, id column, priority metric and direction, baseline, cost

A *draft* (the ``generate`` stage's output) may additionally hold ``build/`` (a data-preparation
script and the raw table it reads) and may still lack data and a baseline score; ``validate`` turns
drafts into library tasks. :func:`check_task_folder` checks either kind before any sandbox or agent
time is spent on it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stsc.errors import TaskFormatError
from stsc.store import fsync_path, read_yaml

SCHEMA_VERSION = 2  # 2: meta.json records the id column (``TaskMeta.id_column``)
TASK_YAML = "task.yaml"
META_FILE = "meta.json"
WORKSPACE = "workspace"
PRIVATE = "private"
DATASETS = "datasets"
ANSWERS = "answers.csv"
BUILD = "build"
SUBMISSION_HEADER = "SUBMISSION FORMAT:"
DATA_FILES = ("train.csv", "validation.csv", "test.csv")
PRIVATE_ENV = "STSC_PRIVATE_DIR"
CSV_ENTRYPOINT = "CSVSubmissionTasks"
STARTER_CODE = (f"{WORKSPACE}/baseline.py", f"{WORKSPACE}/evaluate.py", f"{WORKSPACE}/sample_submission.csv")
MAX_TASK_ID = 80  # characters
_TASK_ID = re.compile(rf"^[a-z0-9][a-z0-9-]{{0,{MAX_TASK_ID - 1}}}$")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TaskConfig(_Model):
    """``task.yaml``: exactly MLGym's TaskConfig field names (reference/mlgym.md §1).

    Paths are relative to the task folder (``starter_code``, ``sample_submission``,
    ``dataset_configs``) or to the workspace (``baseline_paths``, ``evaluation_paths``).
    """

    id: str
    name: str
    description: str
    dataset_configs: list[str]
    task_entrypoint: str = CSV_ENTRYPOINT
    training_timeout: int = 300  # seconds
    use_generic_conda: bool = True
    starter_code: list[str] = Field(default_factory=list)
    baseline_paths: list[str] = Field(default_factory=lambda: ["baseline.py"])
    baseline_scores: list[dict[str, float]] = Field(default_factory=list)
    sample_submission: str = f"{WORKSPACE}/sample_submission.csv"
    evaluation_paths: list[str] = Field(default_factory=lambda: ["evaluate.py"])
    evaluation_read_only: bool = True


class DatasetConfig(_Model):
    """``datasets/<name>.yaml``: MLGym's DatasetConfig. ``description`` documents every field."""

    name: str
    description: str
    data_path: str
    is_local: bool = True


TASK_CONFIG_FIELDS = frozenset(TaskConfig.model_fields)
DATASET_CONFIG_FIELDS = frozenset(DatasetConfig.model_fields)


class DebugRound(_Model):
    """One round of validation: what ran, what failed, and what the fix cost.

    ``round`` 0 is the generated task; round k >= 1 runs after the k-th fix. ``step`` names what
    failed ("prepare", "baseline", "evaluate", "gate:<name>", ...) or "ok"; ``skipped`` explains why
    no fix was requested (template generator, self-debug off).
    """

    round: int
    step: str
    reason: str = ""
    message: str = ""
    fixed_files: list[str] = Field(default_factory=list)
    prompt_sha256: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    skipped: str | None = None


class TaskMeta(_Model):
    """``meta.json``: what MLGym's yaml cannot say. ``metric`` is the priority key of evaluate.py's
    JSON; ``metric_bounds`` is ``[lo, hi]`` (either may be None = unbounded) or None when unknown."""

    schema_version: int = SCHEMA_VERSION
    task_id: str
    topic_id: str
    topic_title: str
    area: str
    dataset_id: str
    dataset_revision: str | None
    license: str | None
    task_type: str
    target: str
    # The column of ids in private/answers.csv, the data files and submissions. None in tasks written
    # before it was recorded and in drafts whose build/prepare.py writes the labels (``Task.id_column``
    # then reads the first column of private/answers.csv, where the task contract puts it).
    id_column: str | None = None
    metric: str
    higher_is_better: bool
    metric_bounds: tuple[float | None, float | None] | None = None
    baseline_score: float | None = None
    # With a public split, `validate` scores the public test rows and submissions the others;
    # ``public_baseline_scores`` is the baseline's metrics on the public rows (what validate shows).
    public_split: bool = False
    public_baseline_scores: dict[str, float] = Field(default_factory=dict)
    # Tasks built by ``build/prepare.py``: the share of test ids the build lists as public (in
    # private/public_ids.csv, drawn after prepare.py ran; see ``stsc.synth.checks.build_data``).
    public_fraction: float = 0.0
    generator: str
    self_debug_history: list[DebugRound] = Field(default_factory=list)
    tokens: int = 0  # prompt + completion tokens spent on this task (generation and fixes)
    cost_usd: float = 0.0

    def is_better(self, a: float, b: float) -> bool:
        """True iff score ``a`` is strictly better than ``b`` in this task's direction."""
        return is_better(a, b, self.higher_is_better)

    def at_optimum(self, score: float, rel_tol: float = 1e-9) -> bool:
        """True iff ``score`` already reaches the metric's best possible value."""
        if self.metric_bounds is None:
            return False
        bound = self.metric_bounds[1] if self.higher_is_better else self.metric_bounds[0]
        if bound is None:
            return False
        tol = rel_tol * max(1.0, abs(bound))
        return score >= bound - tol if self.higher_is_better else score <= bound + tol


def is_better(a: float, b: float, higher_is_better: bool) -> bool:
    """The one direction helper: True iff ``a`` is strictly better than ``b``."""
    return a > b if higher_is_better else a < b


@dataclass
class TaskDraft:
    """A task in memory, before it is written. ``files`` maps task-folder-relative paths
    (``workspace/evaluate.py``, ``private/answers.csv``, ``build/prepare.py``) to contents."""

    config: TaskConfig
    datasets: list[DatasetConfig]
    meta: TaskMeta
    files: dict[str, bytes | str] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        return self.config.id


@dataclass(frozen=True)
class Task:
    """A task folder read from disk (see :func:`load_task`)."""

    path: Path
    config: TaskConfig
    datasets: tuple[DatasetConfig, ...]
    meta: TaskMeta

    @property
    def task_id(self) -> str:
        return self.config.id

    @property
    def workspace(self) -> Path:
        return self.path / WORKSPACE

    @property
    def private(self) -> Path:
        return self.path / PRIVATE

    @property
    def baseline_score(self) -> float | None:
        return self.meta.baseline_score

    @property
    def id_column(self) -> str | None:
        """The column of ids: meta.json's ``id_column``, else the first column of
        ``private/answers.csv``; None when neither names one (no readable answers yet)."""
        return self.meta.id_column or next(iter(answers_header(self.private)), None)


def answers_header(private: Path) -> list[str]:
    """The column names of ``private/answers.csv`` in ``private``; empty when it cannot be read."""
    try:
        with (private / ANSWERS).open(newline="", encoding="utf-8") as f:
            return next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so descriptions read as they will be shown."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def dump_yaml(data: dict[str, Any]) -> str:
    """YAML text of ``data`` in key order; multi-line strings as literal blocks."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def _write_tree(folder: Path, draft: TaskDraft) -> None:
    for rel, content in draft.files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode("utf-8") if isinstance(content, str) else content
        path.write_bytes(data)
    for ds in draft.datasets:
        (folder / DATASETS).mkdir(exist_ok=True)
        (folder / DATASETS / f"{ds.name}.yaml").write_text(dump_yaml(ds.model_dump()), encoding="utf-8")
    (folder / TASK_YAML).write_text(dump_yaml(draft.config.model_dump()), encoding="utf-8")
    (folder / META_FILE).write_text(json.dumps(draft.meta.model_dump(mode="json"), indent=2) + "\n")


def write_task(folder: Path, draft: TaskDraft) -> Path:
    """Write ``draft`` as the folder ``folder`` atomically and durably: built in a temp sibling,
    then published with ``publish_folder``.

    Raises ``FileExistsError`` when ``folder`` already exists (a finished item is never rewritten).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        _write_tree(tmp, draft)
        publish_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _sync_tree(root: Path) -> None:
    """fsync every file and folder under ``root``, each folder after its contents."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fsync_path(Path(dirpath) / name)  # opens read-only and fsyncs: a file's data too
        fsync_path(Path(dirpath))


def publish_folder(tmp: Path, folder: Path) -> None:
    """Rename the finished folder ``tmp`` to ``folder`` (same file system, atomic), durably: every
    file and folder of ``tmp`` is fsynced before the rename and the parent after it, so a folder
    that exists after a crash is complete (a resumed stage takes it as finished).

    Raises ``FileExistsError`` when ``folder`` already exists."""
    if folder.exists():
        raise FileExistsError(f"{folder} already exists; remove it to regenerate the task")
    _sync_tree(tmp)
    os.rename(tmp, folder)
    fsync_path(folder.parent)


def _parse(model: type[_Model], data: dict[str, Any], path: Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        allowed = sorted(model.model_fields)
        raise TaskFormatError(f"{path} is not a valid {model.__name__} (allowed keys {allowed}): {e}") from e


def load_task(folder: Path) -> Task:
    """Read a task folder's yaml, dataset yaml(s) and meta.json. Raises ``TaskFormatError``."""
    folder = Path(folder)
    if not (folder / TASK_YAML).is_file():
        raise TaskFormatError(f"{folder} has no {TASK_YAML}; is it a task folder?")
    config: TaskConfig = _parse(TaskConfig, read_yaml(folder / TASK_YAML), folder / TASK_YAML)
    datasets = tuple(_parse(DatasetConfig, read_yaml(folder / p), folder / p) for p in config.dataset_configs)
    try:
        meta_data = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise TaskFormatError(f"cannot read {folder / META_FILE}: {e}") from e
    meta: TaskMeta = _parse(TaskMeta, meta_data, folder / META_FILE)
    return Task(folder, config, datasets, meta)


def description_problems(description: str) -> list[str]:
    """Why ``description`` would break MLGym: it must format with only ``{dataset_docs}`` and end
    with a "SUBMISSION FORMAT:" paragraph."""
    problems = []
    try:
        description.format(dataset_docs="x")
    except (KeyError, IndexError, ValueError) as e:
        problems.append(f"description must contain no braces other than {{dataset_docs}} ({e!r})")
    if SUBMISSION_HEADER not in description:
        problems.append(f"description must end with a '{SUBMISSION_HEADER}' paragraph")
    return problems


def check_task_folder(folder: Path, require_data: bool = True, require_score: bool = True) -> list[str]:
    """Every violation of the task contract in ``folder`` (empty list = valid).

    A library task is checked with the defaults. A draft is checked with ``require_data=False``
    when its ``build/prepare.py`` will still produce the data files, sample submission and labels,
    and ``require_score=False`` before its baseline has been scored.
    """
    folder = Path(folder)
    try:
        task = load_task(folder)
    except TaskFormatError as e:
        return [str(e)]
    problems = _config_problems(task, require_data)
    if require_data:
        problems += _data_problems(task)
    if require_score:
        problems += _score_problems(task)
    return problems


def _config_problems(task: Task, require_data: bool) -> list[str]:
    cfg, meta, folder = task.config, task.meta, task.path
    problems = description_problems(cfg.description)
    if not _TASK_ID.match(cfg.id):
        problems.append(
            f"task id {cfg.id!r} must be lower-case letters, digits and '-' (<= {MAX_TASK_ID} chars)"
        )
    if cfg.id != folder.name:
        problems.append(f"task id {cfg.id!r} differs from its folder name {folder.name!r}")
    if meta.task_id != cfg.id:
        problems.append(f"meta.json task_id {meta.task_id!r} differs from task.yaml id {cfg.id!r}")
    if cfg.task_entrypoint != CSV_ENTRYPOINT:
        problems.append(f"task_entrypoint must be {CSV_ENTRYPOINT}, got {cfg.task_entrypoint!r}")
    if not cfg.dataset_configs:
        problems.append("dataset_configs is empty")
    for rel in [*cfg.starter_code, cfg.sample_submission]:
        if not rel.startswith(f"{WORKSPACE}/"):
            problems.append(f"{rel!r} must be a path under {WORKSPACE}/")
    for rel in [*cfg.baseline_paths[:1], *cfg.evaluation_paths[:1]]:
        if not (task.workspace / rel).is_file():
            problems.append(f"{WORKSPACE}/{rel} is missing")
    for rel in cfg.starter_code if require_data else ():
        if not (folder / rel).exists():
            problems.append(f"starter_code path {rel} is missing")
    return problems


def _data_problems(task: Task) -> list[str]:
    problems = []
    for name in DATA_FILES:
        if not (task.workspace / "data" / name).is_file():
            problems.append(f"{WORKSPACE}/data/{name} is missing")
    if not (task.path / task.config.sample_submission).is_file():
        problems.append(f"{task.config.sample_submission} is missing")
    if not task.private.is_dir() or not any(task.private.iterdir()):
        problems.append(f"{PRIVATE}/ holds no held-out labels")
    header = answers_header(task.private)
    if task.meta.id_column and header and task.meta.id_column not in header:
        problems.append(
            f"meta.json id_column {task.meta.id_column!r} is not a column of {PRIVATE}/{ANSWERS} "
            f"(columns: {header}); record the column that holds the test ids"
        )
    for ds in task.datasets:
        if ds.is_local and not (task.path / ds.data_path).is_dir():
            problems.append(f"dataset {ds.name}: data_path {ds.data_path} is not a folder of the task")
    return problems


def _score_problems(task: Task) -> list[str]:
    meta, scores = task.meta, task.config.baseline_scores
    if meta.baseline_score is None or not math.isfinite(meta.baseline_score):
        return [f"meta.json baseline_score must be a finite number, got {meta.baseline_score!r}"]
    if not scores or meta.metric not in scores[0]:
        return [f"task.yaml baseline_scores must hold the priority metric {meta.metric!r}, got {scores!r}"]
    return []


def require_valid(folder: Path, require_data: bool = True, require_score: bool = True) -> Task:
    """``load_task`` after ``check_task_folder``; raises ``TaskFormatError`` listing every problem."""
    problems = check_task_folder(folder, require_data=require_data, require_score=require_score)
    if problems:
        listing = "\n  - ".join(problems)
        raise TaskFormatError(f"task folder {folder} breaks the task contract:\n  - {listing}")
    return load_task(folder)


def fit_id(task_id: str, max_len: int = MAX_TASK_ID) -> str:
    """``task_id`` when it has at most ``max_len`` characters, else cut to fit with 6 hex of the
    whole id's sha256 at its end (ids that share a long prefix stay distinct)."""
    if len(task_id) <= max_len:
        return task_id
    digest = hashlib.sha256(task_id.encode()).hexdigest()[:6]
    return f"{task_id[: max_len - 7].rstrip('-')}-{digest}"


def slug(text: str, max_len: int = 40) -> str:
    """Lower-case ``[a-z0-9-]`` form of ``text`` for task ids."""
    out = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return out[:max_len].strip("-") or "x"
