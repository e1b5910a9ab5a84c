"""Who acts in an episode: one tiny protocol and the policies behind it.

A ``Policy`` turns the model's view of the chat into one response; the episode loop parses it and
runs the command. Policies are shared across concurrent episodes, so they keep no per-episode state
(the offline policies read everything they need from the messages). ``make_policy`` builds one from
a ``PolicyConfig``:

- ``llm``: any litellm model through ``stsc.llm.LLMClient``;
- ``scripted``: a rule-based researcher (reads the task, runs the baseline, tries stronger
  scikit-learn models, submits the best) whose responses are in the agent format;
- ``submit_baseline``: runs the baseline and submits it;
- ``transformers``: a local Hugging Face causal LM (a checkpoint folder), generating on CPU/GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from stsc.config import PolicyConfig
from stsc.errors import ConfigError

POLICY_KINDS = ("llm", "scripted", "submit_baseline", "transformers")
DEFAULT_MAX_NEW_TOKENS = 256  # a transformers policy's reply limit when its config sets none


@dataclass(frozen=True)
class PolicyReply:
    """One response with what it cost. Token counts are the policy's own (0 for rule-based ones)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    truncated: bool = False  # the model hit its output limit before it ended its answer


@runtime_checkable
class Policy(Protocol):
    name: str  # label in run folders and tables

    async def act(self, messages: list[dict[str, str]], *, seed: int) -> PolicyReply:
        """The next response to ``messages`` (role/content dicts). ``seed`` identifies the episode,
        so repeated episodes of one task sample independently. Raises ``LLMError`` (or a subclass:
        ``ContextLimitError``, ``BudgetExceededError``) when no response can be produced."""
        ...


def make_policy(
    cfg: PolicyConfig,
    *,
    cache_dir: Path | None = None,
    budget_usd: float | None = None,
    model_path: Path | None = None,
) -> Policy:
    """Build the policy ``cfg.kind`` names.

    ``cache_dir``/``budget_usd`` go to the LLM client; ``model_path`` (transformers) overrides
    ``cfg.model_path``; the transformers policy samples with ``cfg.llm.temperature``/``top_p``
    (temperature 0 = greedy). Raises ``ConfigError`` for an unknown kind or a missing model path.
    """
    if cfg.kind == "llm":
        from stsc.agent.policies.llm import LLMPolicy
        from stsc.llm import LLMClient

        return LLMPolicy(cfg.name, LLMClient(cfg.llm, cache_dir=cache_dir, budget_usd=budget_usd))
    if cfg.kind == "scripted":
        from stsc.agent.policies.scripted import ScriptedPolicy

        return ScriptedPolicy(cfg.name, attempts=cfg.attempts)
    if cfg.kind == "submit_baseline":
        from stsc.agent.policies.scripted import SubmitBaselinePolicy

        return SubmitBaselinePolicy(cfg.name)
    if cfg.kind == "transformers":
        from stsc.agent.policies.hf import TransformersPolicy

        path = model_path or (Path(cfg.model_path) if cfg.model_path else None)
        if path is None:
            raise ConfigError(
                f"policy {cfg.name!r} (kind=transformers) needs a checkpoint folder: set model_path"
            )
        return TransformersPolicy(
            cfg.name,
            Path(path),
            max_new_tokens=cfg.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
            temperature=cfg.llm.temperature,
            top_p=cfg.llm.top_p,
            device=cfg.device,
        )
    raise ConfigError(f"policy kind {cfg.kind!r} is not valid; choose one of {list(POLICY_KINDS)}")
