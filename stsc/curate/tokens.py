"""Token lengths with the student's tokenizer, and truncation at turn boundaries.

A length is the number of tokens of the conversation rendered with the student's *training* chat
template (``stsc.train.students.load_tokenizer``), tokenized without extra special tokens: exactly
what the SFT stage tokenizes (``stsc.train.data.tokenize_messages``).

Speed: a fast tokenizer cuts its input at added tokens (``<|im_start|>``, ``<|im_end|>``, ...) and
encodes the pieces between them independently, so a length is the number of added tokens plus the
lengths of the pieces. ``TokenCounter`` caches piece lengths: the system prompt, the task and the
role headers, shared by every trajectory of a task, are encoded once per worker, and the prefixes
tried by truncation cost no encoding at all. The cache is used only when no added token can absorb
its neighbours (``lstrip``/``rstrip``/``single_word``/``normalized`` all off) and a probe gives the
same length both ways; otherwise every text is encoded whole.

Truncation keeps the longest prefix of the conversation that ends with an assistant turn and fits
``max_seq_len``: whole trailing turns are removed, no message is ever cut, and the system prompt and
the task always stay. The prefix is found by binary search over the assistant-turn boundaries.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from stsc.config import StudentConfig

log = logging.getLogger(__name__)

Message = dict[str, str]
CACHE_CHARS = 32_000_000  # characters of cached pieces kept per process before the cache is reset

_PROBE = [
    {"role": "system", "content": "You are a researcher.\n\nUse one command per response."},
    {"role": "user", "content": "Task: beat the baseline.\n(Current Step: 0, Remaining Steps: 50)\nbash-$"},
    {"role": "assistant", "content": "<think>\nlook first\n</think>\nDISCUSSION\nList.\n\n```\nls -la\n```"},
    {"role": "user", "content": "baseline.py  data  evaluate.py\n  indented line ✓ café\n\n\nbash-$ "},
    {"role": "assistant", "content": "DISCUSSION\nRun it.\n\n```\npython baseline.py --seed 0\n```"},
]


def load_student_tokenizer(folder: Path, student: StudentConfig) -> Any:
    """The tokenizer of the materialized student in ``folder``, with its training template."""
    from stsc.train.students import load_tokenizer

    return load_tokenizer(Path(folder), student)


def added_token_splitter(tokenizer: Any) -> re.Pattern[str] | None:
    """A pattern matching the tokenizer's added tokens (longest first, as the tokenizer matches
    them), or None when an added token may absorb neighbouring text."""
    added = list(getattr(tokenizer, "added_tokens_decoder", {}).values())
    if not added or any(t.lstrip or t.rstrip or t.single_word or t.normalized for t in added):
        return None
    contents = sorted({t.content for t in added}, key=len, reverse=True)
    return re.compile("|".join(re.escape(c) for c in contents))


class TokenCounter:
    """Counts tokens of rendered conversations with one tokenizer (see the module docstring)."""

    def __init__(self, tokenizer: Any, cache: bool = True):
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        # The Rust backend without offset tracking gives the same ids, about 1.5x faster.
        self._batch = backend.encode_batch_fast if hasattr(backend, "encode_batch_fast") else None
        self._split = added_token_splitter(tokenizer) if cache and self._batch is not None else None
        self._pieces: dict[str, int] = {}
        self._cached_chars = 0
        if self._split is not None and not self._pieces_agree():
            log.warning("curate: piece-wise token counts differ for this tokenizer; encoding whole texts")
            self._split = None

    @property
    def piecewise(self) -> bool:
        """Whether lengths are summed from cached pieces (else every text is encoded whole)."""
        return self._split is not None

    def _pieces_agree(self) -> bool:
        text = self.render(_PROBE)
        return self.count_text(text) == self._whole(text)

    def render(self, messages: list[Message]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def count(self, messages: list[Message]) -> int:
        return self.count_text(self.render(messages))

    def _whole(self, text: str) -> int:
        if self._batch is not None:
            return len(self._batch([text], add_special_tokens=False)[0].ids)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_text(self, text: str) -> int:
        """Tokens of ``text`` encoded without extra special tokens."""
        if self._split is None:
            return self._whole(text)
        assert self._batch is not None
        pieces = self._split.split(text)
        n = len(pieces) - 1  # one added token between consecutive pieces
        if self._cached_chars > CACHE_CHARS:
            self._pieces.clear()
            self._cached_chars = 0
        missing = [p for p in dict.fromkeys(pieces) if p and p not in self._pieces]
        if missing:
            for piece, enc in zip(missing, self._batch(missing, add_special_tokens=False), strict=True):
                self._pieces[piece] = len(enc.ids)
                self._cached_chars += len(piece)
        return n + sum(self._pieces[p] for p in pieces if p)


def turn_ends(messages: list[Message]) -> list[int]:
    """Prefix lengths that end right after an assistant message (the allowed cut points)."""
    return [i + 1 for i, m in enumerate(messages) if m["role"] == "assistant"]


def truncate_turns(
    messages: list[Message], counter: TokenCounter, max_len: int
) -> tuple[list[Message], int] | None:
    """``(longest prefix ending on an assistant turn with at most max_len tokens, its tokens)``;
    None when even the first turn (system, task, first response) is longer. ``messages`` must end
    with an assistant message."""
    ends = turn_ends(messages)
    assert ends and ends[-1] == len(messages), "an example ends with an assistant message"
    first = counter.count(messages[: ends[0]])
    if first > max_len:
        return None
    lo, hi, best = 0, len(ends) - 1, (ends[0], first)  # invariant: ends[lo] fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        n = counter.count(messages[: ends[mid]])
        if n <= max_len:
            lo, best = mid, (ends[mid], n)
        else:
            hi = mid - 1
    return messages[: best[0]], best[1]
