"""Parsing a model response into a thought and one command.

The expected format is a DISCUSSION paragraph followed by exactly one fenced code block holding
one command. Reasoning wrapped in ``<think>...</think>`` is removed before parsing and kept at the
start of the thought (a response whose prompt already opened the think block may start directly
with the reasoning and a lone ``</think>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stsc.errors import ModelOutputError

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_FENCE = re.compile(r"^[ \t]*```[^\n`]*\n(.*?)^[ \t]*```[ \t]*$", re.DOTALL | re.MULTILINE)

FORMAT_HELP = (
    "Every response must be a DISCUSSION section explaining your reasoning, followed by exactly one "
    "fenced code block (``` on its own line before and after) that holds the single command to run next."
)


@dataclass(frozen=True)
class ParsedResponse:
    thought: str  # reasoning plus the discussion, without the command block
    action: str  # the command, without the fences


def split_thinking(text: str) -> tuple[str, str]:
    """``(thinking, rest)``: the text of every think block, and the response without them."""
    if "</think>" in text and "<think>" not in text.split("</think>", 1)[0]:
        head, text = text.split("</think>", 1)
        thinking = [head.strip()]
    else:
        thinking = []
    if text.count("<think>") != text.count("</think>"):
        raise ModelOutputError(f"The response has an unterminated <think> block. {FORMAT_HELP}")
    thinking += [m.strip() for m in _THINK.findall(text)]
    return "\n\n".join(t for t in thinking if t), _THINK.sub("", text)


def parse_response(text: str) -> ParsedResponse:
    """Split a response into thought and action; raises ``ModelOutputError`` (a format error,
    worded for the model) when there is not exactly one non-empty command block."""
    thinking, rest = split_thinking(text.replace("\r\n", "\n"))  # a provider's CRLF line ends
    blocks = list(_FENCE.finditer(rest))
    if not blocks:
        raise ModelOutputError(f"Your response contains no command block. {FORMAT_HELP}")
    if len(blocks) > 1:
        raise ModelOutputError(
            f"Your response contains {len(blocks)} command blocks, but only one command can run per "
            f"response. {FORMAT_HELP}"
        )
    block = blocks[0]
    action = block.group(1).strip("\n")
    if not action.strip():
        raise ModelOutputError(f"The command block of your response is empty. {FORMAT_HELP}")
    discussion = (rest[: block.start()] + rest[block.end() :]).strip()
    thought = "\n\n".join(part for part in (thinking, discussion) if part)
    return ParsedResponse(thought=thought, action=action)
