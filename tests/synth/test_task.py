"""The task folder contract: records, atomic writes, and the shape check."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from stsc.config import GeneratorConfig
from stsc.errors import TaskFormatError
from stsc.synth.generate import GenerationSource
from stsc.synth.task import (
    TASK_CONFIG_FIELDS,
    TaskMeta,
    check_task_folder,
    description_problems,
    load_task,
    require_valid,
    write_task,
)
from stsc.synth.template import TemplatePlan, build_task
from tests.synth.conftest import TABLES


def _draft(tmp_path: Path, metric: str = "accuracy"):
    load, targets = TABLES["sklearn/iris"]
    from tests.synth.conftest import make_record

    record = make_record("sklearn/iris", load(), targets, tmp_path / "tables")
    source = GenerationSource("sklearn/iris", record, "t0", "Flowers", "biology", "Iris", tuple(targets))
    return build_task(source, load(), TemplatePlan(targets[0], metric), GeneratorConfig(), seed=0)


def test_a_written_task_reads_back_with_the_same_records(tmp_path):
    draft = _draft(tmp_path)
    folder = write_task(tmp_path / "lib" / draft.task_id, draft)
    task = load_task(folder)
    assert task.config == draft.config
    assert task.meta == draft.meta
    assert list(task.datasets) == draft.datasets
    assert (task.private / "answers.csv").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "no temp folder left behind"


def test_task_yaml_holds_only_mlgym_field_names(tmp_path):
    draft = _draft(tmp_path)
    folder = write_task(tmp_path / draft.task_id, draft)
    data = yaml.safe_load((folder / "task.yaml").read_text())
    assert set(data) <= TASK_CONFIG_FIELDS
    assert data["task_entrypoint"] == "CSVSubmissionTasks"
    assert data["description"].format(dataset_docs="DOCS").count("DOCS") == 1


def test_a_finished_task_is_never_overwritten(tmp_path):
    draft = _draft(tmp_path)
    write_task(tmp_path / draft.task_id, draft)
    with pytest.raises(FileExistsError):
        write_task(tmp_path / draft.task_id, draft)


def test_a_draft_passes_the_shape_check_but_a_library_task_needs_a_baseline_score(tmp_path):
    draft = _draft(tmp_path)
    folder = write_task(tmp_path / draft.task_id, draft)
    assert check_task_folder(folder, require_score=False) == []
    problems = check_task_folder(folder)
    assert any("baseline_score" in p for p in problems)
    with pytest.raises(TaskFormatError, match="baseline_score"):
        require_valid(folder)


def test_the_shape_check_reports_each_broken_part(tmp_path):
    draft = _draft(tmp_path)
    folder = write_task(tmp_path / draft.task_id, draft)
    (folder / "workspace" / "data" / "test.csv").unlink()
    for answers in (folder / "private").iterdir():
        answers.unlink()
    data = yaml.safe_load((folder / "task.yaml").read_text())
    data["description"] = "Predict {target} well."
    (folder / "task.yaml").write_text(yaml.safe_dump(data))
    problems = "\n".join(check_task_folder(folder, require_score=False))
    assert "workspace/data/test.csv is missing" in problems
    assert "held-out labels" in problems
    assert "braces" in problems
    assert "SUBMISSION FORMAT:" in problems


def test_unknown_task_yaml_keys_are_refused(tmp_path):
    draft = _draft(tmp_path)
    folder = write_task(tmp_path / draft.task_id, draft)
    data = yaml.safe_load((folder / "task.yaml").read_text())
    data["metric"] = "accuracy"  # not an MLGym TaskConfig field
    (folder / "task.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(TaskFormatError, match="metric"):
        load_task(folder)


def test_meta_json_must_name_the_same_task(tmp_path):
    draft = _draft(tmp_path)
    folder = write_task(tmp_path / draft.task_id, draft)
    meta = json.loads((folder / "meta.json").read_text())
    meta["task_id"] = "other-task"
    (folder / "meta.json").write_text(json.dumps(meta))
    assert any("differs from task.yaml id" in p for p in check_task_folder(folder, require_score=False))


def test_the_id_column_is_recorded_and_a_task_written_before_reads_it_from_the_answers(tmp_path):
    draft = _draft(tmp_path)
    folder = write_task(tmp_path / draft.task_id, draft)
    task = load_task(folder)
    assert task.meta.id_column == "id" and task.id_column == "id"
    meta = json.loads((folder / "meta.json").read_text())
    older = {k: v for k, v in meta.items() if k != "id_column"} | {"schema_version": 1}
    (folder / "meta.json").write_text(json.dumps(older))
    answers = folder / "private" / "answers.csv"
    answers.write_text(answers.read_text().replace("id,", "row,", 1))
    task = load_task(folder)
    assert task.meta.id_column is None and task.id_column == "row", "the contract's first column"
    assert check_task_folder(folder, require_score=False) == []
    (folder / "meta.json").write_text(json.dumps(meta))
    problems = check_task_folder(folder, require_score=False)
    assert problems == [
        "meta.json id_column 'id' is not a column of private/answers.csv (columns: ['row', 'species']); "
        "record the column that holds the test ids"
    ]


@pytest.mark.parametrize(
    ("description", "ok"),
    [
        ("Goal.\n{dataset_docs}\nSUBMISSION FORMAT:\nid,label", True),
        ("Goal.\nSUBMISSION FORMAT:\nid,label", True),
        ("Goal {x}.\nSUBMISSION FORMAT:\nid,label", False),
        ("Goal.\n{dataset_docs}", False),
        ('Print {"accuracy": 1}.\nSUBMISSION FORMAT:\n...', False),
    ],
)
def test_descriptions_must_format_with_only_dataset_docs(description, ok):
    assert (description_problems(description) == []) is ok


def test_metric_direction_and_optimum_come_from_the_meta():
    base = dict(
        task_id="t", topic_id="x", topic_title="x", area="x", dataset_id="d", dataset_revision=None,
        license=None, task_type="regression", target="y", generator="template",
    )  # fmt: skip
    rmse = TaskMeta(**base, metric="rmse", higher_is_better=False, metric_bounds=(0.0, None))
    acc = TaskMeta(**base, metric="accuracy", higher_is_better=True, metric_bounds=(0.0, 1.0))
    assert rmse.is_better(1.0, 2.0) and not rmse.is_better(2.0, 1.0)
    assert acc.is_better(0.9, 0.8) and not acc.is_better(0.8, 0.8)
    assert rmse.at_optimum(0.0) and not rmse.at_optimum(0.1)
    assert acc.at_optimum(1.0) and not acc.at_optimum(0.99)
    r2 = TaskMeta(**base, metric="r2", higher_is_better=True, metric_bounds=(None, 1.0))
    assert not r2.at_optimum(-5.0)


def test_every_file_and_folder_is_fsynced_before_the_task_is_renamed_into_place(tmp_path, monkeypatch):
    draft = _draft(tmp_path)
    folder = tmp_path / "lib" / draft.task_id
    synced: list[tuple[Path, bool]] = []  # (path at fsync time, whether the task was in place yet)
    fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append((Path(os.readlink(f"/proc/self/fd/{fd}")), folder.exists()))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    write_task(folder, draft)
    before = [p.relative_to(folder.parent) for p, published in synced if not published]
    temps = {p.parts[0] for p in before if p.parts}
    assert len(temps) == 1 and temps.pop().startswith(f".{draft.task_id}."), (
        f"fsynced before the rename: {before}"
    )
    relative = {Path(*p.parts[1:]) for p in before if p.parts}
    everything = {p.relative_to(folder) for p in folder.rglob("*")} | {Path(".")}
    assert Path("workspace/data/train.csv") in everything and Path("private") in everything
    assert everything <= relative, f"not fsynced: {sorted(map(str, everything - relative))}"
    assert synced[-1] == (folder.parent, True), "the parent is fsynced after the rename"
