"""The methods an evaluation compares, and how each one's policy is built.

A method is one entry of the AUP pool (the pseudo-method ``baseline`` is added by the scoring):

- every ``eval.models`` entry: any policy kind (``llm`` for API models or any OpenAI-compatible
  server, ``transformers`` for a local checkpoint, ``scripted``, ``submit_baseline``); a
  ``transformers`` policy without ``model_path`` runs this run's SFT checkpoint;
- ``base`` (``eval.include_base_student``): the student before fine-tuning (``cfg.student``);
- ``sft`` (``eval.include_sft_student``): the checkpoint of the ``sft`` stage (``<sft>/model``).

The evaluation protocol overrides every method's sampling (``eval.temperature``, ``eval.top_p``)
and the agent's limits (``eval.max_steps``, ``eval.cost_limit_usd``), so all methods run under the
same rules.

Students run in-process with transformers (``eval.student_backend=transformers``: fine on CPU for
small models) or behind vLLM's OpenAI-compatible server (``eval.student_backend=vllm``), one server
per student, started before the stage::

    vllm serve <store>/sft/<key>/model --served-model-name sft --port 8000      # eval.vllm_api_base
    vllm serve <base student folder> --served-model-name base --port 8001      # eval.vllm_base_api_base

(the stage logs both commands with the real folders, and refuses to start while a server does not
answer). Any other model served by vLLM is an ``eval.models`` entry with ``policy.kind: llm``,
``llm.model: hosted_vllm/<served name>`` and ``llm.api_base: http://<host>:<port>/v1``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stsc.agent.trajectory import usable_model_id
from stsc.config import AgentConfig, LLMConfig, PolicyConfig, RootConfig
from stsc.errors import ConfigError, StageError
from stsc.evaluation.aup import BASELINE
from stsc.evaluation.runs import safe_model_id

log = logging.getLogger(__name__)

BASE, SFT = "base", "sft"
STUDENT_BACKENDS = ("transformers", "vllm")


@dataclass(frozen=True)
class EvalMethod:
    """One method of the pool. ``policy`` already carries the protocol's sampling; ``model_path``
    is the checkpoint the method runs (students, ``transformers`` policies; None otherwise)."""

    name: str
    policy: PolicyConfig
    model_path: Path | None = None

    @property
    def folder_id(self) -> str:
        """The model part of the method's run folder names."""
        return safe_model_id(self.name)


def eval_agent_config(cfg: RootConfig) -> AgentConfig:
    """``cfg.agent`` with the evaluation protocol's step and cost limits."""
    return dataclasses.replace(
        cfg.agent, max_steps=cfg.eval.max_steps, cost_limit_usd=cfg.eval.cost_limit_usd
    )


def _with_sampling(policy: PolicyConfig, cfg: RootConfig, name: str) -> PolicyConfig:
    """``policy`` sampled as every method of the pool is (eval.temperature/top_p); a transformers
    entry without its own reply limit gets the students' (eval.student_max_tokens)."""
    llm = dataclasses.replace(policy.llm, temperature=cfg.eval.temperature, top_p=cfg.eval.top_p)
    tokens = policy.max_new_tokens
    if policy.kind == "transformers" and tokens is None:
        tokens = cfg.eval.student_max_tokens
    return dataclasses.replace(policy, name=name, llm=llm, max_new_tokens=tokens)


def vllm_command(checkpoint: str, served_name: str, api_base: str) -> str:
    """The ``vllm serve`` command that makes ``checkpoint`` answer as ``served_name`` at ``api_base``."""
    from urllib.parse import urlparse

    port = urlparse(api_base).port or 8000
    return f"vllm serve {checkpoint} --served-model-name {served_name} --port {port}"


def _student_policy(cfg: RootConfig, name: str, checkpoint: str, api_base: str) -> PolicyConfig:
    ev = cfg.eval
    if ev.student_backend == "vllm":
        llm = LLMConfig(
            model=f"hosted_vllm/{name}", api_base=api_base, api_key_env=None, max_tokens=ev.student_max_tokens,
            concurrency=max(1, ev.concurrency), input_cost_per_token=0.0, output_cost_per_token=0.0,
            cache=False,  # a served name is reused by every checkpoint: cached answers would be stale
            send_seed=True,  # sampled like the transformers backend: reproducible per episode
        )  # fmt: skip
        return PolicyConfig(kind="llm", name=name, llm=llm)
    return PolicyConfig(
        kind="transformers", name=name, model_path=checkpoint, max_new_tokens=ev.student_max_tokens
    )


