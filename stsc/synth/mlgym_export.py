"""Export a task library as an MLGym repository tree (reference/mlgym.md §1).

For each task ``<id>``::

    configs/tasks/<id>.yaml          TaskConfig, MLGym field names only, repo-relative paths
    configs/datasets/<name>.yaml     DatasetConfig; data_path: data/<id>/data, is_local: true
    data/<id>/                       baseline.py, evaluate.py, evaluate_task.py, sample_submission.csv,
                                     private/answers.csv, data/{train,validation,test}.csv

MLGym has no private area: whatever a task needs at scoring time is copied into the agent's
workspace. The export therefore ships the held-out labels in ``data/<id>/private/`` (listed in
``starter_code``) and makes ``evaluate.py`` a small launcher that points ``STSC_PRIVATE_DIR`` at that
folder and runs the task's own scoring script, ``evaluate_task.py``, unchanged. Under MLGym the
labels are thus readable by the agent (as in MLGym's own House Price task); stsc's own runner never
exposes them. ``README.md`` at the root of the export says so.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from stsc.errors import TaskFormatError
from stsc.store import read_yaml
from stsc.synth.library import list_tasks
from stsc.synth.task import (
    PRIVATE,
    TASK_CONFIG_FIELDS,
    WORKSPACE,
    Task,
    dump_yaml,
    require_valid,
)

log = logging.getLogger(__name__)

EVALUATE_TASK = "evaluate_task.py"
README = """# Tasks exported from stsc

An MLGym task tree: `configs/tasks/<id>.yaml` (TaskConfig), `configs/datasets/*.yaml`
(DatasetConfig) and `data/<id>/` (starter code and data). Copy `configs/` and `data/` into an MLGym
checkout and run a task with `task=<id>` as usual.

Scoring: `evaluate.py` launches the task's own scoring script `evaluate_task.py`, which reads the
held-out labels from `$STSC_PRIVATE_DIR/answers.csv`. MLGym has no private area, so the labels ship in
`data/<id>/private/` (listed in `starter_code`) and `evaluate.py` sets `STSC_PRIVATE_DIR` to that
folder when it is not set. Under MLGym the agent can therefore read the labels, as in MLGym's own
House Price task: use these exports to reproduce scores, not to measure agents that might look for
answer files. stsc runs the same tasks with the labels outside the agent's workspace.

`tasks.tsv` lists each task's priority metric, its direction, the baseline score and the dataset's
provenance (MLGym keeps metric directions in its evaluation code, not in the task yaml).
"""


@dataclass
class ExportReport:
    root: Path
    tasks: list[str] = field(default_factory=list)
    dataset_files: list[str] = field(default_factory=list)


def _rebase(rel: str, task_id: str) -> str:
    """A task-folder path under workspace/ -> its repo-relative path in the export."""
    return f"data/{task_id}/{rel.removeprefix(f'{WORKSPACE}/')}"


def _task_yaml(task: Task, dataset_files: list[str]) -> dict:
    cfg = task.config
    starter = [_rebase(p, task.task_id) for p in cfg.starter_code]
    evaluation = cfg.evaluation_paths[0]
    starter += [f"data/{task.task_id}/{EVALUATE_TASK}", f"data/{task.task_id}/{PRIVATE}"]
    if _rebase(f"{WORKSPACE}/{evaluation}", task.task_id) not in starter:
        starter.append(_rebase(f"{WORKSPACE}/{evaluation}", task.task_id))
    data = cfg.model_dump()
    data.update(
        dataset_configs=[f"datasets/{name}" for name in dataset_files],
        starter_code=list(dict.fromkeys(starter)),
        sample_submission=_rebase(cfg.sample_submission, task.task_id),
    )
    assert set(data) <= TASK_CONFIG_FIELDS
    return data


def _dataset_file(name: str, task_id: str, data: dict, folder: Path) -> str:
    """``<name>.yaml`` unless another task's dataset config holds that name in ``folder`` (an
    earlier export included), then ``<name>-<task_id>.yaml``. A config is this task's when it
    points into the task's own data folder or is identical to the one about to be written."""
    for stem in (name, f"{name}-{task_id}"):
        path = folder / f"{stem}.yaml"
        if not path.exists():
            return path.name
        existing = read_yaml(path, "dataset config")
        if str(existing.get("data_path", "")).startswith(f"data/{task_id}/") or existing == data:
            return path.name
    return f"{name}-{task_id}.yaml"


def export_task(task: Task, root: Path) -> list[str]:
    """Write one task into the export tree at ``root``; returns its dataset config file names."""
    dest = root / "data" / task.task_id
    if dest.exists():
        shutil.rmtree(dest)
    evaluation = task.config.evaluation_paths[0]
    shutil.copytree(task.workspace, dest, ignore=shutil.ignore_patterns("__pycache__", "submission.csv"))
    (dest / evaluation).rename(dest / EVALUATE_TASK)
    launcher = resources.files("stsc.synth.template_scripts").joinpath("mlgym_evaluate.py").read_text("utf-8")
    (dest / evaluation).write_text(launcher, encoding="utf-8")
    shutil.copytree(task.private, dest / PRIVATE)
    files = []
    for ds in task.datasets:
        data = ds.model_dump()
        data["data_path"] = (
            _rebase(ds.data_path, task.task_id) if ds.data_path.startswith(f"{WORKSPACE}/") else ds.data_path
        )
        file_name = _dataset_file(ds.name, task.task_id, data, root / "configs" / "datasets")
        (root / "configs" / "datasets" / file_name).write_text(dump_yaml(data), encoding="utf-8")
        files.append(file_name)
    (root / "configs" / "tasks" / f"{task.task_id}.yaml").write_text(
        dump_yaml(_task_yaml(task, files)), encoding="utf-8"
    )
    return files


def export_mlgym(library: Path, out: Path, task_ids: list[str] | None = None) -> ExportReport:
    """Export the (valid) tasks of ``library`` into the MLGym tree ``out`` (see module doc).

    ``task_ids`` restricts the export; an existing export in ``out`` is updated in place. Raises ``TaskFormatError`` when a task breaks the task
    contract or ``task_ids`` names tasks the library does not have.
    """
    tasks = list_tasks(library)
    if task_ids:
        unknown = sorted(set(task_ids) - {t.task_id for t in tasks})
        if unknown:
            raise TaskFormatError(
                f"tasks {unknown} are not in {library}; `stsc-tasks list {library}` shows the ids"
            )
        tasks = [t for t in tasks if t.task_id in task_ids]
    out = Path(out)
    for sub in ("configs/tasks", "configs/datasets", "data"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    report = ExportReport(root=out)
    rows = ["task_id\tmetric\thigher_is_better\tbaseline\tdataset_id\tdataset_revision\tlicense"]
    for task in tasks:
        require_valid(task.path)
        report.dataset_files += export_task(task, out)
        report.tasks.append(task.task_id)
        m = task.meta
        rows.append(
            f"{m.task_id}\t{m.metric}\t{m.higher_is_better}\t{m.baseline_score}\t{m.dataset_id}\t{m.dataset_revision}\t{m.license}"
        )
    (out / "README.md").write_text(README, encoding="utf-8")
    (out / "tasks.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    log.info("exported %d tasks to %s", len(report.tasks), out)
    return report
