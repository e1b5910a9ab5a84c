"""The episode loop driven through the real litellm client against the loopback OpenAI server:
run-folder files, format errors, the block list, every forced exit and infrastructure failures."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from stsc.agent import run_episode
from stsc.agent.policies import PolicyReply
from stsc.agent.task import load_task
from stsc.config import AgentConfig, HistoryConfig
from stsc.errors import (
    BudgetExceededError,
    EpisodeInfraError,
    MissingAPIKeyError,
    ModelOutputError,
    RequestRejectedError,
    SandboxError,
)
from tests.agent.conftest import TASK_ID, command
from tests.fakes.openai_server import Reply, context_length_error, count_words

BAD = "I think I should look at the files first."


def episode(task: Path, policy, factory, run_dir: Path, seed: int = 0, **cfg: object):
    return asyncio.run(
        run_episode(task, policy, factory, AgentConfig(**cfg), run_dir, seed=seed, label="test")
    )


def read_traj(run_dir: Path) -> dict:
    return json.loads((run_dir / f"{TASK_ID}.traj").read_text())


def test_a_submitted_episode_writes_the_mlgym_run_folder(
    toy_task, sandbox_factory, llm_policy, openai_server, tmp_path
) -> None:
    replies = [
        "<think>Start by looking around.</think>\nDISCUSSION\nList the workspace.\n\n```\nls\n```",
        BAD,
        "The baseline comes first.</think>\nDISCUSSION\nRun it.\n```\npython baseline.py\n```",
        command("validate"),
        command("submit"),
    ]
    openai_server.push(*replies)
    policy = llm_policy(input_cost_per_token=0.001, output_cost_per_token=0.002)
    result = episode(toy_task, policy, sandbox_factory, tmp_path / "run", max_steps=10)
    baseline = load_task(toy_task).baseline_scores

    assert result.exit_status == "submitted" and result.steps == 4
    assert result.scores == [baseline, baseline]
    assert result.best_score == result.last_score == result.baseline_score == baseline["accuracy"]
    requests = openai_server.chat_requests
    assert len(requests) == 5
    sent = sum(sum(count_words(m["content"]) for m in r.messages) for r in requests)
    received = sum(count_words(t) for t in replies)
    traj = read_traj(tmp_path / "run")
    assert set(traj) == {"environment", "trajectory", "history", "info"}
    stats = traj["info"]["model_stats"]
    assert set(stats) == {"total_cost", "task_cost", "tokens_sent", "tokens_received", "api_calls"}
    assert stats["api_calls"] == 5 and stats["tokens_sent"] == sent == result.prompt_tokens
    assert stats["tokens_received"] == received == result.completion_tokens
    assert stats["task_cost"] == pytest.approx(0.001 * sent + 0.002 * received)
    assert stats["total_cost"] == stats["task_cost"] == pytest.approx(result.cost_usd)
    assert traj["info"]["exit_status"] == "submitted"
    assert traj["info"]["score"] == [baseline, baseline]
    assert traj["info"]["submission"].endswith("/submission.csv")

    steps = traj["trajectory"]
    assert [s["action"] for s in steps] == ["ls", "python baseline.py", "validate", "submit"]
    for step in steps:
        assert set(step) == {"action", "observation", "response", "state", "thought", "execution_time"}
        assert set(json.loads(step["state"])) == {"open_file", "working_dir"}
    assert steps[0]["thought"].startswith("Start by looking around.")  # litellm's reasoning_content, kept
    assert steps[0]["thought"].endswith("DISCUSSION\nList the workspace.")
    assert all("<think>" not in s["thought"] and "</think>" not in s["thought"] for s in steps)
    assert steps[1]["thought"] == "The baseline comes first.\n\nDISCUSSION\nRun it."
    assert steps[1]["response"] == replies[2]
    assert "baseline.py" in steps[0]["observation"]

    history = traj["history"]
    assert [m["role"] for m in history] == ["system", "user"] + ["assistant", "user"] * 4
    assert all(m["agent"] == "primary" for m in history)
    assert all(BAD not in m["content"] for m in history)
    assistants = [m for m in history if m["role"] == "assistant"]
    assert [m["action"] for m in assistants] == [s["action"] for s in steps]
    assert assistants[0]["thought"] == steps[0]["thought"]
    workdir = json.loads(steps[-1]["state"])["working_dir"]
    assert history[-1]["content"] == (
        f"{steps[-1]['observation']}\n(Current Step: 4, Remaining Steps: 6)\n(Open file: n/a)\n"
        f"(Current directory: {workdir})\nbash-$"
    )
    assert history[1]["content"].endswith(
        f"(Current Step: 0, Remaining Steps: 10)\n(Open file: n/a)\n(Current directory: {workdir})\nbash-$"
    )
    assert "SUBMISSION FORMAT:" in history[1]["content"] and "TOY:\nx1, x2" in history[1]["content"]

    retry = requests[2].messages
    assert retry[-2] == {"role": "assistant", "content": BAD}
    assert "no command block" in retry[-1]["content"]
    assert all(BAD not in m["content"] for m in requests[3].messages)

    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results == {"agent": [baseline, baseline], "baseline": baseline}
    meta = json.loads((tmp_path / "run" / "stsc.json").read_text())
    assert meta["task_id"] == TASK_ID and meta["policy"] == "fake" and meta["exit_status"] == "submitted"
    assert meta["tokens"] == sent + received and meta["cost_usd"] == pytest.approx(stats["task_cost"])
    assert meta["best_score"] == meta["last_score"] == baseline["accuracy"]
    assert (
        meta["seed"] == 0
        and meta["steps"] == 4
        and set(meta["prompts"]) >= {"agent_system", "agent_instance"}
    )


def test_a_finished_run_folder_is_not_run_again(
    toy_task, sandbox_factory, llm_policy, openai_server, tmp_path
) -> None:
    openai_server.push(command("python baseline.py"), command("submit"))
    first = episode(toy_task, llm_policy(), sandbox_factory, tmp_path / "run")
    again = episode(toy_task, llm_policy(), sandbox_factory, tmp_path / "run")
    assert again == first
    assert len(openai_server.chat_requests) == 2


def test_repeated_format_errors_end_with_exit_format_and_score_the_workspace(
    toy_task, sandbox_factory, llm_policy, openai_server, tmp_path
) -> None:
    openai_server.push(command("python baseline.py"), BAD, f"{command('ls')}\n{command('pwd')}", BAD)
    result = episode(toy_task, llm_policy(), sandbox_factory, tmp_path / "run", max_format_retries=3)
    assert result.exit_status == "autosubmission (exit_format)"
    assert result.steps == 1 and len(result.scores) == 1
    assert "2 command blocks" in openai_server.chat_requests[3].messages[-1]["content"]
    assert read_traj(tmp_path / "run")["info"]["exit_status"] == "autosubmission (exit_format)"

    openai_server.push(BAD, BAD, BAD)
    empty = episode(toy_task, llm_policy(), sandbox_factory, tmp_path / "empty")
    assert empty.exit_status == "submission_not_found (exit_format)" and empty.scores == []
    assert json.loads((tmp_path / "empty" / "results.json").read_text())["agent"] == []


def test_interactive_commands_are_refused_and_re_asked(
    toy_task, sandbox_factory, llm_policy, openai_server, tmp_path
) -> None:
    openai_server.push(
        command("vim baseline.py"), command("python"), command("python baseline.py"), command("submit")
    )
    result = episode(toy_task, llm_policy(), sandbox_factory, tmp_path / "run")
    assert result.exit_status == "submitted" and result.steps == 2
    requests = openai_server.chat_requests
    assert "`vim` is not supported" in requests[1].messages[-1]["content"]
    assert "`python` is not supported" in requests[2].messages[-1]["content"]
    assert [s["action"] for s in read_traj(tmp_path / "run")["trajectory"]] == [
        "python baseline.py",
        "submit",
    ]


def test_the_step_limit_auto_submits(toy_task, sandbox_factory, llm_policy, openai_server, tmp_path) -> None:
    openai_server.push(command("python baseline.py"), command("ls"), command("never sent"))
    result = episode(toy_task, llm_policy(), sandbox_factory, tmp_path / "run", max_steps=2)
    assert result.exit_status == "autosubmission (max_steps)" and result.steps == 2
    assert len(result.scores) == 1 and openai_server.pending == 1
    last = read_traj(tmp_path / "run")["history"][-1]["content"]
    assert "(Current Step: 2, Remaining Steps: 0)" in last


def test_the_cost_limit_ends_the_episode(
    toy_task, sandbox_factory, llm_policy, openai_server, tmp_path
) -> None:
    openai_server.push(
        Reply(command("python baseline.py"), prompt_tokens=100, completion_tokens=10),
        Reply(command("ls"), prompt_tokens=100, completion_tokens=10),
    )
    policy = llm_policy(input_cost_per_token=0.001, output_cost_per_token=0.001)
    result = episode(toy_task, policy, sandbox_factory, tmp_path / "run", cost_limit_usd=0.2)
    assert result.exit_status == "autosubmission (exit_cost)" and result.steps == 1
    assert result.cost_usd == pytest.approx(0.22)


def test_the_context_limit_ends_the_episode(
    toy_task, sandbox_factory, llm_policy, openai_server, tmp_path
) -> None:
    openai_server.push(command("python baseline.py"), Reply(command("ls"), prompt_tokens=5000))
    result = episode(toy_task, llm_policy(), sandbox_factory, tmp_path / "run", context_limit_tokens=4000)
    assert result.exit_status == "autosubmission (exit_context)" and result.steps == 1

    openai_server.push(context_length_error(4096))
    overflow = episode(toy_task, llm_policy(), sandbox_factory, tmp_path / "overflow")
    assert overflow.exit_status == "submission_not_found (exit_context)"


def test_a_spent_stage_budget_propagates_after_saving(
    toy_task, sandbox_factory, llm_policy, openai_server, tmp_path
) -> None:
    openai_server.push(Reply(command("python baseline.py"), prompt_tokens=100, completion_tokens=0))
    policy = llm_policy(budget_usd=0.05, input_cost_per_token=0.001, output_cost_per_token=0.0)
    with pytest.raises(BudgetExceededError):
        episode(toy_task, policy, sandbox_factory, tmp_path / "run")
    assert read_traj(tmp_path / "run")["info"]["exit_status"] == "autosubmission (exit_cost)"
    assert not (tmp_path / "run" / "stsc.json").exists()


def test_a_provider_failure_is_an_infrastructure_error_and_the_episode_can_rerun(
    toy_task, sandbox_factory, llm_policy, openai_server, tmp_path
) -> None:
    openai_server.push(command("python baseline.py"), Reply(status=500))
    with pytest.raises(EpisodeInfraError) as err:
        episode(toy_task, llm_policy(), sandbox_factory, tmp_path / "run")
    assert err.value.run_dir == str(tmp_path / "run")
    assert read_traj(tmp_path / "run")["info"]["exit_status"] == "autosubmission (exit_api)"
    assert not (tmp_path / "run" / "stsc.json").exists()
    openai_server.push(command("python baseline.py"), command("submit"))
    assert episode(toy_task, llm_policy(), sandbox_factory, tmp_path / "run").exit_status == "submitted"


def test_a_rejected_request_stops_without_retry_and_a_refusal_ends_the_episode(
    toy_task, sandbox_factory, llm_policy, openai_server, tmp_path
) -> None:
    openai_server.push(command("python baseline.py"), Reply(status=401))
    with pytest.raises(RequestRejectedError, match="AuthenticationError"):  # not EpisodeInfraError
        episode(toy_task, llm_policy(), sandbox_factory, tmp_path / "rejected")
    assert read_traj(tmp_path / "rejected")["info"]["exit_status"] == ""
    refusal = {"error": {"message": "Your request was rejected as a result of our safety system.",
                         "type": "invalid_request_error", "code": "content_policy_violation"}}  # fmt: skip
    openai_server.push(command("python baseline.py"), Reply(status=400, body=refusal))
    result = episode(toy_task, llm_policy(), sandbox_factory, tmp_path / "refused")  # finished, not retried
    assert result.exit_status == "autosubmission (exit_api)" and result.steps == 1
    assert (tmp_path / "refused" / "stsc.json").exists()


def test_a_response_cut_at_the_output_limit_is_named_as_such(
    toy_task, sandbox_factory, llm_policy, openai_server, tmp_path
) -> None:
    cut = "DISCUSSION\nI will edit the model.\n\n```\nedit 1:3\nimport pandas"  # no end, no fence
    openai_server.push(Reply(cut, completion_tokens=256, finish_reason="length"), command("submit"))
    episode(toy_task, llm_policy(), sandbox_factory, tmp_path / "run")
    retry = openai_server.chat_requests[1].messages[-1]["content"]
    assert "cut off at the output limit (256 tokens)" in retry


def test_the_history_processor_shapes_what_the_model_sees(
    toy_task, sandbox_factory, llm_policy, openai_server, tmp_path
) -> None:
    openai_server.push(command("echo one"), command("echo two"), command("echo three"), command("submit"))
    episode(toy_task, llm_policy(), sandbox_factory, tmp_path / "run", history=HistoryConfig(n=1))
    seen = [m["content"] for m in openai_server.chat_requests[3].messages if m["role"] == "user"]
    assert seen[0].startswith("We are now going to work on")
    assert seen[1:3] == ["Old output omitted (5 lines)", "Old output omitted (5 lines)"]
    assert seen[3].startswith("three\n(Current Step: 3")
    full = read_traj(tmp_path / "run")["history"]
    assert full[3]["content"].startswith("one\n(Current Step: 1")


class _GarbagePolicy:
    name = "garbage"

    async def act(self, messages, *, seed):
        raise ModelOutputError("the model produced bytes that are not text")


class _WatchingPolicy:
    """Runs a few commands, validates, submits; before each answer it reads the run folder."""

    name = "watching"

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.trajs: list[dict] = []
        self.results: list[dict] = []

    async def act(self, messages, *, seed):
        self.trajs.append(read_traj(self.run_dir))
        self.results.append(json.loads((self.run_dir / "results.json").read_text()))
        plan = ["echo one", "python baseline.py", "validate", "echo three", "submit"]
        return PolicyReply(command(plan[len(self.trajs) - 1]), 1, 1, 0.0)


class _SpendProbe:
    """Local sandboxes whose shell reads the run folder's spend (``.traj`` model_stats) before
    running each command."""

    def __init__(self, inner, run_dir: Path, wait_s: dict[str, float]):
        self.inner, self.run_dir, self.wait_s = inner, run_dir, wait_s
        self.spend_seen: list[float] = []

    def start(self, workspace: Path, label: str):
        sandbox = self.inner.start(workspace, label)
        open_shell = sandbox.shell

        def shell():
            session = open_shell()
            run = session.run

            def probed(command: str, timeout: float):
                time.sleep(self.wait_s.get(command, 0.0))  # as long into the command
                self.spend_seen.append(read_traj(self.run_dir)["info"]["model_stats"]["total_cost"])
                return run(command, timeout)

            session.run = probed
            return session

        sandbox.shell = shell
        return sandbox


class _PricedPolicy:
    name = "priced"

    def __init__(self):
        self.calls = 0

    async def act(self, messages, *, seed):
        self.calls += 1
        plan = ["python baseline.py", "echo two", "submit"]
        return PolicyReply(command(plan[self.calls - 1]), 10, 10, 0.25)


def test_a_long_commands_step_has_its_spend_on_disk_while_it_runs(
    toy_task, sandbox_factory, tmp_path
) -> None:
    from stsc.agent.episode import QUICK_COMMAND_S

    probe = _SpendProbe(sandbox_factory, tmp_path / "run", wait_s={"echo two": 5 * QUICK_COMMAND_S})
    result = episode(toy_task, _PricedPolicy(), probe, tmp_path / "run")
    assert result.exit_status == "submitted"
    # A command's step is written once, with the step (its spend was not on disk as it started);
    # a long one's spend is on disk while it runs: a stage killed meanwhile restores it
    # into its budget ledger.
    assert probe.spend_seen[:2] == [0.0, 0.5]


def test_the_traj_on_disk_follows_every_step(toy_task, sandbox_factory, tmp_path) -> None:
    policy = _WatchingPolicy(tmp_path / "run")
    result = episode(toy_task, policy, sandbox_factory, tmp_path / "run")
    final = read_traj(tmp_path / "run")

    assert result.exit_status == "submitted" and len(final["trajectory"]) == 5
    for k, snapshot in enumerate(policy.trajs):  # what step k+1 found: the episode after k steps
        assert set(snapshot) == set(final) and snapshot["environment"] == final["environment"]
        assert snapshot["trajectory"] == final["trajectory"][:k]
        assert snapshot["history"] == final["history"][: 2 + 2 * k]
        assert snapshot["info"]["model_stats"]["api_calls"] == k
        assert snapshot["info"]["score"] == final["info"]["score"][: 1 if k > 2 else 0]
    assert [len(r["agent"]) for r in policy.results] == [0, 0, 0, 1, 1]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["agent"] == final["info"]["score"]


def test_an_agent_side_error_is_recorded_as_exit_error(toy_task, sandbox_factory, tmp_path) -> None:
    result = episode(toy_task, _GarbagePolicy(), sandbox_factory, tmp_path / "run")
    assert result.exit_status == "submission_not_found (exit_error)"
    assert (tmp_path / "run" / "stsc.json").exists()


class _FailingFactory:
    def start(self, workspace, label):
        raise SandboxError("the container engine is not running")


class _DyingFactory:
    """Sandboxes whose shell dies after ``lives`` commands."""

    def __init__(self, inner, lives: int):
        self.inner, self.lives = inner, lives

    def start(self, workspace, label):
        sandbox = self.inner.start(workspace, label)
        shell, factory = sandbox.shell(), self

        class _Shell:
            cwd = property(lambda s: shell.cwd)

            def run(self, cmd, timeout):
                factory.lives -= 1
                if factory.lives < 0:
                    raise SandboxError("container died")
                return shell.run(cmd, timeout)

            def close(self):
                shell.close()

        sandbox.shell = lambda: _Shell()
        return sandbox


def test_sandbox_failures_are_infrastructure_errors(
    toy_task, sandbox_factory, llm_policy, openai_server, tmp_path
) -> None:
    with pytest.raises(EpisodeInfraError, match="did not start"):
        episode(toy_task, llm_policy(), _FailingFactory(), tmp_path / "never")
    openai_server.push(command("python baseline.py"), command("ls"))
    with pytest.raises(EpisodeInfraError, match="container died"):
        episode(toy_task, llm_policy(), _DyingFactory(sandbox_factory, lives=1), tmp_path / "run")
    traj = read_traj(tmp_path / "run")
    assert traj["info"]["exit_status"] == "autosubmission (exit_error)"
    assert len(traj["trajectory"]) == 1 and not (tmp_path / "run" / "stsc.json").exists()


def test_every_special_command_works_through_the_model_loop(
    toy_task, sandbox_factory, llm_policy, openai_server, tmp_path
) -> None:
    actions = [
        "create notes.py",
        "edit 1:1\ndef f():\n    return 1\nend_of_edit",
        "insert 2\n\n\ndef g():\n    return f()\nend_of_insert",
        "edit 2:2\n    return missing_name\nend_of_edit",
        'open "baseline.py" 3',
        "goto 1",
        "scroll_down",
        "scroll_up",
        "search_dir writer",
        "search_file csv",
        'find_file "*.py"',
        "python baseline.py",
        "validate",
        "submit",
    ]
    openai_server.push(*(command(a) for a in actions))
    result = episode(toy_task, llm_policy(), sandbox_factory, tmp_path / "run", window=5)
    assert result.exit_status == "submitted" and result.steps == len(actions)
    steps = read_traj(tmp_path / "run")["trajectory"]
    seen = {s["action"]: s["observation"] for s in steps}
    assert seen["create notes.py"].endswith("(1 lines total)]\n1:")
    assert "File updated" in seen[actions[1]]
    assert "5:def g():" in seen[actions[2]] and "(1 more lines below)" in seen[actions[2]]
    assert "NOT applied" in seen[actions[3]] and "F821 undefined name 'missing_name'" in seen[actions[3]]
    assert (
        "1:import csv" not in seen['open "baseline.py" 3'] and "3:import csv" in seen['open "baseline.py" 3']
    )
    assert "1:" in seen["goto 1"] and "(6 more lines below)" in seen["goto 1"]
    assert "(5 more lines above)" in seen["scroll_down"] and "6:" in seen["scroll_down"]
    assert seen["scroll_up"].splitlines()[1].startswith("1:")
    assert "baseline.py (3 matches)" in seen["search_dir writer"]
    assert 'matches for "csv"' in seen["search_file csv"]
    assert "notes.py" in seen['find_file "*.py"'] and "evaluate.py" in seen['find_file "*.py"']
    assert "Evaluation Score:" in seen["validate"]
    assert seen["submit"].startswith("Submission scored:")
    opened = [json.loads(s["state"])["open_file"] for s in steps]
    assert opened[0].endswith("/notes.py") and opened[4].endswith("/baseline.py")


def test_a_missing_api_key_propagates_without_finishing_the_run(
    toy_task, sandbox_factory, llm_policy, openai_server, tmp_path, monkeypatch
) -> None:
    monkeypatch.delenv("STSC_TEST_UNSET_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="STSC_TEST_UNSET_KEY"):
        episode(toy_task, llm_policy(api_key_env="STSC_TEST_UNSET_KEY"), sandbox_factory, tmp_path / "run")
    assert not (tmp_path / "run" / "stsc.json").exists() and openai_server.chat_requests == []
