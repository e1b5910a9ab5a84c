"""The conversion pool, the thinking filter, the token counter and the curate config checks."""

from __future__ import annotations

import logging
import random

import pytest

from stsc.config import CurateConfig, HistoryConfig, StudentConfig
from stsc.curate.build import BuildSettings, examine_all, worker_count
from stsc.curate.convert import build_messages, normalise_thinking, strip_thinking
from stsc.curate.records import TaskInfo
from stsc.curate.select import discover_runs, runs_root, select_runs
from stsc.curate.tokens import TokenCounter
from stsc.errors import ConfigError
from stsc.train.data import tokenize_messages
from stsc.train.students import materialize_student, student_cache_dir
from tests.curate.conftest import Run
from tests.curate.golden import root_config


def test_a_process_pool_gives_the_same_outcomes_in_the_same_order_as_one_process(ws, monkeypatch) -> None:
    monkeypatch.setattr("stsc.curate.build._CHUNK", 1)  # six jobs, one per task: both workers convert
    ws.task("a")
    ws.task("b")
    for k in range(6):
        scores = [] if k == 3 else [{"accuracy": 0.9}]
        ws.run(
            Run(
                "a" if k % 2 else "b",
                ["ls", f"echo {k}", "cat data/train.csv", "submit"],
                index=k,
                scores=scores,
            )
        )
    runs = discover_runs(runs_root(ws.rollout))
    train = {t: TaskInfo(t, "accuracy", True, 0.5) for t in ("a", "b")}
    jobs = select_runs(runs, train, set(), 1.0, 0).jobs
    folder = str(materialize_student(StudentConfig(), student_cache_dir(ws.store)))
    whole = BuildSettings(CurateConfig(truncate=False), HistoryConfig(), StudentConfig(), folder)
    shortest = min(o.tokens_full for o in examine_all(jobs, whole, processes=1) if o.reason is None)
    settings = BuildSettings(CurateConfig(max_seq_len=shortest - 1), HistoryConfig(), StudentConfig(), folder)

    one = list(examine_all(jobs, settings, processes=1))
    two = list(examine_all(jobs, settings, processes=2))
    assert one == two
    assert [o.index for o in two] == list(range(6))
    assert [o.reason for o in one].count(None) == 5 and all(
        o.turns_truncated for o in one if o.reason is None
    )


def test_worker_count_uses_one_process_for_small_inputs() -> None:
    assert worker_count(4, 10) == 1
    assert worker_count(4, 64 * 3) == 3
    assert worker_count(2, 10_000) == 2
    assert worker_count(0, 10_000) >= 1


def test_strip_thinking_removes_every_think_block_and_keeps_the_rest() -> None:
    text = "<think>\nplan\n</think>\nDISCUSSION\nGo.\n\n```\nls\n```"
    assert strip_thinking(text) == "DISCUSSION\nGo.\n\n```\nls\n```"
    assert strip_thinking("reasoning first</think>\nDISCUSSION\nx") == "DISCUSSION\nx"
    assert strip_thinking("DISCUSSION\nno thinking") == "DISCUSSION\nno thinking"
    assert strip_thinking("<think>never closed") == "<think>never closed"


def test_kept_thinking_is_merged_into_one_opening_block_only_when_needed() -> None:
    opening = "<think>\nplan\n</think>\nDISCUSSION\nGo.\n\n```\nls\n```"
    assert normalise_thinking(opening) == opening
    assert normalise_thinking("DISCUSSION\nno thinking") == "DISCUSSION\nno thinking"
    assert normalise_thinking("<think>never closed") == "<think>never closed"
    two = "<think>a</think>\nDISCUSSION\nmid\n<think>\nb\n</think>\n```\nls\n```"
    assert normalise_thinking(two) == "<think>\na\n\nb\n</think>\n\nDISCUSSION\nmid\n\n```\nls\n```"
    late = "DISCUSSION\nfirst <think>late</think>\n```\nls\n```"
    assert normalise_thinking(late) == "<think>\nlate\n</think>\n\nDISCUSSION\nfirst \n```\nls\n```"
    assert normalise_thinking("why</think>\nDISCUSSION\nx") == "<think>\nwhy\n</think>\n\nDISCUSSION\nx"


def test_demonstrations_never_become_training_turns() -> None:
    history = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "demo task", "is_demo": True},
        {"role": "assistant", "content": "demo answer", "is_demo": True},
        {"role": "user", "content": "the task"},
        {"role": "assistant", "content": "my answer"},
        {"role": "user", "content": "its output"},
    ]
    for view in ("processed", "full"):
        messages = build_messages(history, CurateConfig(history_view=view), HistoryConfig(n=1))
        assert messages == [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "the task"},
            {"role": "assistant", "content": "my answer"},
        ]


def test_the_counter_agrees_with_the_sft_stage_tokenization(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "You are a researcher."},
        {"role": "user", "content": "Improve the baseline.\n(Current Step: 0)"},
        {
            "role": "assistant",
            "content": "<think>\nfirst look\n</think>\nDISCUSSION\nList.\n\n```\nls -la\n```",
        },
        {"role": "user", "content": "baseline.py  data  evaluate.py\n" * 20},
        {"role": "assistant", "content": "DISCUSSION\nRun it. ✓ café\n\n```\npython baseline.py\n```"},
    ]
    expected = len(tokenize_messages(tokenizer, messages)["input_ids"])
    assert (
        TokenCounter(tokenizer).count(messages)
        == TokenCounter(tokenizer, cache=False).count(messages)
        == expected
    )


def test_piece_cached_counts_equal_whole_text_counts_on_varied_conversations(tokenizer) -> None:
    rng = random.Random(0)
    alphabet = [
        "ls",
        " -la",
        "\n",
        "\n\n",
        "  ",
        "0.4821",
        "café",
        "✓",
        "<think>",
        "</think>",
        "<|im_end|>",
        "```",
        "def f(x):",
        "\tx = 1",
        "Old output omitted (3 lines)",
        "bash-$ ",
        "DISCUSSION",
        "é",
        " ",
    ]
    cached, whole = TokenCounter(tokenizer), TokenCounter(tokenizer, cache=False)
    assert cached.piecewise and not whole.piecewise
    for _ in range(200):
        messages = [{"role": "system", "content": "".join(rng.choices(alphabet, k=rng.randint(0, 30)))}]
        for _ in range(rng.randint(1, 4)):
            messages.append({"role": "user", "content": "".join(rng.choices(alphabet, k=rng.randint(0, 40)))})
            messages.append(
                {"role": "assistant", "content": "".join(rng.choices(alphabet, k=rng.randint(1, 40)))}
            )
        assert cached.count(messages) == whole.count(messages)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"max_seq_len": 0}, "curate.max_seq_len"),
        ({"max_total_tokens": 0}, "curate.max_total_tokens"),
        ({"concurrency": -1}, "curate.concurrency"),
    ],
)
def test_invalid_curate_settings_fail_naming_the_key(ws, overrides: dict, key: str) -> None:
    ws.task("a")
    with pytest.raises(ConfigError, match=key):
        ws.curate(cfg=root_config(**overrides))


def test_training_without_the_system_prompt_is_flagged_as_a_mismatch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from stsc.curate.stage import check_config

    with caplog.at_level(logging.WARNING, logger="stsc.curate"):
        check_config(root_config())
    assert "include_system" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="stsc.curate"):
        check_config(root_config(include_system=False))
    assert "curate.include_system=false" in caplog.text and "evaluation always sends" in caplog.text
