"""History processors: what the model sees of an episode's full chat.

The full history (``<task>.traj`` ``history``) keeps every message with its metadata; a processor
maps it to the ``{"role", "content"}`` messages sent to the model. ``curate`` applies the same
function to rebuild exactly what the model saw.

- ``last_n_observations``: the first non-demonstration user message (the task) and the last ``n``
  non-demonstration user messages stay verbatim; every other user message becomes
  ``Old output omitted (K lines)``. System, assistant and demonstration messages are kept.
- ``full``: everything verbatim.
"""

from __future__ import annotations

from typing import Any

from stsc.config import HistoryConfig
from stsc.errors import ConfigError

Message = dict[str, Any]
HISTORY_KINDS = ("last_n_observations", "full")


def omitted(content: str) -> str:
    return f"Old output omitted ({len(content.splitlines())} lines)"


def _plain(message: Message, content: str | None = None) -> dict[str, str]:
    return {"role": message["role"], "content": message["content"] if content is None else content}


def full(history: list[Message]) -> list[dict[str, str]]:
    return [_plain(m) for m in history]


def last_n_observations(history: list[Message], n: int) -> list[dict[str, str]]:
    observed = [i for i, m in enumerate(history) if m["role"] == "user" and not m.get("is_demo")]
    keep = set(observed[:1]) | set(observed[-n:] if n > 0 else [])
    omit = set(observed) - keep
    return [_plain(m, omitted(m["content"]) if i in omit else None) for i, m in enumerate(history)]


def process_history(history: list[Message], cfg: HistoryConfig) -> list[dict[str, str]]:
    """The model's view of ``history``; raises ``ConfigError`` for an unknown ``cfg.kind``."""
    if cfg.kind == "last_n_observations":
        return last_n_observations(history, cfg.n)
    if cfg.kind == "full":
        return full(history)
    raise ConfigError(f"agent.history.kind={cfg.kind!r} is not valid; choose one of {list(HISTORY_KINDS)}")