def _check_names(methods: list[EvalMethod]) -> None:
    seen: dict[str, str] = {}
    for m in methods:
        if not usable_model_id(m.folder_id) or m.name == BASELINE:
            raise ConfigError(
                f"eval method name {m.name!r} is not usable: it must be non-empty, contain no '__', not end "
                f"with '_' and not be {BASELINE!r} (the baseline pseudo-method); rename it in eval.models"
            )
        if m.folder_id in seen:
            raise ConfigError(
                f"eval methods {seen[m.folder_id]!r} and {m.name!r} share the run folder id {m.folder_id!r}; "
                "give every eval.models entry (and the included base/sft students) a distinct name"
            )
        seen[m.folder_id] = m.name


def eval_methods(
    cfg: RootConfig,
    *,
    sft_model: Callable[[], Path] | None = None,
    base_model: Callable[[], Path] | None = None,
) -> list[EvalMethod]:
    """The pool's methods in order: ``eval.models``, then ``base`` and ``sft`` when included.

    ``sft_model``/``base_model`` return the checkpoint folders; they are called only when a method
    needs them (a transformers policy, or a vllm command to show). Raises ``ConfigError`` for
    duplicate or reserved names, an unknown ``eval.student_backend``, or a needed checkpoint whose
    provider is missing.
    """
    ev = cfg.eval
    if ev.student_backend not in STUDENT_BACKENDS:
        raise ConfigError(
            f"eval.student_backend={ev.student_backend!r}; choose one of {list(STUDENT_BACKENDS)}"
        )

    def need(provider: Callable[[], Path] | None, what: str) -> Path:
        if provider is None:
            raise ConfigError(f"{what} is evaluated but no checkpoint is available for it")
        return Path(provider())

    methods = []
    for entry in ev.models:
        policy = _with_sampling(entry.policy, cfg, entry.policy.name)
        path = None
        if policy.kind == "transformers":
            path = (
                Path(policy.model_path)
                if policy.model_path
                else need(sft_model, f"eval.models[{entry.name}]")
            )
            policy = dataclasses.replace(policy, model_path=str(path))
        methods.append(EvalMethod(entry.name, policy, path))
    for name, include, provider, api_base in (
        (BASE, ev.include_base_student, base_model, ev.vllm_base_api_base),
        (SFT, ev.include_sft_student, sft_model, ev.vllm_api_base),
    ):
        if include:
            path = need(provider, f"the {name} student (eval.include_{name}_student)")
            policy = _with_sampling(_student_policy(cfg, name, str(path), api_base), cfg, name)
            methods.append(EvalMethod(name, policy, path))
    _check_names(methods)
    return methods


def check_vllm_server(method: EvalMethod, timeout_s: float = 10.0) -> None:
    """Fail fast when the vLLM server of a student does not serve it: raises ``StageError`` with
    the ``vllm serve`` command to run. Does nothing for other policies."""
    import urllib.error
    import urllib.request

    llm = method.policy.llm
    if method.policy.kind != "llm" or not llm.model.startswith("hosted_vllm/") or not llm.api_base:
        return
    served = llm.model.removeprefix("hosted_vllm/")
    command = vllm_command(str(method.model_path or "<checkpoint>"), served, llm.api_base)
    try:
        with urllib.request.urlopen(f"{llm.api_base.rstrip('/')}/models", timeout=timeout_s) as answer:
            ids = {m.get("id") for m in json.loads(answer.read().decode("utf-8")).get("data", [])}
    except (OSError, ValueError, urllib.error.URLError) as e:
        raise StageError(f"no model server answers at {llm.api_base} for method {method.name!r} ({e}); "
                         f"start it with: {command}") from e  # fmt: skip
    if served not in ids:
        raise StageError(
            f"the server at {llm.api_base} serves {sorted(i for i in ids if i)}, not {served!r} "
            f"(method {method.name!r}); start it with: {command}"
        )
    log.info("evaluate: %s is served at %s", method.name, llm.api_base)
