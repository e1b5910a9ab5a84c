"""The agent and teacher config options compose into the schemas and build what they name."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from stsc.agent import make_policy
from stsc.agent.tools import TOOLS, command_docs
from stsc.cli import CONF_DIR
from stsc.config import RootConfig, register_configs, to_root_config
from stsc.prompts import render

register_configs()


def _root(*overrides: str) -> RootConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_root_config(compose(config_name="config", overrides=list(overrides)))


@pytest.mark.parametrize(
    "option,kind,n",
    [("default", "last_n_observations", 5), ("last2", "last_n_observations", 2), ("full", "full", 0)],
)
def test_agent_options_choose_the_history_processor(option: str, kind: str, n: int) -> None:
    agent = _root(f"agent={option}", "experiment=paper_qwen3_4b").agent  # the quickstart shortens episodes
    assert (agent.name, agent.history.kind) == (option, kind)
    if kind == "last_n_observations":
        assert agent.history.n == n
    assert agent.max_steps == 50 and agent.cost_limit_usd == 4.0 and agent.command_timeout_s == 25.0


def test_teacher_options_build_their_policies() -> None:
    assert make_policy(_root("teacher=scripted").teacher).name == "scripted"
    assert make_policy(_root("teacher=submit_baseline").teacher).name == "submit_baseline"
    gpt5 = _root("teacher=gpt5").teacher
    assert (gpt5.kind, gpt5.llm.model, gpt5.llm.api_key_env) == ("llm", "openai/gpt-5", "OPENAI_API_KEY")
    vllm = _root("teacher=local_vllm").teacher
    assert vllm.llm.model.startswith("hosted_vllm/") and vllm.llm.api_base == "http://127.0.0.1:8000/v1"
    assert vllm.llm.input_cost_per_token == 0.0
    assert make_policy(vllm).name == "local_vllm"


def test_the_agent_templates_render_with_the_command_documentation() -> None:
    agent = _root().agent
    system = render(agent.system_template, command_docs=command_docs(), window=agent.window).text
    assert all(f"signature: {tool.signature}" in system for tool in TOOLS)
    assert "DISCUSSION" in system and "```" in system
    footer = {"current_step": 3, "remaining_steps": 47, "open_file": "n/a", "working_dir": "/w"}
    step = render(agent.next_step_template, observation="out", **footer).text
    assert (
        step.rstrip("\n")
        == "out\n(Current Step: 3, Remaining Steps: 47)\n(Open file: n/a)\n(Current directory: /w)\nbash-$"
    )
    error = render(agent.format_error_template, error="Your response contains no command block.").text
    assert "no command block" in error
