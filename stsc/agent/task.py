"""What an episode needs to know about one task folder (the task contract in DESIGN.md).

``load_task`` reads ``task.yaml`` (MLGym TaskConfig field names), the dataset yamls it names and the
optional ``meta.json`` sidecar (priority metric and direction), and checks the shape the episode
relies on. It never reads ``private/`` beyond listing it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stsc.errors import TaskFormatError
from stsc.store import read_yaml

SUPPORTED_ENTRYPOINTS = ("CSVSubmissionTasks",)
SUBMISSION_FILE = "submission.csv"

_LOWER_IS_BETTER_HINTS = ("loss", "error", "rmse", "mse", "mae", "mape", "time", "perplexity")


@dataclass(frozen=True)
class TaskSpec:
    """One task as the episode sees it. Paths are host paths; ``description`` has its dataset docs
    filled in. ``metric``/``higher_is_better`` come from ``meta.json`` when present, otherwise from
    the first baseline metric and its name."""

    task_id: str
    name: str
    description: str
    task_dir: Path
    workspace_dir: Path
    private_dir: Path | None
    evaluation_path: str  # workspace-relative, e.g. "evaluate.py"
    baseline_path: str | None  # workspace-relative, e.g. "baseline.py"
    baseline_scores: dict[str, Any]
    training_timeout_s: float
    metric: str | None
    higher_is_better: bool
    submission_file: str = SUBMISSION_FILE
    # A public split (meta.json): `validate` shows the score on the public test rows, next to
    # ``public_baseline_scores``; every recorded score is on the other rows.
    public_split: bool = False
    public_baseline_scores: dict[str, Any] | None = None

    @property
    def pristine_evaluator(self) -> Path:
        """The task's own evaluation script; the copy in an agent workspace may have been edited."""
        return self.workspace_dir / self.evaluation_path

    def metric_value(self, scores: dict[str, Any]) -> float | None:
        """The priority metric of one metrics dict, or None when absent or not a number."""
        value = scores.get(self.metric) if self.metric else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` is strictly better than ``b`` in this task's direction."""
        return a > b if self.higher_is_better else a < b


def _dataset_docs(task_dir: Path, paths: list[str]) -> str:
    docs = []
    for rel in paths:
        ds = read_yaml(task_dir / rel)
        docs.append(f"{str(ds.get('name', '')).upper()}:\n{ds.get('description', '')}\n\n")
    return "".join(docs)


def _first_path(cfg: dict[str, Any], key: str, required: bool) -> str | None:
    values = cfg.get(key) or []
    if not values:
        if required:
            raise TaskFormatError(f"task.yaml: '{key}' must list at least one workspace path")
        return None
    return str(values[0])


def load_task(task_dir: Path) -> TaskSpec:
    """Read a task folder. Raises ``TaskFormatError`` naming the missing or malformed piece."""
    task_dir = Path(task_dir).resolve()
    cfg = read_yaml(task_dir / "task.yaml")
    for key in ("id", "name", "description"):
        if not cfg.get(key):
            raise TaskFormatError(f"{task_dir}/task.yaml: required field '{key}' is missing")
    entrypoint = cfg.get("task_entrypoint", "CSVSubmissionTasks")
    if entrypoint not in SUPPORTED_ENTRYPOINTS:
        raise TaskFormatError(
            f"{task_dir}: task_entrypoint {entrypoint!r} is not supported; use one of {SUPPORTED_ENTRYPOINTS}"
        )
    workspace = task_dir / "workspace"
    evaluation = _first_path(cfg, "evaluation_paths", required=True)
    if not (workspace / evaluation).is_file():
        raise TaskFormatError(f"{task_dir}: evaluation script workspace/{evaluation} does not exist")
    baseline_list = cfg.get("baseline_scores") or [{}]
    baseline = dict(baseline_list[0] or {})
    meta_path = task_dir / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    metric = meta.get("metric") or next(iter(baseline), None)
    if "higher_is_better" in meta:
        higher = bool(meta["higher_is_better"])
    else:
        higher = not any(h in str(metric).lower() for h in _LOWER_IS_BETTER_HINTS)
    description = str(cfg["description"]).replace(
        "{dataset_docs}", _dataset_docs(task_dir, list(cfg.get("dataset_configs") or []))
    )
    private = task_dir / "private"
    return TaskSpec(
        task_id=str(cfg["id"]),
        name=str(cfg["name"]),
        description=description,
        task_dir=task_dir,
        workspace_dir=workspace,
        private_dir=private if private.is_dir() else None,
        evaluation_path=evaluation,
        baseline_path=_first_path(cfg, "baseline_paths", required=False),
        baseline_scores=baseline,
        training_timeout_s=float(cfg.get("training_timeout") or 1800),
        metric=metric,
        higher_is_better=higher,
        submission_file=str(meta.get("submission_file") or SUBMISSION_FILE),
        public_split=bool(meta.get("public_split")),
        public_baseline_scores=dict(meta.get("public_baseline_scores") or {}) or None,
    )
