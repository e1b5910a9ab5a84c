"""The methods of an evaluation pool: protocol overrides, students on transformers or vLLM, names."""

from __future__ import annotations

from pathlib import Path

import pytest

from stsc.config import EvalModelConfig, LLMConfig, PolicyConfig, RootConfig
from stsc.errors import ConfigError, StageError
from stsc.evaluation.models import check_vllm_server, eval_agent_config, eval_methods, vllm_command
from tests.fakes.openai_server import FakeOpenAIServer


def _cfg(**eval_fields) -> RootConfig:
    cfg = RootConfig()
    cfg.eval.include_base_student = False
    cfg.eval.include_sft_student = False
    for key, value in eval_fields.items():
        setattr(cfg.eval, key, value)
    return cfg


def _model(name: str, kind: str = "scripted", **policy) -> EvalModelConfig:
    return EvalModelConfig(
        name=name, policy=PolicyConfig(kind=kind, name=policy.pop("label", kind), **policy)
    )


def test_the_protocol_overrides_sampling_and_limits_of_every_method() -> None:
    api = _model("gpt-4o", "llm", llm=LLMConfig(model="openai/gpt-4o", temperature=1.0, top_p=0.5))
    cfg = _cfg(models=[api, _model("scripted")], temperature=0.0, top_p=0.95, max_steps=7, cost_limit_usd=0.5)
    cfg.agent.max_steps, cfg.agent.cost_limit_usd = 50, 4.0
    methods = eval_methods(cfg)
    assert [m.name for m in methods] == ["gpt-4o", "scripted"]
    assert all((m.policy.llm.temperature, m.policy.llm.top_p) == (0.0, 0.95) for m in methods)
    assert methods[0].policy.llm.model == "openai/gpt-4o" and methods[0].model_path is None
    agent = eval_agent_config(cfg)
    assert (agent.max_steps, agent.cost_limit_usd) == (7, 0.5)
    assert (cfg.agent.max_steps, cfg.agent.cost_limit_usd) == (50, 4.0)  # the config is not mutated


def test_students_run_with_transformers_and_a_checkpointless_entry_means_the_sft_model(
    tmp_path: Path,
) -> None:
    cfg = _cfg(models=[_model("student-again", "transformers")], include_base_student=True,
               include_sft_student=True, student_max_tokens=99)  # fmt: skip
    calls: list[str] = []

    def sft() -> Path:
        calls.append("sft")
        return tmp_path / "sft" / "model"

    methods = eval_methods(cfg, sft_model=sft, base_model=lambda: tmp_path / "base")
    assert [m.name for m in methods] == ["student-again", "base", "sft"]
    again, base, tuned = methods
    assert again.model_path == tuned.model_path == tmp_path / "sft" / "model"
    assert again.policy.model_path == str(tmp_path / "sft" / "model")
    assert base.policy.kind == tuned.policy.kind == "transformers"
    assert (base.model_path, base.policy.max_new_tokens, base.policy.name) == (tmp_path / "base", 99, "base")
    assert again.policy.max_new_tokens == tuned.policy.max_new_tokens == 99  # one checkpoint, one limit
    assert calls == ["sft", "sft"]
    eval_methods(_cfg(models=[_model("scripted")]), sft_model=sft)
    assert calls == ["sft", "sft"]  # a checkpoint is asked for only when a method runs it


def test_students_behind_vllm_are_llm_policies_of_their_served_names(tmp_path: Path) -> None:
    cfg = _cfg(include_base_student=True, include_sft_student=True, student_backend="vllm",
               vllm_api_base="http://gpu-1:8000/v1", vllm_base_api_base="http://gpu-2:8001/v1",
               student_max_tokens=512, temperature=0.0)  # fmt: skip
    base, sft = eval_methods(cfg, sft_model=lambda: tmp_path / "sft", base_model=lambda: tmp_path / "base")
    assert (sft.policy.kind, sft.policy.llm.model, sft.policy.llm.api_base) == (
        "llm", "hosted_vllm/sft", "http://gpu-1:8000/v1",
    )  # fmt: skip
    assert (base.policy.llm.model, base.policy.llm.api_base) == ("hosted_vllm/base", "http://gpu-2:8001/v1")
    assert sft.policy.llm.max_tokens == 512 and sft.policy.llm.cache is False
    assert sft.policy.llm.input_cost_per_token == sft.policy.llm.output_cost_per_token == 0.0
    assert vllm_command(str(tmp_path / "sft"), "sft", "http://gpu-1:8000/v1") == (
        f"vllm serve {tmp_path / 'sft'} --served-model-name sft --port 8000"
    )


def test_a_student_server_must_serve_its_name_before_the_stage_starts(tmp_path: Path) -> None:
    with FakeOpenAIServer(model="sft") as right, FakeOpenAIServer(model="other") as wrong:
        cfg = _cfg(include_sft_student=True, student_backend="vllm", vllm_api_base=right.base_url)
        (method,) = eval_methods(cfg, sft_model=lambda: tmp_path / "ckpt")
        check_vllm_server(method)
        cfg.eval.vllm_api_base = wrong.base_url
        (method,) = eval_methods(cfg, sft_model=lambda: tmp_path / "ckpt")
        with pytest.raises(
            StageError, match=rf"serves \['other'\], not 'sft'.*vllm serve {tmp_path / 'ckpt'}"
        ):
            check_vllm_server(method)
        port = wrong.port
    cfg.eval.vllm_api_base = f"http://127.0.0.1:{port}/v1"
    (method,) = eval_methods(cfg, sft_model=lambda: tmp_path / "ckpt")
    with pytest.raises(StageError, match=rf"no model server answers.*--port {port}"):
        check_vllm_server(method, timeout_s=2.0)


@pytest.mark.parametrize(
    ("names", "include_students", "message"),
    [
        (["baseline"], False, "not be 'baseline'"),
        (["a__b"], False, "contain no '__'"),
        (["model_"], False, "not end with '_'"),
        (["org/model", "org--model"], False, "share the run folder id 'org--model'"),
        (["sft"], True, "share the run folder id 'sft'"),
    ],
)
def test_method_names_must_be_usable_as_distinct_run_folder_ids(
    names: list[str], include_students: bool, message: str, tmp_path: Path
) -> None:
    cfg = _cfg(models=[_model(n) for n in names], include_sft_student=include_students)
    with pytest.raises(ConfigError, match=message):
        eval_methods(cfg, sft_model=lambda: tmp_path)


def test_an_included_student_without_a_checkpoint_or_a_bad_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="the sft student"):
        eval_methods(_cfg(include_sft_student=True))
    with pytest.raises(ConfigError, match=r"student_backend='tgi'.*\['transformers', 'vllm'\]"):
        eval_methods(_cfg(student_backend="tgi"))
