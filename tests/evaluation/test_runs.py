"""Reading MLGym-layout run folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from stsc.agent.trajectory import run_folder_name
from stsc.errors import ConfigError, EvaluationError
from stsc.evaluation.runs import load_runs, parse_run_folder_name, read_run, safe_model_id


def test_published_folder_names_parse_into_model_task_agent_and_run_index() -> None:
    name = parse_run_folder_name(
        "metagen-gpt-o1__rlMountainCarContinuous__default__t-0.00__p-0.95__c-4.00__install-0__parallel_agents_run_3"
    )
    assert name is not None
    assert (name.model, name.task_id, name.agent, name.run_index) == (
        "metagen-gpt-o1",
        "rlMountainCarContinuous",
        "default",
        3,
    )
    assert (name.temperature, name.top_p, name.cost) == ("0.00", "0.95", "4.00")


@pytest.mark.parametrize(
    "model",
    ["Qwen--Qwen3-4B-Instruct-2507", "meta-llama--Llama-3.1-8B", "gpt-4o", "org--my_model.v2", "a--b--c"],
)
def test_model_ids_with_dashes_dots_underscores_and_slashes_round_trip(model: str) -> None:
    folder = f"{model}__taskA__better_thought_action_parser__t-0.60__p-0.95__c-0.00__install-0_run_12"
    name = parse_run_folder_name(folder)
    assert name is not None
    assert (name.model, name.task_id, name.agent, name.run_index) == (
        model,
        "taskA",
        "better_thought_action_parser",
        12,
    )


@pytest.mark.parametrize("task", ["_private", "task_", "_both_", "a__b", "__dunder__", "_", "x___y"])
@pytest.mark.parametrize(
    ("model", "agent"),
    [("Qwen/Qwen3-4B", "default"), ("org/my_model.v2", "better_thought_action_parser"), ("a", "b_")],
)
def test_task_ids_with_edge_and_double_underscores_round_trip_from_the_writer(
    task: str, model: str, agent: str
) -> None:
    name = parse_run_folder_name(run_folder_name(model, task, agent, 0.6, 0.95, 4.0, 7))
    assert name is not None
    assert (name.model, name.task_id, name.agent, name.run_index) == (safe_model_id(model), task, agent, 7)
    assert (name.temperature, name.top_p, name.cost) == ("0.60", "0.95", "4.00")


@pytest.mark.parametrize(
    ("model", "agent", "key"),
    [("a__b", "default", "teacher.name"), ("org/model_", "default", "teacher.name"), ("", "default", "teacher.name"),
     ("m", "my__agent", "agent.name"), ("m", "_agent", "agent.name"), ("m", "", "agent.name")],
)  # fmt: skip
def test_the_writer_refuses_model_and_agent_names_that_would_not_parse_back(
    model: str, agent: str, key: str
) -> None:
    with pytest.raises(ConfigError, match=rf"cannot name run folders.*{key}"):
        run_folder_name(model, "task", agent, 0.0, 0.95, 4.0, 0)


def test_a_task_id_starting_with_an_underscore_is_found_by_the_task_filter(write_run, tmp_path: Path) -> None:
    write_run("m", "_hidden", agent=[{"acc": 0.5}])
    write_run("m", "hidden", agent=[{"acc": 0.4}])
    runs = load_runs(tmp_path / "runs", tasks=["_hidden"])
    assert [(r.model, r.task_id, r.agent) for r in runs] == [("m", "_hidden", ({"acc": 0.5},))]


@pytest.mark.parametrize(
    "folder",
    [
        "aup",
        "gpt-4o__taskA__default",
        "gpt-4o__taskA__default__t-0__p-1__c-0__install-0_run_x",
        "__t__x_run_1",
    ],
)
def test_other_folder_names_are_not_runs(folder: str) -> None:
    assert parse_run_folder_name(folder) is None


def test_safe_model_id_replaces_slashes() -> None:
    assert safe_model_id("Qwen/Qwen3-4B") == "Qwen--Qwen3-4B"


def test_model_filter_matches_whole_ids_not_prefixes(write_run, tmp_path: Path) -> None:
    write_run("gpt-4o", "taskA", agent=[{"acc": 0.5}])
    write_run("gpt-4o-mini", "taskA", agent=[{"acc": 0.4}])
    write_run("org--gpt-4o", "taskA", agent=[{"acc": 0.3}])
    assert [r.model for r in load_runs(tmp_path / "runs", models=["gpt-4o"])] == ["gpt-4o"]
    assert [r.model for r in load_runs(tmp_path / "runs", models=["org/gpt-4o"])] == ["org--gpt-4o"]
    assert len(load_runs(tmp_path / "runs")) == 3


def test_task_filter_and_sorted_order(write_run, tmp_path: Path) -> None:
    write_run("m", "taskB", 1)
    write_run("m", "taskB", 0)
    write_run("m", "taskA", 0)
    runs = load_runs(tmp_path / "runs", tasks=["taskB"])
    assert [(r.task_id, r.run_index) for r in runs] == [("taskB", 0), ("taskB", 1)]


def test_missing_or_empty_agent_lists_give_runs_without_entries(write_run) -> None:
    no_key = read_run(write_run("m", "t", 0, agent=None, baseline={"acc": 0.5}))
    empty = read_run(write_run("m", "t", 1, agent=[]))
    no_file = read_run(write_run("m", "t", 2, results=False))
    assert no_key.agent == empty.agent == no_file.agent == ()
    assert no_key.baseline == {"acc": 0.5}
    assert no_file.baseline == {}


def test_non_numeric_values_are_dropped_and_entries_keep_their_order(write_run) -> None:
    run = read_run(
        write_run("m", "t", agent=[{"acc": 0.1, "note": "x"}, {"acc": None}, {"acc": True}, {"acc": 2}])
    )
    assert run.agent == ({"acc": 0.1}, {}, {}, {"acc": 2.0})
    assert run.values("acc") == [0.1, 2.0]


def test_stsc_metadata_is_read(write_run) -> None:
    run = read_run(
        write_run("m", "t", agent=[], meta={"task_id": "t", "metric": "acc", "higher_is_better": True})
    )
    assert run.meta["metric"] == "acc"


def test_nested_folders_are_searched_and_run_folders_not_descended(write_run, tmp_path: Path) -> None:
    write_run("m", "t", 0, agent=[{"acc": 1.0}], root=tmp_path / "runs" / "trajectories" / "user")
    (tmp_path / "runs" / "aup").mkdir()
    runs = load_runs(tmp_path / "runs")
    assert [(r.model, r.task_id) for r in runs] == [("m", "t")]


def test_a_stage_folder_gives_its_runs_and_not_its_moved_aside_attempts(write_run, tmp_path: Path) -> None:
    from stsc.evaluation.runs import FAILED_ATTEMPTS_DIR
    from stsc.rollout.folders import FAILED_DIR

    stage = tmp_path / "runs"  # as a rollout or evaluate stage folder is laid out
    done = write_run("m", "t", 0, agent=[{"acc": 0.5}], root=stage / "runs")
    write_run("m", "t", 1, agent=[{"acc": 0.7}], root=stage / "runs")
    (stage / FAILED_DIR / done.name / "attempt-1").mkdir(parents=True)  # the retried attempt of run 0
    assert FAILED_ATTEMPTS_DIR == FAILED_DIR
    assert sorted(r.run_index for r in load_runs(stage)) == [0, 1]


def test_malformed_results_file_raises_with_its_path(write_run, tmp_path: Path) -> None:
    folder = write_run("m", "t", agent=[])
    (folder / "results.json").write_text("{not json")
    with pytest.raises(EvaluationError, match="results.json"):
        load_runs(tmp_path / "runs")


def test_missing_runs_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="does not exist"):
        load_runs(tmp_path / "nowhere")


def test_published_results_load_completely(mlgym_runs_dir: Path) -> None:
    runs = load_runs(mlgym_runs_dir)
    assert len(runs) == 676
    assert len({r.model for r in runs}) == 13
    assert len({r.task_id for r in runs}) == 13
    assert sum(1 for r in runs if not r.agent) == 188
