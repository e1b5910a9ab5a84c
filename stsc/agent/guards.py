"""Checks on a bash action before it runs: interactive programs and the timeout class.

An agent has no terminal, so a program that waits for keyboard input (an editor, a pager, a bare
interpreter) would only hang until its timeout. ``refusal`` names such a program, looking at every
simple command of the action (split on newlines, ``;``, ``&&``, ``||``, ``|`` and ``&``; heredoc
bodies are skipped). ``is_training_command`` decides which timeout applies.
"""

from __future__ import annotations

import functools
import re
import shlex

_TRAINING = re.compile(r"(?<![\w.-])(python[\d.]*|torchrun|accelerate|deepspeed)(?![\w-])")
_HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")
_SEPARATORS = re.compile(r"(\|\||&&|;|\||&)")
_PYTHON = re.compile(r"^(?:.*/)?python[\d.]*$")
_SHELLS = {"bash", "sh", "zsh", "dash"}
_PREFIXES = {"sudo", "exec", "command", "time", "nice", "env"}  # run the next word as the program
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_QUOTING = re.compile(r"[\\'\"]")  # quotes and escapes can join text into a program name


def is_training_command(action: str) -> bool:
    """Whether ``action`` runs python/torchrun/accelerate/deepspeed (the long, training timeout)."""
    return bool(_TRAINING.search(action))


def _command_lines(action: str) -> list[str]:
    """Lines of ``action`` that are shell code (heredoc bodies removed)."""
    out: list[str] = []
    delimiter: str | None = None
    for line in action.splitlines():
        if delimiter is not None:
            if line.strip() == delimiter:
                delimiter = None
            continue
        out.append(line)
        match = _HEREDOC.search(line)
        if match:
            delimiter = match.group(1)
    return out


def _segments(line: str) -> list[tuple[bool, str]]:
    """Simple commands of one line, each with whether its stdin is a pipe."""
    parts = _SEPARATORS.split(line)
    out: list[tuple[bool, str]] = []
    piped = False
    for i in range(0, len(parts), 2):
        out.append((piped, parts[i]))
        piped = i + 1 < len(parts) and parts[i + 1] == "|"
    return out


def _tokens(segment: str) -> list[str]:
    try:
        tokens = shlex.split(segment, comments=True)
    except ValueError:
        tokens = segment.split()
    while tokens and (_ASSIGNMENT.match(tokens[0]) or tokens[0] in _PREFIXES):
        tokens = tokens[1:]
    return tokens


def _interactive_interpreter(tokens: list[str], segment: str, piped: bool) -> bool:
    """A python or shell that would read commands from the keyboard."""
    program = tokens[0].rsplit("/", 1)[-1]
    if program in {"ipython", "ipython3"}:
        return True
    if not (_PYTHON.match(program) or program in _SHELLS):
        return False
    if "-i" in tokens[1:]:
        return True
    if piped or "<" in segment:
        return False
    args = tokens[1:]
    return all(a.startswith("-") and a not in {"-c", "-m", "-"} for a in args)


@functools.lru_cache(maxsize=16)
def _triggers(blocked: tuple[str, ...]) -> re.Pattern[str]:
    """A word that any refused command must contain: a blocked program or an interpreter."""
    words = {b.split()[0] for b in blocked if b.strip()} | _SHELLS | {"ipython", "ipython3"}
    alternatives = "|".join(sorted(map(re.escape, words)))
    return re.compile(rf"(?<![\w.-])(?:{alternatives})(?![\w-])|(?<![\w.-])python[\d.]*(?![\w-])")


def refusal(action: str, blocked: list[str]) -> str | None:
    """Why ``action`` must not run (it starts an interactive program), or None when it may."""
    if not _QUOTING.search(action) and not _triggers(tuple(blocked)).search(action):
        return None  # no program that could be refused is named: skip the tokenizer
    blocked_tokens = [b.split() for b in blocked if b.strip()]
    for line in _command_lines(action):
        for piped, segment in _segments(line):
            tokens = _tokens(segment)
            if not tokens:
                continue
            for words in blocked_tokens:
                if _names(tokens, words):
                    return _message(" ".join(words))
            if _interactive_interpreter(tokens, segment, piped):
                return _message(" ".join(tokens))
    return None


def _names(tokens: list[str], words: list[str]) -> bool:
    """Whether the simple command ``tokens`` runs the blocked entry ``words``: its program (by
    name, or by a path ending in it) with the entry's other words among its arguments."""
    return tokens[0].rsplit("/", 1)[-1] == words[0] and all(w in tokens[1:] for w in words[1:])


def _message(program: str) -> str:
    return (
        f"The command `{program}` is not supported here: this environment has no terminal, so "
        "interactive programs (editors, pagers, interpreter prompts) and detached background jobs "
        "cannot be used. Use `open`, `edit` and `insert` to read and change files, and run scripts "
        "in the foreground and non-interactively (for example `python train.py` or "
        '`python -c "..."`).'
    )
