"""The special commands of the agent-computer interface, as data.

Each ``Tool`` is a name, a usage signature, a one-paragraph description and, for commands that
take a multi-line body, the line that ends the body. The interface (``stsc.agent.aci``) maps names
to small handlers; prompts show ``command_docs()``. Anything that is not one of these commands is
run as plain bash.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tool:
    name: str
    signature: str
    description: str
    end_marker: str | None = None  # last line of a multi-line body (edit, insert)


TOOLS: tuple[Tool, ...] = (
    Tool(
        "open",
        'open "<path>" [<line_number>]',
        "Opens the file at path in the editor. With line_number, the window is moved to show that line.",
    ),
    Tool("goto", "goto <line_number>", "Moves the window of the open file to show line_number."),
    Tool("scroll_down", "scroll_down", "Moves the window of the open file down by one window."),
    Tool("scroll_up", "scroll_up", "Moves the window of the open file up by one window."),
    Tool("create", "create <filename>", "Creates an empty file with the given name and opens it."),
    Tool(
        "search_dir",
        "search_dir <search_term> [<dir>]",
        "Lists the files under dir (default: the current directory) that contain search_term, with "
        "the number of matches in each.",
    ),
    Tool(
        "search_file",
        "search_file <search_term> [<file>]",
        "Shows every line of file (default: the open file) that contains search_term.",
    ),
    Tool(
        "find_file",
        "find_file <file_name> [<dir>]",
        "Finds files named file_name (shell wildcards allowed) under dir (default: the current directory).",
    ),
    Tool(
        "edit",
        "edit <start_line>:<end_line>\n<replacement_text>\nend_of_edit",
        "Replaces lines start_line through end_line (inclusive) of the open file with "
        "replacement_text. All lines from the one after the command up to end_of_edit are the "
        "replacement; write them with their full indentation. To delete lines, give no "
        "replacement. Python edits that introduce syntax or name errors are rejected and the file "
        "is left unchanged.",
        end_marker="end_of_edit",
    ),
    Tool(
        "insert",
        "insert <line_number>\n<text_to_add>\nend_of_insert",
        "Inserts text_to_add after line line_number of the open file (0 inserts at the top). The "
        "same checks as for edit apply.",
        end_marker="end_of_insert",
    ),
    Tool(
        "validate",
        "validate",
        "Scores the current submission file with the task's evaluation and shows the baseline "
        "score next to it. The episode goes on.",
    ),
    Tool(
        "submit",
        "submit",
        "Scores the current submission file and ends the episode. Use it once you are done.",
    ),
)

TOOLS_BY_NAME: dict[str, Tool] = {t.name: t for t in TOOLS}


def command_docs() -> str:
    """The reference of every special command, as shown to the model."""
    blocks = []
    for tool in TOOLS:
        blocks.append(f"{tool.name}:\n  docstring: {tool.description}\n  signature: {tool.signature}")
    return "\n\n".join(blocks)
