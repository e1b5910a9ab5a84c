"""The ``transformers`` policy: a local Hugging Face causal LM (a student checkpoint folder).

The model is loaded on first use (torch and transformers are imported then, not at import time),
on the configured device (``auto``: the first CUDA device when there is one, else the CPU), and
generates with the tokenizer's chat template, greedily at temperature 0. Generation runs in a
worker thread, one call at a time per policy. Whatever text comes out is returned: malformed
responses become format errors in the episode, never exceptions here.

The response keeps its ``<think>`` markup even where the tokenizer counts those tokens as special:
the episode parses the block into the thought, and the next prompt renders the turn exactly as the
training template did. (Dropping the markers left their newlines at the start of every response,
a prefix no training example had.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

from stsc.agent.policies import PolicyReply
from stsc.errors import ConfigError, ContextLimitError, LLMError

log = logging.getLogger(__name__)


class TransformersPolicy:
    def __init__(
        self,
        name: str,
        path: Path,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        device: str = "auto",
    ):
        self.name = name
        self.device = device
        self.path = Path(path)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        """``(model, tokenizer)``; raises ``ConfigError`` when the folder is not a usable chat model."""
        if self._loaded is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if not (self.path / "config.json").is_file():
                raise ConfigError(f"policy {self.name!r}: {self.path} is not a Hugging Face model folder")
            tokenizer = AutoTokenizer.from_pretrained(self.path)
            if not tokenizer.chat_template:
                raise ConfigError(f"policy {self.name!r}: the tokenizer in {self.path} has no chat template")
            device = self.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            model = AutoModelForCausalLM.from_pretrained(self.path, dtype="auto").to(device)
            model.eval()
            log.info("loaded %s from %s on %s", self.name, self.path, device)
            self._loaded = (model, tokenizer)
        return self._loaded

    async def act(self, messages: list[dict[str, str]], *, seed: int) -> PolicyReply:
        return await asyncio.to_thread(self._generate, messages, seed)

    def _generate(self, messages: list[dict[str, str]], seed: int) -> PolicyReply:
        import torch

        with self._lock:
            model, tokenizer = self._load()
            encoded = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            input_ids = encoded["input_ids"].to(model.device)
            attention_mask = encoded.get("attention_mask")
            if attention_mask is not None:
                attention_mask = attention_mask.to(model.device)
            n_prompt = int(input_ids.shape[-1])
            limit = getattr(model.config, "max_position_embeddings", None)
            if limit is not None and n_prompt + self.max_new_tokens > limit:
                raise ContextLimitError(
                    f"policy {self.name!r}: prompt of {n_prompt} tokens plus {self.max_new_tokens} new "
                    f"tokens exceeds the model's {limit} positions"
                )
            sampling: dict[str, Any] = {"do_sample": self.temperature > 0}
            if self.temperature > 0:
                sampling.update(temperature=self.temperature, top_p=self.top_p)
            try:
                cuda = [model.device.index or 0] if model.device.type == "cuda" else []
                with torch.random.fork_rng(devices=cuda), torch.no_grad():
                    torch.manual_seed(seed * 1_000_003 + len(messages))
                    output = model.generate(
                        input_ids=input_ids,
                        attention_mask=attention_mask,
                        max_new_tokens=self.max_new_tokens,
                        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                        **sampling,
                    )
            except (RuntimeError, ValueError) as e:
                raise LLMError(f"policy {self.name!r}: generation failed: {e}") from e
        new_tokens = output[0, n_prompt:]
        text = response_text(tokenizer, new_tokens)
        n_new = int(new_tokens.shape[-1])
        ended = tokenizer.eos_token_id is not None and tokenizer.eos_token_id in new_tokens.tolist()
        return PolicyReply(
            text=text, prompt_tokens=n_prompt, completion_tokens=n_new,
            truncated=n_new >= self.max_new_tokens and not ended,
        )  # fmt: skip


THINK_MARKERS = ("<think>", "</think>")


def response_text(tokenizer: Any, tokens: Any) -> str:
    """The generated text up to the end of the turn, without special tokens other than the
    ``<think>`` markers."""
    text = tokenizer.decode(tokens, skip_special_tokens=False)
    eos = tokenizer.eos_token
    if eos and eos in text:
        text = text[: text.index(eos)]
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    specials = set(tokenizer.all_special_tokens) | {t.content for t in added.values() if t.special}
    for special in specials - set(THINK_MARKERS):
        text = text.replace(special, "")
    return text
