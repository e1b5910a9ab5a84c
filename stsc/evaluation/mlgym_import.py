"""Turn MLGym's own tasks into task folders stsc's runner executes (reference/mlgym.md §1-2).

An MLGym checkout keeps a task in three places: ``configs/tasks/*.yaml`` (TaskConfig; indexed here
by its ``id``, which need not be the file name), ``configs/datasets/*.yaml`` (DatasetConfig, named
relative to ``configs/``) and ``data/<taskDir>/`` (starter code and data). ``import_task`` writes
one stsc task folder per task::

    <dest>/<task_id>/
      task.yaml          MLGym field names; paths rebased on the folder; evaluation_paths names the
                         scoring launcher, so stsc's runner (CSV contract) can score any entrypoint
      datasets/*.yaml    the task's DatasetConfigs, unchanged
      workspace/         starter_code (each file or folder copied under its base name), the data of
                         local datasets in data/ (read-only), and stsc_evaluate.py, the launcher
      private/           the unedited evaluation script and mlgym_evaluation.json (its entrypoint)
      meta.json          priority metric, direction and baseline (MLGYM_TASKS), the original
                         entrypoint and the submission artefact

The launcher (``stsc/evaluation/scripts/mlgym_evaluate.py``) runs the task's own evaluation script
with MLGym's command for its entrypoint (CSV, Python, Model, LM) and prints its metrics line.
Datasets hosted on the Hugging Face Hub (``is_local: false``) are read by the task's own code at
run time: the sandbox then needs network access (``sandbox.network=true``) or a filled Hub cache.
A folder is written under a temporary name and renamed into place, so it is either whole or absent.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from stsc.errors import ConfigError, TaskFormatError
from stsc.evaluation.mlgym_tasks import TaskScoring
from stsc.store import atomic_write_json, atomic_write_text, read_yaml

log = logging.getLogger(__name__)

ENTRYPOINTS = ("CSVSubmissionTasks", "PythonSubmissionTasks", "ModelSubmissionTasks", "LMSubmissionTasks")
LAUNCHER = "stsc_evaluate.py"
SPEC_FILE = "mlgym_evaluation.json"
DEFAULT_TRAINING_TIMEOUT_S = 3600  # MLGym's long-action timeout when a task sets none
STSC_ENTRYPOINT = "CSVSubmissionTasks"  # the contract of stsc's runner, honoured by the launcher


@dataclass(frozen=True)
class MLGymTaskSource:
    """One task config of an MLGym checkout."""

    task_id: str
    config_path: Path
    config: dict[str, Any]

    @property
    def entrypoint(self) -> str:
        return str(self.config.get("task_entrypoint") or "CSVSubmissionTasks")


def index_tasks(root: Path) -> dict[str, MLGymTaskSource]:
    """Every task config of the checkout ``root``, keyed by task id. Configs that cannot be read or
    lack an ``id`` are logged and left out. Raises ``ConfigError`` when ``root/configs/tasks`` is
    missing (``eval.mlgym_root`` does not point at an MLGym checkout)."""
    folder = Path(root) / "configs" / "tasks"
    if not folder.is_dir():
        raise ConfigError(
            f"eval.mlgym_root={root} is not an MLGym checkout: {folder} does not exist "
            "(clone https://github.com/facebookresearch/MLGym and point eval.mlgym_root at it)"
        )
    found: dict[str, MLGymTaskSource] = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            config = read_yaml(path, "MLGym config")
        except TaskFormatError as e:
            log.warning("mlgym: skipping %s: %s", path.name, e)
            continue
        task_id = config.get("id")
        if not isinstance(task_id, str) or not task_id:
            log.warning("mlgym: skipping %s: it has no 'id'", path.name)
            continue
        found.setdefault(task_id, MLGymTaskSource(task_id, path, config))
    return found


def _read_only(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _copy(source: Path, dest: Path, read_only: bool = False) -> None:
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True)
        files = [p for p in dest.rglob("*") if p.is_file()]
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
        files = [dest]
    if read_only:
        for f in files:
            _read_only(f)


def _repo_path(root: Path, rel: str, what: str, task_id: str) -> Path:
    path = (root / rel).resolve()
    if not path.exists():
        raise TaskFormatError(f"MLGym task {task_id}: {what} {rel!r} does not exist under {root}")
    return path


def _copy_starter_code(root: Path, src: MLGymTaskSource, workspace: Path) -> list[str]:
    starter = [str(p) for p in src.config.get("starter_code") or []]
    for rel in starter:
        _copy(_repo_path(root, rel, "starter_code entry", src.task_id), workspace / Path(rel).name)
    return [f"workspace/{Path(rel).name}" for rel in starter]


def _copy_datasets(root: Path, src: MLGymTaskSource, task_dir: Path) -> tuple[list[str], list[dict]]:
    """Copy the dataset yamls (and local data into ``workspace/data``); returns their task-folder
    paths and a summary for ``meta.json``."""
    paths, summary = [], []
    for rel in src.config.get("dataset_configs") or []:
        source = _repo_path(root / "configs", str(rel), "dataset config", src.task_id)
        dataset = read_yaml(source, "MLGym config")
        shutil.copy2(source, task_dir / "datasets" / source.name)
        paths.append(f"datasets/{source.name}")
        local = bool(dataset.get("is_local"))
        data_path = str(dataset.get("data_path") or "")
        if local:
            data = _repo_path(root, data_path, f"data_path of dataset {dataset.get('name')!r}", src.task_id)
            _copy(data, task_dir / "workspace" / "data", read_only=True)
        else:
            log.info("mlgym: task %s reads Hub dataset %s at run time (needs network or a Hub cache)",
                     src.task_id, data_path)  # fmt: skip
        summary.append({"name": dataset.get("name"), "data_path": data_path, "is_local": local})
    return paths, summary


def submission_artefact(
    entrypoint: str, workspace: Path, evaluation_path: str, baseline_paths: list[str] | None = None
) -> str:
    """The workspace file that must exist before the task can be scored (and that the agent is told
    it submits): ``submission.csv`` (CSV), the first ``*.yaml`` of the starter code (Model), the
    Python file the agent edits (Python: the task's baseline path, as ``strategy.py`` of the games,
    not the opponent in ``target.py``) or, where MLGym checks nothing, the evaluation script."""
    if entrypoint == "CSVSubmissionTasks":
        return "submission.csv"
    if entrypoint == "ModelSubmissionTasks":
        from stsc.evaluation.scripts.mlgym_evaluate import first_yaml

        found = first_yaml(str(workspace))  # the launcher's own search
        return Path(found).relative_to(workspace).as_posix() if found else "config.yaml"
    if entrypoint == "PythonSubmissionTasks":
        edited = [p for p in (baseline_paths or []) if p.endswith(".py") and (workspace / p).is_file()]
        for name in [*edited, "strategy.py"]:
            if name != evaluation_path and (workspace / name).is_file():
                return name
    return evaluation_path


def _first(values: Any, key: str, task_id: str) -> Any:
    if not values:
        raise TaskFormatError(f"MLGym task {task_id}: '{key}' must list at least one entry")
    return values[0]


def _baseline(src: MLGymTaskSource, scoring: TaskScoring) -> dict[str, Any]:
    scores = src.config.get("baseline_scores") or []
    first = dict(scores[0]) if scores and isinstance(scores[0], dict) else {}
    if scoring.metric not in first and scoring.baseline is not None:
        first[scoring.metric] = scoring.baseline
    return first


def _install_evaluator(src: MLGymTaskSource, task_dir: Path) -> str:
    """Keep the pristine evaluation script in ``private/``, put the launcher in the workspace;
    returns the script's workspace path. ``_write_spec`` records how the launcher runs it."""
    workspace = task_dir / "workspace"
    evaluation = str(_first(src.config.get("evaluation_paths"), "evaluation_paths", src.task_id))
    if not (workspace / evaluation).is_file():
        raise TaskFormatError(
            f"MLGym task {src.task_id}: evaluation script {evaluation} is not in its starter_code"
        )
    if src.config.get("evaluation_read_only", True):
        (workspace / evaluation).chmod(0o555)
    shutil.copy2(workspace / evaluation, task_dir / "private" / Path(evaluation).name)
    launcher = resources.files("stsc.evaluation.scripts").joinpath("mlgym_evaluate.py").read_text("utf-8")
    atomic_write_text(workspace / LAUNCHER, launcher)
    return evaluation


