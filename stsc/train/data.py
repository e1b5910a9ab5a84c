"""From the SFT set (``sft.jsonl``) to trainer-ready examples, with explicit length handling.

Each row ``{"messages": [...]}`` is rendered with the student's training chat template; tokens
inside ``{% generation %}`` markers (assistant turns, end-of-turn token included) keep their id as
label, every other token gets ``-100``; a row with ``"loss": "last"`` (``curate.examples=step``)
trains its last assistant turn only. Examples longer than ``max_length`` are truncated (the
start is kept) or dropped, as configured, and always counted; nothing is removed silently: every
example that does not reach the trainer has a ``DropReason``. Untrained tokens after an example's
last trained token are left out: attention is causal, so they cannot change the loss, only cost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from stsc.store import iter_jsonl

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")
OVERLONG_CHOICES = ("truncate", "drop")


class DropReason(StrEnum):
    INVALID_MESSAGES = "invalid_messages"  # not a list of {role, content} with known roles
    NO_ASSISTANT_TURN = "no_assistant_turn"  # nothing to train on
    OVERLONG = "overlong"  # longer than max_length with overlong=drop
    TRUNCATED_AWAY = "overlong_no_assistant_tokens_left"  # truncation removed every trained token


@dataclass
class SFTDataStats:
    """What happened to the SFT set on its way to the trainer (JSON: ``data_stats.json``)."""

    schema_version: int = 1
    max_length: int = 0
    overlong: str = "truncate"
    assistant_only_loss: bool = True
    examples_in: int = 0
    examples_kept: int = 0
    truncated: int = 0  # kept, but cut to max_length
    dropped: dict[str, int] = field(default_factory=dict)  # DropReason -> count
    tokens_kept: int = 0  # tokens of the kept examples, as trained
    tokens_trained: int = 0  # of which carry a label
    tokens_truncated: int = 0  # tokens cut away by truncation to max_length
    tokens_trailing: int = 0  # untrained tokens after the last trained one, left out (no effect on the loss)
    longest_example_tokens: int = 0  # before truncation

    def drop(self, reason: DropReason, n: int = 1) -> None:
        self.dropped[reason.value] = self.dropped.get(reason.value, 0) + n


def read_sft_set(path: Path) -> list[dict[str, Any]]:
    """Rows of an SFT JSONL file (a torn last line is ignored)."""
    return list(iter_jsonl(Path(path)))


def valid_messages(row: Any) -> bool:
    """A row has a non-empty ``messages`` list of ``{role, content: str}`` with known roles."""
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list) or not messages:
        return False
    return all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages
    )


def tokenize_messages(
    tokenizer: Any,
    messages: list[dict[str, str]],
    assistant_only_loss: bool = True,
    last_turn_only: bool = False,
) -> dict:
    """``{"input_ids", "labels"}`` of one conversation, rendered with the tokenizer's template.

    With ``assistant_only_loss`` the labels are ``-100`` exactly outside the template's generation
    spans (with ``last_turn_only``, outside the last span); otherwise every token is trained.
    """
    out = tokenizer.apply_chat_template(
        [{"role": m["role"], "content": m["content"]} for m in messages],
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=assistant_only_loss,
    )
    ids = list(out["input_ids"])
    if not assistant_only_loss:
        return {"input_ids": ids, "labels": list(ids)}
    mask = list(out["assistant_masks"])
    if last_turn_only and any(mask):
        end = max(i for i, m in enumerate(mask) if m)
        start = end
        while start > 0 and mask[start - 1]:
            start -= 1
        mask = [int(start <= i <= end) for i in range(len(mask))]
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]
    return {"input_ids": ids, "labels": labels}


def _tokenize_row(
    row: dict, tokenizer: Any, max_length: int, overlong: str, assistant_only_loss: bool
) -> dict:
    """datasets.map function: tokenize, apply the length policy, record what happened."""
    if not any(m["role"] == "assistant" for m in row["messages"]):
        return _dropped(DropReason.NO_ASSISTANT_TURN, 0)
    ex = tokenize_messages(tokenizer, row["messages"], assistant_only_loss, row.get("loss") == "last")
    n_full = len(ex["input_ids"])
    status = "kept"
    if n_full > max_length:
        if overlong == "drop":
            return _dropped(DropReason.OVERLONG, n_full)
        ex = {"input_ids": ex["input_ids"][:max_length], "labels": ex["labels"][:max_length]}
        status = "truncated"
    trained_at = [i for i, label in enumerate(ex["labels"]) if label != IGNORE_INDEX]
    if not trained_at:
        return _dropped(
            DropReason.TRUNCATED_AWAY if status == "truncated" else DropReason.NO_ASSISTANT_TURN, n_full
        )
    # Tokens after the last trained one cannot change the loss (attention is causal): leave them out.
    end = trained_at[-1] + 1
    ex = {"input_ids": ex["input_ids"][:end], "labels": ex["labels"][:end]}
    return {**ex, "n_full": n_full, "n_trained": len(trained_at), "n_kept": end, "status": status}


def _dropped(reason: DropReason, n_full: int) -> dict:
    return {
        "input_ids": [],
        "labels": [],
        "n_full": n_full,
        "n_trained": 0,
        "n_kept": 0,
        "status": reason.value,
    }


def build_sft_dataset(
    rows: list[Any],
    tokenizer: Any,
    max_length: int,
    overlong: str = "truncate",
    assistant_only_loss: bool = True,
    num_proc: int | None = None,
) -> tuple[Any, SFTDataStats]:
    """A ``datasets.Dataset`` with ``input_ids`` and ``labels`` columns, and its ``SFTDataStats``.

    Asserts ``overlong`` is one of ``OVERLONG_CHOICES`` (validated with the config).
    """
    import datasets

    assert overlong in OVERLONG_CHOICES, overlong
    stats = SFTDataStats(
        max_length=max_length,
        overlong=overlong,
        assistant_only_loss=assistant_only_loss,
        examples_in=len(rows),
    )
    good = [{"messages": r["messages"], "loss": r.get("loss")} for r in rows if valid_messages(r)]
    if len(good) < len(rows):
        stats.drop(DropReason.INVALID_MESSAGES, len(rows) - len(good))
        logger.warning("%d SFT rows are not valid message lists and are dropped", len(rows) - len(good))
    if not good:  # nothing to tokenize: an empty set with the right columns (the caller says why)
        empty = datasets.Dataset.from_dict({"input_ids": [], "labels": []})
        return empty, stats
    ds = datasets.Dataset.from_list(good)
    ds = ds.map(
        _tokenize_row,
        fn_kwargs={
            "tokenizer": tokenizer,
            "max_length": max_length,
            "overlong": overlong,
            "assistant_only_loss": assistant_only_loss,
        },
        remove_columns=["messages", "loss"],
        num_proc=num_proc if num_proc and len(good) > 1 else None,
        desc="Tokenizing the SFT set",
    )
    _count(ds, stats)
    kept = ds.filter(lambda s: s in ("kept", "truncated"), input_columns="status")
    return kept.select_columns(["input_ids", "labels"]), stats


def _count(ds: Any, stats: SFTDataStats) -> None:
    columns = ds.select_columns(["status", "n_full", "n_trained", "n_kept"]).to_dict()
    rows = zip(columns["status"], columns["n_full"], columns["n_trained"], columns["n_kept"], strict=True)
    for status, n_full, n_trained, n_kept in rows:
        stats.longest_example_tokens = max(stats.longest_example_tokens, n_full)
        if status in ("kept", "truncated"):
            n_cut = min(n_full, stats.max_length)
            stats.examples_kept += 1
            stats.tokens_kept += n_kept
            stats.tokens_trained += n_trained
            stats.tokens_trailing += n_cut - n_kept
            if status == "truncated":
                stats.truncated += 1
                stats.tokens_truncated += n_full - n_cut
        else:
            stats.drop(DropReason(status))
