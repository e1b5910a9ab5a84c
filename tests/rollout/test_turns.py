"""``rollout.step_turns``: how many episodes work on the host at once between two model calls.

A burst of replies is worked through a few episodes at a time, in order, instead of every episode
slowly at once; a command still running after ``QUICK_COMMAND_S`` hands its turn back so a long
(training) command never holds up the other episodes."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from stsc.agent.episode import QUICK_COMMAND_S
from stsc.config import SandboxConfig
from stsc.rollout import run_rollout
from tests.agent.conftest import command
from tests.rollout.conftest import rollout_config, stage_context


class CountingFactory:
    """Starts real local sandboxes and records how many agent shell commands run at once."""

    def __init__(self) -> None:
        from stsc.sandbox import make_factory

        self.inner = make_factory(SandboxConfig(backend="local"))
        self.running = 0
        self.most = 0
        self.commands = 0
        self._lock = threading.Lock()

    def start(self, workspace: Path, label: str) -> Any:
        return _CountingSandbox(self.inner.start(workspace, label), self)

    def enter(self) -> None:
        with self._lock:
            self.running += 1
            self.commands += 1
            self.most = max(self.most, self.running)

    def leave(self) -> None:
        with self._lock:
            self.running -= 1


class _CountingSandbox:
    def __init__(self, sandbox: Any, counter: CountingFactory):
        self._sandbox, self._counter = sandbox, counter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sandbox, name)

    def shell(self) -> Any:
        shell, counter = self._sandbox.shell(), self._counter

        class Shell:
            cwd = property(lambda _: shell.cwd)

            def run(self, command: str, timeout: float) -> Any:
                counter.enter()
                try:
                    return shell.run(command, timeout)
                finally:
                    counter.leave()

            def close(self) -> None:
                shell.close()

        return Shell()

    def close(self) -> None:
        self._sandbox.close()


def _agent(sleep_s: float, steps: int):
    """Copy the sample submission and sleep, ``steps`` times; then submit."""

    def respond(messages: list[dict[str, Any]]) -> str:
        step = sum(1 for m in messages if m.get("role") == "assistant")
        return command(
            f"cp sample_submission.csv submission.csv && sleep {sleep_s}" if step < steps else "submit"
        )

    return respond


def _collect(library: Path, server, tmp_path: Path, sleep_s: float, turns: int) -> CountingFactory:
    server.responder = _agent(sleep_s, steps=3)
    cfg = rollout_config(tmp_path, server, per_task=2, concurrency=4, sandbox_concurrency=4, step_turns=turns)
    factory = CountingFactory()
    ctx = stage_context(tmp_path, library)
    run_rollout(cfg, ctx, sandbox_factory=factory)
    rows = ctx.tables["episodes"]
    assert len(rows) == 4 and all(r["exit_status"] == "submitted" and r["steps"] == 4 for r in rows), rows
    assert factory.commands == 12
    return factory


def test_one_turn_runs_the_quick_commands_of_concurrent_episodes_one_at_a_time(
    library: Path, openai_server, tmp_path: Path
) -> None:
    # Four episodes get their replies together; with one turn their commands never overlap.
    one = _collect(library, openai_server, tmp_path / "one", 0.05, turns=1)
    assert one.most == 1
    # The same collection with a turn each: the commands of different episodes do overlap.
    four = _collect(library, openai_server, tmp_path / "four", 0.05, turns=4)
    assert four.most > 1


def test_a_long_command_gives_its_turn_back(library: Path, openai_server, tmp_path: Path) -> None:
    long = 4 * QUICK_COMMAND_S
    started = time.monotonic()
    factory = _collect(library, openai_server, tmp_path, long, turns=1)
    # Each episode's command outlives its turn, so the next episode starts its own meanwhile:
    # the 12 commands are not run one after another.
    assert factory.most > 1
    assert time.monotonic() - started < 12 * long
