"""The offline policies end real episodes with recorded statuses; the factory validates configs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from stsc.agent import make_policy, run_episode
from stsc.agent.parser import parse_response
from stsc.agent.policies import Policy
from stsc.agent.task import load_task
from stsc.config import AgentConfig, PolicyConfig, StudentConfig
from stsc.errors import ConfigError
from tests.agent.conftest import TASK_ID


def episode(task: Path, policy: Policy, factory, run_dir: Path, **cfg: object):
    return asyncio.run(run_episode(task, policy, factory, AgentConfig(**cfg), run_dir, seed=1, label="test"))


def trajectory(run_dir: Path, task_id: str = TASK_ID) -> list[dict]:
    return json.loads((run_dir / f"{task_id}.traj").read_text())["trajectory"]


def test_the_scripted_researcher_beats_the_baseline_and_submits_its_best(
    toy_task, sandbox_factory, tmp_path
) -> None:
    policy = make_policy(PolicyConfig(kind="scripted", name="scripted", attempts=2))
    result = episode(toy_task, policy, sandbox_factory, tmp_path / "run")
    assert result.exit_status == "submitted"
    assert result.best_score is not None and result.best_score > result.baseline_score + 0.1
    assert result.last_score == result.best_score
    steps = trajectory(tmp_path / "run")
    actions = [s["action"] for s in steps]
    assert actions[:4] == [
        "ls -la && ls -la data",
        "rm -f submission.csv && python baseline.py",
        "validate",
        'open "baseline.py"',
    ]  # the baseline runs first: a submission is in place from the third step on
    assert "create model_hist_gradient_boosting.py" in actions and "create model_random_forest.py" in actions
    assert sum(a.startswith("edit 1:1\n") for a in actions) == 2 and actions[-1] == "submit"
    assert actions.count("validate") == 3 and len(result.scores) == 4
    assert "Task type: classification." in steps[4]["thought"]
    assert all("File updated" in s["observation"] for s in steps if s["action"].startswith("edit"))
    for step in steps:  # every response is valid training data in the agent format
        assert parse_response(step["response"]).action == step["action"]
        assert step["response"].startswith("DISCUSSION\n")


def test_the_scripted_researcher_submits_in_time_when_steps_run_out(
    toy_task, sandbox_factory, tmp_path
) -> None:
    policy = make_policy(PolicyConfig(kind="scripted", name="scripted"))
    result = episode(toy_task, policy, sandbox_factory, tmp_path / "run", max_steps=6)
    assert result.exit_status == "submitted" and result.steps == 6
    assert result.last_score == result.baseline_score
    actions = [s["action"] for s in trajectory(tmp_path / "run")]
    assert len(actions) == 6  # with two steps left it restores its best submission, then submits itself
    assert actions[-2:] == ["rm -f submission.csv && python baseline.py", "submit"]


def test_submit_baseline_scores_the_baseline(toy_task, sandbox_factory, tmp_path) -> None:
    policy = make_policy(PolicyConfig(kind="submit_baseline", name="submit_baseline"))
    result = episode(toy_task, policy, sandbox_factory, tmp_path / "run")
    assert result.exit_status == "submitted" and result.steps == 2
    assert result.scores == [load_task(toy_task).baseline_scores]
    assert result.policy == "submit_baseline" and result.api_calls == 2 and result.cost_usd == 0.0


def test_a_tiny_random_transformers_model_ends_with_a_recorded_status(
    toy_task, sandbox_factory, tmp_path
) -> None:
    from stsc.train.students import materialize_student

    folder = materialize_student(StudentConfig(name="tiny", source="tiny"), tmp_path / "students")
    cfg = PolicyConfig(kind="transformers", name="tiny", model_path=str(folder), max_new_tokens=24)
    result = episode(toy_task, make_policy(cfg), sandbox_factory, tmp_path / "run", max_steps=3)
    assert result.exit_status in {
        "submission_not_found (exit_format)",
        "submission_not_found (max_steps)",
        "submission_not_found (exit_context)",
        "autosubmission (max_steps)",
    }
    assert result.api_calls >= 1 and result.prompt_tokens > 0 and result.completion_tokens > 0
    assert (tmp_path / "run" / "stsc.json").exists()


def test_the_episode_seed_reaches_a_server_that_samples_with_it(llm_policy, openai_server) -> None:
    import asyncio

    asyncio.run(llm_policy(send_seed=True).act([{"role": "user", "content": "hi"}], seed=7))
    asyncio.run(llm_policy().act([{"role": "user", "content": "hi"}], seed=7))
    first, second = (r.body for r in openai_server.chat_requests)
    assert first["seed"] == 7 and "seed" not in second  # only where configured (vLLM students)


def test_a_student_reply_that_hits_max_new_tokens_says_it_was_cut(tmp_path) -> None:
    import asyncio

    from stsc.train.students import materialize_student

    folder = materialize_student(StudentConfig(name="tiny", source="tiny"), tmp_path / "students")
    cfg = PolicyConfig(kind="transformers", name="tiny", model_path=str(folder), max_new_tokens=16)
    reply = asyncio.run(make_policy(cfg).act([{"role": "user", "content": "hello"}], seed=0))
    # an untrained model does not produce its end-of-turn token within 16 tokens
    assert reply.completion_tokens == 16 and reply.truncated


def test_student_responses_keep_their_think_markup_and_stop_at_the_end_of_turn(tmp_path) -> None:
    from transformers import AutoTokenizer

    from stsc.agent.parser import parse_response
    from stsc.agent.policies.hf import response_text
    from stsc.train.students import materialize_student

    folder = materialize_student(StudentConfig(name="tiny", source="tiny"), tmp_path / "students")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    reply = "<think>\n\n</think>\n\nDISCUSSION\nList.\n\n```\nls -la\n```"
    ids = tokenizer(reply + tokenizer.eos_token + "\nstray text", add_special_tokens=False)["input_ids"]
    # the tiny tokenizer counts the markers as special: plain decoding drops them, not their newlines
    assert tokenizer.decode(ids, skip_special_tokens=True).startswith("\n\n\n\nDISCUSSION")
    assert response_text(tokenizer, ids) == reply
    assert parse_response(response_text(tokenizer, ids)).action == "ls -la"


def test_make_policy_rejects_unknown_kinds_and_missing_checkpoints() -> None:
    with pytest.raises(ConfigError, match="llm.*scripted.*submit_baseline.*transformers"):
        make_policy(PolicyConfig(kind="oracle"))
    with pytest.raises(ConfigError, match="model_path"):
        make_policy(PolicyConfig(kind="transformers", name="student"))


def _template_tasks(root: Path) -> list[Path]:
    from stsc.config import GeneratorConfig
    from stsc.synth.generate import GenerationSource
    from stsc.synth.task import write_task
    from stsc.synth.template import TemplateGenerator
    from tests.synth.conftest import TABLES, make_record

    folders = []
    for i, (dataset_id, (load, targets)) in enumerate(TABLES.items()):
        record = make_record(dataset_id, load(), targets, root / "tables", i)
        source = GenerationSource(
            key=dataset_id,
            record=record,
            topic_id=f"t{i}",
            topic_title=dataset_id,
            area="tabular",
            title=dataset_id,
            targets=tuple(targets),
        )
        draft = TemplateGenerator(GeneratorConfig(tasks_per_dataset=1), seed=0).generate(source).drafts[0]
        folders.append(write_task(root / "tasks" / draft.config.id, draft))
    return folders


@pytest.mark.slow
def test_the_scripted_researcher_solves_template_tasks_of_both_types(sandbox_factory, tmp_path) -> None:
    for task_dir in _template_tasks(tmp_path):
        task = load_task(task_dir)
        policy = make_policy(PolicyConfig(kind="scripted", name="scripted"))
        result = asyncio.run(
            run_episode(
                task_dir,
                policy,
                sandbox_factory,
                AgentConfig(),
                tmp_path / task.task_id,
                seed=0,
                label="test",
            )
        )
        assert result.exit_status == "submitted", task.task_id
        assert result.best_score is not None
        expected_type = json.loads((task_dir / "meta.json").read_text())["task_type"]
        assert (
            f"Task type: {expected_type}." in trajectory(tmp_path / task.task_id, task.task_id)[4]["thought"]
        )


def _chat(*turns: tuple[str, str]) -> list[dict[str, str]]:
    """A chat of (assistant response, observation) turns after the system and task messages."""
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "task: accuracy"}]
    for response, observation in turns:
        messages += [{"role": "assistant", "content": response}, {"role": "user", "content": observation}]
    return messages


def _validated(score: float) -> str:
    return (
        f'ok\nBaseline Score: {{"accuracy": 0.5}}\nEvaluation Score: {{"accuracy": {score}}}\n'
        "(Current Step: 9, Remaining Steps: 30)"
    )


def test_the_scripted_researcher_restores_an_earlier_better_model_before_submitting() -> None:
    from stsc.agent.policies.scripted import ScriptedPolicy
    from tests.agent.conftest import command

    run = "rm -f submission.csv && python {}.py"
    messages = _chat(
        (command(run.format("model_a")), "done"),
        (command("validate"), _validated(0.9)),
        (command("create model_b.py", 'Result of model_a: {"accuracy": 0.9}\nTry b.'), "created"),
        (command(run.format("model_b")), "done"),
        (command("validate"), _validated(0.7)),
    )
    policy = ScriptedPolicy(attempts=0)
    reply = asyncio.run(policy.act(messages, seed=0))
    assert parse_response(reply.text).action == run.format("model_a")
    assert 'Result of model_b: {"accuracy": 0.7}' in reply.text
    messages += [{"role": "assistant", "content": reply.text}, {"role": "user", "content": "restored"}]
    assert parse_response(asyncio.run(policy.act(messages, seed=0)).text).action == "submit"


def test_the_scripted_researcher_prefers_lower_errors() -> None:
    from stsc.agent.policies.scripted import _best

    results = {"baseline": '{"rmse": 3.0}', "model_a": '{"rmse": 2.0}', "model_b": "failed"}
    assert _best(results, 'Baseline Score: {"rmse": 3.0}') == "model_a"
    assert _best({"model_b": "failed"}, "") is None
