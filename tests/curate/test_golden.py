"""Golden files: a real recorded episode (tests/data/curate/) -> the SFT rows of each view.

Re-record with ``.venv/bin/python tests/curate/record_golden.py`` (see its docstring)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stsc.agent.history import process_history
from stsc.config import HistoryConfig
from stsc.train.data import tokenize_messages
from tests.curate.golden import EXPECTED, RUNS, TASK_ID, VARIANTS, curate_variant


def _traj() -> dict:
    (run,) = sorted(RUNS.iterdir())
    return json.loads((run / f"{TASK_ID}.traj").read_text())


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory, store: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("golden")
    return {variant: curate_variant(variant, root / variant, store) for variant in VARIANTS}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_view_of_the_recorded_episode_matches_its_golden_row(curated, variant: str) -> None:
    assert (curated[variant] / "sft.jsonl").read_text() == (EXPECTED / f"{variant}.jsonl").read_text()


def test_the_processed_row_is_the_prompt_of_the_teachers_last_call_plus_its_response(curated) -> None:
    history = _traj()["history"]
    (row,) = _rows(curated["processed"])
    last = max(i for i, m in enumerate(history) if m["role"] == "assistant")
    prompt = process_history(history[:last], HistoryConfig())
    assert row["messages"] == prompt + [{"role": "assistant", "content": history[last]["content"]}]
    users = [m["content"] for m in row["messages"] if m["role"] == "user"]
    assert users[0] == history[1]["content"]
    assert [u.startswith("Old output omitted") for u in users[1:]] == [True] * 3 + [False] * 5


def test_every_assistant_message_is_a_response_the_teacher_produced(curated) -> None:
    responses = [step["response"] for step in _traj()["trajectory"]]
    for variant in ("processed", "full"):
        (row,) = _rows(curated[variant])
        assert [m["content"] for m in row["messages"] if m["role"] == "assistant"] == responses
        assert row["messages"][-1]["role"] == "assistant"


def test_the_full_row_is_the_history_verbatim_up_to_the_last_response(curated) -> None:
    history = _traj()["history"]
    (row,) = _rows(curated["full"])
    assert row["messages"] == [{"role": m["role"], "content": m["content"]} for m in history[:-1]]


def test_strip_and_no_system_remove_think_blocks_and_the_system_prompt_only(curated) -> None:
    (kept,) = _rows(curated["processed"])
    (row,) = _rows(curated["processed_strip_no_system"])
    assert [m["role"] for m in row["messages"]] == [m["role"] for m in kept["messages"]][1:]
    assistants = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
    assert sum("<think>" in m["content"] for m in kept["messages"]) == 2
    assert not any("<think>" in a or "</think>" in a for a in assistants)
    assert all(a.startswith("DISCUSSION\n") for a in assistants)


def test_stats_count_tokens_exactly_as_the_sft_stage_tokenizes(curated, tokenizer) -> None:
    (row,) = _rows(curated["processed"])
    stats = json.loads((curated["processed"] / "stats.json").read_text())
    n = len(tokenize_messages(tokenizer, row["messages"])["input_ids"])
    assert stats["examples"] == 1 and stats["trajectories"] == 1 and stats["dropped"] == {}
    assert stats["tokens_total"] == stats["tokens_max"] == n
    assert stats["per_task"][TASK_ID] == {"trajectories": 1, "examples": 1, "tokens": n, "dropped": {}}
    assert sum(stats["histogram"]["counts"]) == 1


def test_the_pipeline_registers_this_stage_with_its_inputs() -> None:
    from stsc.curate import run_curate
    from stsc.pipeline import get_spec

    spec = get_spec("curate")
    assert spec.load() is run_curate
    assert set(spec.after) == {"rollout", "validate"} and "agent.history" in spec.config


def test_step_examples_are_each_calls_prompt_plus_its_response_trained_alone(
    tmp_path: Path, store: Path, tokenizer
) -> None:
    from stsc.curate import run_curate
    from tests.curate.golden import DATA, root_config, stage_context

    cfg = root_config(examples="step")
    out = tmp_path / "step"
    run_curate(cfg, stage_context(cfg, out, store, DATA, DATA))
    history = _traj()["history"]
    calls = [i for i, m in enumerate(history) if m["role"] == "assistant"]
    rows = _rows(out)
    assert len(rows) == len(calls) and all(row["loss"] == "last" for row in rows)
    for row, i in zip(rows, calls, strict=True):
        # exactly what the agent sent the model at that step, then the response it got
        prompt = process_history(history[:i], HistoryConfig())
        assert row["messages"] == prompt + [{"role": "assistant", "content": history[i]["content"]}]
    # an early step sees its recent observations in full (the trajectory view elides them)
    step3_users = [m["content"] for m in rows[3]["messages"] if m["role"] == "user"]
    assert not any(u.startswith("Old output omitted") for u in step3_users)
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    stats = json.loads((out / "stats.json").read_text())
    assert [r["run_example"] for r in index] == list(range(len(calls))) and stats["examples"] == len(calls)
    assert stats["trajectories"] == 1 and stats["tokens_total"] == sum(r["tokens"] for r in index)
    # the SFT stage trains the last response only
    ex = tokenize_messages(tokenizer, rows[3]["messages"], last_turn_only=True)
    trained = [t for t, label in zip(ex["input_ids"], ex["labels"], strict=True) if label != -100]
    text = tokenizer.decode(trained)
    assert rows[3]["messages"][-1]["content"] in text and text.count("DISCUSSION") == 1
    every = tokenize_messages(tokenizer, rows[3]["messages"])
    assert sum(label != -100 for label in every["labels"]) > len(trained)
