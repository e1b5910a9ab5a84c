"""MLGym export, the library split and the ``stsc-tasks`` command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from stsc.synth.cli import main
from stsc.synth.library import LibrarySplit, list_tasks, split_library
from stsc.synth.mlgym_export import export_mlgym

# MLGym's TaskConfig and DatasetConfig field names (reference/mlgym.md §1), written out independently
# of stsc's own records so that a stray field in stsc would fail here.
MLGYM_TASK_FIELDS = {
    "id", "name", "description", "dataset_configs", "task_entrypoint", "training_timeout",
    "requirements_path", "use_generic_conda", "starter_code", "baseline_paths", "baseline_scores",
    "sample_submission", "evaluation_paths", "evaluation_read_only", "memory_path", "secret_files",
    "benchmark_name",
}  # fmt: skip
MLGYM_DATASET_FIELDS = {
    "name",
    "description",
    "data_path",
    "is_local",
    "train_split",
    "valid_split",
    "test_split",
}


def _mlgym_workspace(root: Path, config: dict, dest: Path) -> Path:
    """Assemble an agent workspace the way MLGym does: starter code copied in, local datasets
    copied to data/."""
    dest.mkdir()
    for rel in config["starter_code"]:
        src = root / rel
        if src.is_dir():
            shutil.copytree(src, dest / src.name)
        else:
            shutil.copy(src, dest / src.name)
    for ds_rel in config["dataset_configs"]:
        ds = yaml.safe_load((root / "configs" / ds_rel).read_text())
        assert set(ds) <= MLGYM_DATASET_FIELDS and ds["is_local"] is True
        shutil.copytree(root / ds["data_path"], dest / "data")
    return dest


def test_exported_tasks_are_mlgym_tasks_that_reproduce_their_baseline(template_library, tmp_path):
    out = tmp_path / "mlgym"
    report = export_mlgym(template_library, out)
    assert len(report.tasks) == 4 and (out / "README.md").is_file()
    env = {k: v for k, v in os.environ.items() if k != "STSC_PRIVATE_DIR"}
    for task in list_tasks(template_library):
        config = yaml.safe_load((out / "configs" / "tasks" / f"{task.task_id}.yaml").read_text())
        assert set(config) <= MLGYM_TASK_FIELDS
        assert (
            config["description"]
            .format(dataset_docs="x")
            .endswith(config["description"].split("SUBMISSION FORMAT:")[1])
        )
        assert (out / config["sample_submission"]).is_file()
        ws = _mlgym_workspace(out, config, tmp_path / task.task_id)
        run = subprocess.run(
            [sys.executable, "baseline.py"], cwd=ws, env=env, capture_output=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        scored = subprocess.run(
            [sys.executable, config["evaluation_paths"][0], "--submission_file", "submission.csv"],
            cwd=ws, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert scored.stderr == "" and len(scored.stdout.splitlines()) == 1
        assert json.loads(scored.stdout) == pytest.approx(config["baseline_scores"][0])
        assert config["baseline_scores"][0][task.meta.metric] == pytest.approx(task.meta.baseline_score)


def test_an_export_can_be_restricted_and_refuses_unknown_tasks(template_library, tmp_path):
    [first, *_] = list_tasks(template_library)
    report = export_mlgym(template_library, tmp_path / "one", [first.task_id])
    assert report.tasks == [first.task_id]
    assert [p.stem for p in (tmp_path / "one" / "configs" / "tasks").iterdir()] == [first.task_id]
    assert main(["export-mlgym", str(template_library), str(tmp_path / "x"), "--task", "no-such-task"]) == 2


def test_re_exporting_one_task_never_takes_another_tasks_dataset_config(template_library, tmp_path):
    iris = [t.task_id for t in list_tasks(template_library) if "iris" in t.task_id]
    assert len(iris) == 2  # two tasks on one table: their dataset configs share a name
    out = tmp_path / "MLGym"

    def data_paths() -> dict[str, list[str]]:
        paths = {}
        for task_id in iris:
            config = yaml.safe_load((out / "configs" / "tasks" / f"{task_id}.yaml").read_text())
            paths[task_id] = [
                yaml.safe_load((out / "configs" / ref).read_text())["data_path"]
                for ref in config["dataset_configs"]
            ]
        return paths

    export_mlgym(template_library, out)
    first = data_paths()
    assert all(p == [f"data/{t}/data"] for t, p in first.items())
    export_mlgym(template_library, out, task_ids=[iris[1]])  # then the other one, alone
    export_mlgym(template_library, out, task_ids=[iris[0]])
    assert data_paths() == first


def test_the_split_never_shares_a_dataset_and_is_reproducible(tmp_path):
    tasks = [
        SimpleNamespace(task_id=f"{d}-{k}", meta=SimpleNamespace(dataset_id=d))
        for d in "abcdefghij"
        for k in range(3)
    ]
    split = split_library(tasks, 0.3, seed=7)
    assert len(split.heldout_datasets) == 3 and len(split.heldout) == 9
    assert not set(split.train_datasets) & set(split.heldout_datasets)
    assert {t.split("-")[0] for t in split.heldout} == set(split.heldout_datasets)
    assert split_library(list(reversed(tasks)), 0.3, seed=7) == split
    assert split_library(tasks, 0.3, seed=8) != split
    split.save(tmp_path / "split.json")
    assert LibrarySplit.load(tmp_path / "split.json") == split
    assert split_library(tasks, 0.01, seed=0).heldout_datasets, "a positive fraction holds out a dataset"
    assert len(split_library(tasks, 0.99, seed=0).train_datasets) == 1, "and keeps one for training"
    with pytest.raises(ValueError, match="heldout_fraction"):
        split_library(tasks, 1.5, seed=0)


def test_stsc_tasks_lists_and_checks_the_library(template_library, capsys):
    assert main(["list", str(template_library), "--heldout-fraction", "0.5", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        "task_id",
        "dataset",
        "type",
        "target",
        "metric",
        "goal",
        "baseline",
        "generator",
        "split",
    ]
    assert "sklearn-iris-species-accuracy" in out and "4 tasks from 2 datasets" in out
    sides = {line.split()[0]: line.split()[-1] for line in lines[2:6]}
    assert set(sides.values()) == {"train", "heldout"}
    assert sides["sklearn-iris-species-accuracy"] == sides["sklearn-iris-species-macro-f1"]
    assert main(["check", str(template_library)]) == 0
    assert "4 of 4 task folders satisfy the task contract" in capsys.readouterr().out


def test_stsc_tasks_check_reports_a_broken_task(template_library, tmp_path, capsys):
    library = tmp_path / "lib"
    shutil.copytree(template_library / "library", library)
    victim = sorted(library.iterdir())[0]
    (victim / "workspace" / "evaluate.py").unlink()
    assert main(["check", str(library)]) == 1
    assert "workspace/evaluate.py is missing" in capsys.readouterr().out
    assert main(["list", str(tmp_path / "nowhere")]) == 2
