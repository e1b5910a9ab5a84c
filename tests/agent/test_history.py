"""History processors: what the model sees of the full chat."""

from __future__ import annotations

import pytest

from stsc.agent.history import process_history
from stsc.config import HistoryConfig
from stsc.errors import ConfigError


def _history(observations: int) -> list[dict]:
    history = [
        {"role": "system", "content": "system prompt", "agent": "primary"},
        {"role": "user", "content": "demo task", "agent": "primary", "is_demo": True},
        {"role": "assistant", "content": "demo answer", "agent": "primary", "is_demo": True},
        {"role": "user", "content": "the task\nline 2", "agent": "primary"},
    ]
    for i in range(observations):
        history.append(
            {"role": "assistant", "content": f"action {i}", "agent": "primary", "thought": "t", "action": "a"}
        )
        history.append(
            {
                "role": "user",
                "content": "\n".join(f"obs {i} line {k}" for k in range(i + 1)),
                "agent": "primary",
            }
        )
    return history


def test_last_n_keeps_the_task_the_last_n_observations_and_every_other_message() -> None:
    view = process_history(_history(5), HistoryConfig(kind="last_n_observations", n=2))
    users = [m["content"] for m in view if m["role"] == "user"]
    assert users == [
        "demo task",
        "the task\nline 2",
        "Old output omitted (1 lines)",
        "Old output omitted (2 lines)",
        "Old output omitted (3 lines)",
        "obs 3 line 0\nobs 3 line 1\nobs 3 line 2\nobs 3 line 3",
        "\n".join(f"obs 4 line {k}" for k in range(5)),
    ]
    assert [m["content"] for m in view if m["role"] == "assistant"] == ["demo answer"] + [
        f"action {i}" for i in range(5)
    ]
    assert view[0] == {"role": "system", "content": "system prompt"}
    assert all(set(m) == {"role", "content"} for m in view)


def test_with_fewer_observations_than_n_nothing_is_omitted() -> None:
    history = _history(3)
    view = process_history(history, HistoryConfig(kind="last_n_observations", n=5))
    assert [m["content"] for m in view] == [m["content"] for m in history]


def test_full_keeps_everything_verbatim() -> None:
    history = _history(8)
    assert [m["content"] for m in process_history(history, HistoryConfig(kind="full"))] == [
        m["content"] for m in history
    ]


def test_an_unknown_processor_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="last_n_observations"):
        process_history(_history(1), HistoryConfig(kind="summary"))