def _write_spec(src: MLGymTaskSource, task_dir: Path, evaluation: str, submission: str) -> None:
    """The launcher's ``private/mlgym_evaluation.json``. A model task's evaluation gets the config
    the agent is told it submits (``config_fname``), not whichever ``*.yaml`` comes first by then."""
    spec = {"entrypoint": src.entrypoint, "script": Path(evaluation).name, "evaluation_path": evaluation}
    if src.entrypoint == "ModelSubmissionTasks":
        spec["config_fname"] = submission
    atomic_write_json(task_dir / "private" / SPEC_FILE, spec)


def _task_config(
    src: MLGymTaskSource, datasets: list[str], starter: list[str], baseline: dict, sample: str | None
) -> dict:
    cfg = src.config
    return {
        "id": src.task_id,
        "name": str(cfg.get("name") or src.task_id),
        "description": str(cfg.get("description") or ""),
        "dataset_configs": datasets,
        "task_entrypoint": STSC_ENTRYPOINT,
        "training_timeout": int(cfg.get("training_timeout") or DEFAULT_TRAINING_TIMEOUT_S),
        "use_generic_conda": bool(cfg.get("use_generic_conda", True)),
        "starter_code": starter,
        "baseline_paths": list(cfg.get("baseline_paths") or []),
        "baseline_scores": [baseline] if baseline else [],
        "sample_submission": sample,
        "evaluation_paths": [LAUNCHER],
        "evaluation_read_only": True,
    }


