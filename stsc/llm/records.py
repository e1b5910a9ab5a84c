"""Typed records of model calls: one answer, aggregated usage, and the event a tracing hook sees."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Completion:
    """One model answer. ``cached`` answers report the original token counts and cost 0.0."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached: bool
    model: str  # the configured litellm model string
    latency_s: float
    finish_reason: str | None = None  # "stop", "length" (hit max_tokens), ...
    reasoning: str | None = None  # reasoning the provider returned apart from the text (<think> blocks)


_USAGE_FIELDS = (
    "calls",
    "cached_calls",
    "failures",
    "retries",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
)


@dataclass
class Usage:
    """Aggregated accounting of a client (or of several clients sharing one ``Usage``).

    ``calls`` counts answers returned (cache hits included, ``cached_calls`` of them); ``failures``
    calls that raised after being attempted; ``retries`` re-sends. Tokens and USD count only what
    providers billed, so cache hits add nothing. Updates are thread-safe.
    """

    calls: int = 0
    cached_calls: int = 0
    failures: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # not a field: ``dataclasses.asdict`` and JSON writers skip it

    def add(self, other: Usage) -> Usage:
        """Add ``other``'s counts to this one in place; returns ``self``."""
        self.bump(**other.as_dict())
        return self

    def bump(self, **deltas: float) -> None:
        """Add ``deltas`` (field name -> amount) atomically."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            return {name: getattr(self, name) for name in _USAGE_FIELDS}

    def as_metrics(self) -> dict[str, float]:
        """Flat metrics for tracking: ``llm_calls``, ``llm_cost_usd``, ..."""
        return {f"llm_{name}": float(value) for name, value in self.as_dict().items()}


def public_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with the values of secret-named options (``llm.extra.api_key``, an
    ``Authorization`` header) redacted, for what is stored or shown: cache records, ``CallEvent``."""
    from stsc.tracking import redact_mapping

    return redact_mapping(params, secrets=[])


@dataclass(frozen=True)
class CallEvent:
    """What an ``on_call`` hook sees after every finished call (cache hits and failures included)."""

    model: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]  # sampling parameters sent (secret-named ones redacted, never the API key)
    meta: Mapping[str, Any]  # caller's labels, e.g. RenderedPrompt.meta (template name and hash)
    completion: Completion | None  # None when the call failed
    error: str | None  # the failure's message (key redacted)
    attempts: int  # requests sent; 0 for a cache hit


OnCall = Callable[[CallEvent], None]
