"""From SFT rows to trainer examples: assistant-only labels and explicit, counted length handling."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from stsc.train.data import IGNORE_INDEX, DropReason, build_sft_dataset, tokenize_messages
from stsc.train.templates import install_training_template

ASSISTANT_TURN = re.compile(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>\n)", re.DOTALL)


@pytest.fixture(params=["qwen3", "smollm2"])
def tokenizer(request, tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    return install_training_template(tok, request.param)


def expected_trained(tokenizer, messages):
    """Per token: inside an assistant turn (after its header, end-of-turn included)? Found from the
    rendered text and token offsets alone, independently of the template's generation markers."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = [m.span(1) for m in ASSISTANT_TURN.finditer(text)]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    flags = []
    for start, end in enc["offset_mapping"]:
        inside = any(s <= start and end <= e for s, e in spans)
        outside = all(end <= s or start >= e for s, e in spans)
        assert inside or outside, f"token {text[start:end]!r} straddles an assistant boundary"
        flags.append(inside)
    return enc["input_ids"], flags


def test_labels_are_ignored_exactly_outside_assistant_turns(tokenizer, agent_rows):
    for row in agent_rows[:6]:
        example = tokenize_messages(tokenizer, row["messages"])
        ids, trained = expected_trained(tokenizer, row["messages"])
        assert example["input_ids"] == ids
        assert [label != IGNORE_INDEX for label in example["labels"]] == trained
        assert all(
            label == tok for label, tok in zip(example["labels"], ids, strict=True) if label != IGNORE_INDEX
        )
        n_turns = sum(m["role"] == "assistant" for m in row["messages"])
        eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert sum(1 for label in example["labels"] if label == eos) == n_turns  # every turn learns to stop


def test_without_assistant_only_loss_every_token_is_trained(tiny_tokenizer, agent_rows):
    example = tokenize_messages(tiny_tokenizer, agent_rows[0]["messages"], assistant_only_loss=False)
    assert example["labels"] == example["input_ids"]


def test_a_step_row_trains_its_last_assistant_turn_only(tokenizer, agent_rows):
    messages = next(
        r["messages"] for r in agent_rows if sum(m["role"] == "assistant" for m in r["messages"]) > 2
    )
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    messages = messages[: last + 1]
    ds, stats = build_sft_dataset(
        [{"messages": messages, "loss": "last"}, {"messages": messages}], tokenizer, 100_000
    )
    step, whole = ds[0], ds[1]
    assert step["input_ids"] == whole["input_ids"]
    _, trained = expected_trained(tokenizer, messages)
    # the trained tokens of the step row are the last run of the whole row's trained tokens
    start = max(i for i, t in enumerate(trained) if not t) + 1
    assert [label != IGNORE_INDEX for label in step["labels"]] == [i >= start for i in range(len(trained))]
    assert stats.examples_kept == 2


def _lengths(tokenizer, rows):
    return [len(tokenize_messages(tokenizer, r["messages"])["input_ids"]) for r in rows]


def _trim(labels):
    """Length up to and including the last trained label."""
    return max(i for i, label in enumerate(labels) if label != IGNORE_INDEX) + 1


def test_overlong_examples_are_truncated_and_counted(tiny_tokenizer, agent_rows):
    rows = agent_rows[:8]
    full = [tokenize_messages(tiny_tokenizer, r["messages"]) for r in rows]
    lengths = [len(f["input_ids"]) for f in full]
    max_length = sorted(lengths)[3]  # half the rows are longer
    n_long = sum(n > max_length for n in lengths)
    ds, stats = build_sft_dataset(rows, tiny_tokenizer, max_length, overlong="truncate")
    assert n_long > 0
    assert stats.examples_in == 8 and stats.examples_kept == 8 and stats.truncated == n_long
    assert stats.dropped == {}
    assert stats.tokens_truncated == sum(n - max_length for n in lengths if n > max_length)
    assert stats.longest_example_tokens == max(lengths)
    for f, kept in zip(full, ds, strict=True):
        cut = _trim(f["labels"][:max_length])
        assert kept["input_ids"] == f["input_ids"][:cut] and kept["labels"] == f["labels"][:cut]
    assert stats.tokens_kept + stats.tokens_trailing + stats.tokens_truncated == sum(lengths)


def test_untrained_tokens_after_the_last_trained_one_are_left_out_without_changing_the_loss(
    tiny_tokenizer, agent_rows, shared_store
):
    from stsc.train.students import load_model, materialize_student, student_cache_dir

    from .conftest import student_config

    messages = agent_rows[0]["messages"][:4]  # ends with an observation: nothing to learn after it
    full = tokenize_messages(tiny_tokenizer, messages)
    ds, stats = build_sft_dataset([{"messages": messages}], tiny_tokenizer, 100_000)
    kept = ds[0]
    assert len(kept["input_ids"]) == _trim(full["labels"]) < len(full["input_ids"])
    assert stats.tokens_trailing == len(full["input_ids"]) - len(kept["input_ids"])

    cfg = student_config("tiny")
    model = load_model(materialize_student(cfg, student_cache_dir(shared_store)), cfg)
    with torch.no_grad():
        loss_full = model(
            input_ids=torch.tensor([full["input_ids"]]), labels=torch.tensor([full["labels"]])
        ).loss
        loss_kept = model(
            input_ids=torch.tensor([kept["input_ids"]]), labels=torch.tensor([kept["labels"]])
        ).loss
    assert torch.allclose(loss_full, loss_kept, atol=1e-6)


def test_overlong_examples_can_be_dropped_and_are_counted_with_their_reason(tiny_tokenizer, agent_rows):
    rows = agent_rows[:8]
    lengths = _lengths(tiny_tokenizer, rows)
    max_length = sorted(lengths)[3]
    ds, stats = build_sft_dataset(rows, tiny_tokenizer, max_length, overlong="drop")
    n_long = sum(n > max_length for n in lengths)
    assert stats.dropped == {DropReason.OVERLONG.value: n_long}
    assert len(ds) == stats.examples_kept == 8 - n_long
    assert all(len(x) <= max_length for x in ds["input_ids"])


def test_an_example_whose_assistant_turns_are_all_truncated_away_is_dropped_with_a_reason(
    tiny_tokenizer, agent_rows
):
    system_and_task = tokenize_messages(tiny_tokenizer, agent_rows[0]["messages"][:2])["input_ids"]
    ds, stats = build_sft_dataset(
        agent_rows[:2], tiny_tokenizer, len(system_and_task) - 5, overlong="truncate"
    )
    assert len(ds) == 0
    assert stats.dropped == {DropReason.TRUNCATED_AWAY.value: 2}


def test_rows_that_cannot_be_trained_on_are_dropped_with_their_reason(tiny_tokenizer, agent_rows):
    rows = [
        agent_rows[0],
        {"messages": [{"role": "user", "content": "hello"}]},  # nothing to learn
        {"messages": [{"role": "robot", "content": "beep"}]},  # unknown role
        {"messages": "not a list"},
        {"text": "no messages"},
    ]
    ds, stats = build_sft_dataset(rows, tiny_tokenizer, 100_000)
    assert len(ds) == stats.examples_kept == 1
    assert stats.dropped == {DropReason.NO_ASSISTANT_TURN.value: 1, DropReason.INVALID_MESSAGES.value: 3}
    assert stats.examples_in == stats.examples_kept + sum(stats.dropped.values())
    assert stats.tokens_trained == sum(label != IGNORE_INDEX for label in ds[0]["labels"])
