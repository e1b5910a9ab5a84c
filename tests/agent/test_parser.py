"""Response format: DISCUSSION + exactly one fenced command, <think> stripped into the thought."""

from __future__ import annotations

import pytest

from stsc.agent.parser import parse_response, split_thinking
from stsc.errors import ModelOutputError


def test_a_discussion_and_one_block_give_thought_and_action() -> None:
    parsed = parse_response("DISCUSSION\nList the files first.\n\n```bash\nls -la\n```\n")
    assert parsed.action == "ls -la"
    assert parsed.thought == "DISCUSSION\nList the files first."


def test_crlf_line_ends_parse_like_lf_ones() -> None:
    parsed = parse_response(
        "DISCUSSION\r\nTrain it.\r\n\r\n```bash\r\npython train.py \\\r\n  --epochs 2\r\n```\r\n"
    )
    assert parsed.action == "python train.py \\\n  --epochs 2"
    assert parsed.thought == "DISCUSSION\nTrain it."


def test_a_multi_line_command_keeps_its_lines_and_indentation() -> None:
    parsed = parse_response("Fix the loop.\n```\nedit 3:4\n    x = 1\n    y = 2\nend_of_edit\n```")
    assert parsed.action == "edit 3:4\n    x = 1\n    y = 2\nend_of_edit"


def test_think_blocks_are_stripped_and_kept_in_the_thought() -> None:
    text = (
        "<think>The baseline is weak.\nTry boosting.</think>\nDISCUSSION\nRun it.\n```\npython train.py\n```"
    )
    parsed = parse_response(text)
    assert parsed.action == "python train.py"
    assert parsed.thought.startswith("The baseline is weak.\nTry boosting.")
    assert parsed.thought.endswith("DISCUSSION\nRun it.")
    assert "<think>" not in parsed.thought


def test_a_code_block_inside_think_does_not_count() -> None:
    text = "<think>maybe\n```\nrm -rf /\n```\nno</think>\nDISCUSSION\nsafe\n```\nls\n```"
    assert parse_response(text).action == "ls"


def test_a_lone_closing_think_tag_marks_reasoning_opened_by_the_prompt() -> None:
    thinking, rest = split_thinking("reasoning here</think>\nDISCUSSION\nx\n```\nls\n```")
    assert thinking == "reasoning here"
    assert "</think>" not in rest


@pytest.mark.parametrize(
    "text,message",
    [
        ("DISCUSSION\nI will list files: ls -la", "no command block"),
        ("DISCUSSION\n```\nls\n```\nand\n```\npwd\n```", "2 command blocks"),
        ("DISCUSSION\n```\n\n```", "empty"),
        ("<think>unfinished\nDISCUSSION\n```\nls\n```", "unterminated <think>"),
    ],
)
def test_malformed_responses_raise_a_format_error_worded_for_the_model(text: str, message: str) -> None:
    with pytest.raises(ModelOutputError, match=message) as err:
        parse_response(text)
    assert "exactly one" in str(err.value)
