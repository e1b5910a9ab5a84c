"""Task scoring facts: the built-in MLGym tasks and stsc task metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stsc.errors import TaskFormatError
from stsc.evaluation.mlgym_tasks import (
    MLGYM_TASKS,
    TaskScoring,
    has_scoring_fields,
    load_task_meta_dir,
    merge_scorings,
    scoring_from_meta,
)


def test_the_thirteen_mlgym_tasks_with_their_metrics_and_directions() -> None:
    assert len(MLGYM_TASKS) == 13
    minimised = {t for t, s in MLGYM_TASKS.items() if not s.higher_is_better}
    assert minimised == {"3SATTime", "languageModelingFineWeb"}
    assert MLGYM_TASKS["rlMountainCarContinuous"].metric == "Reward Mean"
    assert MLGYM_TASKS["naturalLanguageInferenceMNLI"] == TaskScoring(
        "naturalLanguageInferenceMNLI", "validation_accuracy", True, 52.51146204788589
    )
    assert all(task_id == s.task_id for task_id, s in MLGYM_TASKS.items())


def test_direction_helper_compares_in_the_task_direction() -> None:
    assert MLGYM_TASKS["languageModelingFineWeb"].is_better(3.9, 4.6)
    assert not MLGYM_TASKS["imageClassificationCifar10"].is_better(0.3, 0.5)


def _write_meta(folder: Path, **fields) -> Path:
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps(fields))
    return folder


def test_meta_json_fields_become_a_task_scoring() -> None:
    meta = {
        "task_id": "penguinsSpecies",
        "metric": "macro_f1",
        "higher_is_better": True,
        "baseline_score": 0.61,
    }
    assert scoring_from_meta(meta) == TaskScoring("penguinsSpecies", "macro_f1", True, 0.61)
    assert scoring_from_meta({**meta, "baseline_score": None}).baseline is None
    assert has_scoring_fields(meta) and not has_scoring_fields({"task_id": "x", "seed": 0})


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"metric": "rmse", "higher_is_better": False}, "task_id"),
        ({"task_id": "t", "higher_is_better": False}, "metric"),
        ({"task_id": "t", "metric": "rmse", "higher_is_better": "no"}, "higher_is_better"),
    ],
)
def test_incomplete_metadata_is_rejected_naming_the_field(meta: dict, message: str) -> None:
    with pytest.raises(TaskFormatError, match=message):
        scoring_from_meta(meta)


def test_a_folder_of_task_folders_or_one_task_folder_is_read(tmp_path: Path) -> None:
    _write_meta(tmp_path / "lib" / "a", task_id="taskA", metric="rmse", higher_is_better=False)
    _write_meta(tmp_path / "lib" / "taskB", metric="acc", higher_is_better=True, baseline_score=0.5)
    (tmp_path / "lib" / "not_a_task").mkdir()
    scorings = load_task_meta_dir(tmp_path / "lib")
    assert scorings == {
        "taskA": TaskScoring("taskA", "rmse", False, None),
        "taskB": TaskScoring("taskB", "acc", True, 0.5),
    }
    assert set(load_task_meta_dir(tmp_path / "lib" / "taskB")) == {"taskB"}


def test_a_folder_without_metadata_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TaskFormatError, match="no meta.json"):
        load_task_meta_dir(tmp_path)


def test_later_scorings_win_when_merged() -> None:
    mine = {"blotto": TaskScoring("blotto", "Score", True, 0.0)}
    merged = merge_scorings(MLGYM_TASKS, mine)
    assert merged["blotto"].baseline == 0.0
    assert MLGYM_TASKS["blotto"].baseline < 0
    assert len(merged) == 13