def _write_task(root: Path, src: MLGymTaskSource, scoring: TaskScoring, task_dir: Path) -> None:
    from stsc.synth.task import dump_yaml

    workspace = task_dir / "workspace"
    for sub in ("workspace", "private", "datasets"):
        (task_dir / sub).mkdir(parents=True)
    starter = _copy_starter_code(root, src, workspace)
    datasets, dataset_summary = _copy_datasets(root, src, task_dir)
    evaluation = _install_evaluator(src, task_dir)
    sample = src.config.get("sample_submission")
    if sample and not (workspace / Path(sample).name).exists():
        _copy(_repo_path(root, str(sample), "sample_submission", src.task_id), workspace / Path(sample).name)
    baseline = _baseline(src, scoring)
    submission = submission_artefact(
        src.entrypoint, workspace, evaluation, list(src.config.get("baseline_paths") or [])
    )
    _write_spec(src, task_dir, evaluation, submission)
    sample_path = f"workspace/{Path(sample).name}" if sample else None
    atomic_write_text(
        task_dir / "task.yaml", dump_yaml(_task_config(src, datasets, starter, baseline, sample_path))
    )
    meta = {
        "schema_version": 1,
        "source": "mlgym",
        "task_id": src.task_id,
        "metric": scoring.metric,
        "higher_is_better": scoring.higher_is_better,
        "baseline_score": baseline.get(scoring.metric),
        "mlgym_entrypoint": src.entrypoint,
        "submission_file": submission,
        "mlgym_config": src.config_path.resolve().relative_to(root).as_posix(),
        "datasets": dataset_summary,
    }
    atomic_write_json(task_dir / "meta.json", meta)


def import_task(root: Path, src: MLGymTaskSource, scoring: TaskScoring, dest: Path) -> Path:
    """The stsc task folder ``dest/<task_id>`` of ``src`` (written unless it already exists).
    Raises ``TaskFormatError`` when the task's files are missing or its entrypoint is unknown."""
    if src.entrypoint not in ENTRYPOINTS:
        raise TaskFormatError(
            f"MLGym task {src.task_id}: task_entrypoint {src.entrypoint!r} is not one of {list(ENTRYPOINTS)}"
        )
    root, final = Path(root).resolve(), Path(dest) / src.task_id
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{src.task_id}.", dir=final.parent))
    try:
        _write_task(root, src, scoring, tmp / "task")
        os.rename(tmp / "task", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("mlgym: imported %s (%s) into %s", src.task_id, src.entrypoint, final)
    return final
