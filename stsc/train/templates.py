"""Training chat templates: every student's template marks assistant output for the loss.

A training template renders exactly the text the model sees at inference and wraps each assistant
turn (its content and end-of-turn token) in ``{% generation %}...{% endgeneration %}``, so that
``apply_chat_template(..., return_assistant_tokens_mask=True)`` yields the tokens to train on.

Templates come from three places, chosen by ``StudentConfig.chat_template``:

- ``chatml`` and ``smollm2``: ChatML templates defined here (``smollm2`` keeps SmolLM2-Instruct's
  default system prompt, so its renderings equal the original template's);
- ``<name>``: TRL's ``trl/chat_templates/<name>_training.jinja`` (``qwen3``, ``llama3``, ...). The
  ``qwen3`` training template always renders an (empty) ``<think>`` block in assistant turns;
- ``native``: the tokenizer's own template, kept when it already has the markers, else swapped for
  TRL's training twin when TRL recognises it.

``install_training_template`` sets the template on a tokenizer and checks its masks on a probe
conversation; a template that would train user text or never train the end-of-turn token is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from stsc.errors import ConfigError

logger = logging.getLogger(__name__)

CHATML_TRAINING_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>\\n' }}{%- endgeneration %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

SMOLLM2_TRAINING_TEMPLATE = (
    "{%- if messages and messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + SMOLLM2_DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}" + CHATML_TRAINING_TEMPLATE
)

BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": CHATML_TRAINING_TEMPLATE,
    "smollm2": SMOLLM2_TRAINING_TEMPLATE,
}

# A probe conversation whose distinctive words tell assistant text from everything else.
_PROBE = [
    {"role": "system", "content": "probe-system alpha"},
    {"role": "user", "content": "probe-user bravo"},
    {"role": "assistant", "content": "probe-assistant charlie"},
    {"role": "user", "content": "probe-user delta"},
    {"role": "assistant", "content": "probe-assistant echo"},
]


def _trl_template_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("trl")
    assert spec is not None and spec.origin is not None, "trl is a dependency of stsc"
    return Path(spec.origin).parent / "chat_templates"


def available_templates() -> list[str]:
    """Every name ``chat_template`` accepts."""
    trl_names = sorted(
        p.name[: -len("_training.jinja")] for p in _trl_template_dir().glob("*_training.jinja")
    )
    return sorted(BUILTIN_TEMPLATES) + ["native"] + trl_names


def has_generation_markers(template: Any) -> bool:
    return isinstance(template, str) and "{% generation %}" in template.replace("{%-", "{%").replace(
        "-%}", "%}"
    )


def training_template(name: str, tokenizer: Any) -> str:
    """The training template called ``name`` for ``tokenizer``; raises ``ConfigError`` when unknown."""
    if name in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[name]
    if name == "native":
        return _native_template(tokenizer)
    path = _trl_template_dir() / f"{name}_training.jinja"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise ConfigError(f"student.chat_template={name!r} is unknown; choose one of {available_templates()}")


def _native_template(tokenizer: Any) -> str:
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    if not template:
        raise ConfigError(
            "student.chat_template=native but the tokenizer has no chat template; name a training "
            f"template instead, one of {available_templates()}"
        )
    if has_generation_markers(template):
        return template
    from trl.chat_template_utils import get_training_chat_template

    try:
        patched = get_training_chat_template(tokenizer)
    except ValueError as e:
        raise ConfigError(
            "student.chat_template=native: the tokenizer's template has no {% generation %} markers and "
            f"TRL does not know its training twin; name one of {available_templates()}"
        ) from e
    return patched or template


def install_training_template(tokenizer: Any, name: str) -> Any:
    """Set the training template ``name`` on ``tokenizer`` (in place) after checking its masks.

    Raises ``ConfigError`` if the template is unknown or its assistant masks are wrong.
    """
    template = training_template(name, tokenizer)
    check_assistant_masks(tokenizer, template, name)
    tokenizer.chat_template = template
    return tokenizer


def check_assistant_masks(tokenizer: Any, template: str, name: str = "template") -> None:
    """Render a probe conversation and check that exactly the assistant turns are marked.

    Raises ``ConfigError`` naming the problem: no markers, user/system text inside the mask, an
    assistant reply outside it, or an end-of-turn token left untrained.
    """
    if not has_generation_markers(template):
        raise ConfigError(f"chat template {name!r} has no {{% generation %}} markers")
    out = tokenizer.apply_chat_template(
        _PROBE, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    trained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    untrained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    problems = []
    if "charlie" not in trained or "echo" not in trained:
        problems.append("assistant replies fall outside the mask")
    if any(word in trained for word in ("alpha", "bravo", "delta")):
        problems.append("system or user text falls inside the mask")
    if "charlie" in untrained or "echo" in untrained:
        problems.append("part of an assistant reply is untrained")
    if not _stop_token_trained(tokenizer, ids, mask):
        problems.append(
            "the assistant's end-of-turn token is not trained (the model would not learn to stop)"
        )
    if problems:
        raise ConfigError(f"chat template {name!r} gives wrong assistant masks: {'; '.join(problems)}")


def _stop_token_trained(tokenizer: Any, ids: list[int], mask: list[int]) -> bool:
    """The last non-blank trained token of the first assistant turn is a special token."""
    special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    first_turn: list[int] = []
    for token, m in zip(ids, mask, strict=True):
        if m:
            first_turn.append(token)
        elif first_turn:
            break
    for token in reversed(first_turn):
        if tokenizer.decode([token]).strip():
            return token in special
    return False
