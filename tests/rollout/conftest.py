"""Fixtures of the rollout tests: a small real task library (template tasks on iris and diabetes),
stage configs whose teacher talks to the loopback OpenAI-compatible server, a scripted agent for
that server, and sandbox factories that fail on purpose."""

from __future__ import annotations

import random
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stsc.config import LLMConfig, PolicyConfig, RolloutConfig, RootConfig, SandboxConfig, SplitConfig
from stsc.errors import SandboxError
from stsc.store import StageContext, StageReport
from tests.agent.conftest import command
from tests.fakes.openai_server import FakeOpenAIServer, Reply

# The agent the responder plays: look around, copy the sample submission, validate it, submit.
SCRIPT = ("ls data", "cp sample_submission.csv submission.csv", "validate", "submit")


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``validate``-shaped folder (``library/<task_id>/``) of four template tasks: two on iris,
    two on diabetes. Split by dataset with ``heldout_fraction=0.5``, two tasks train. Read-only."""
    from stsc.synth.generate import run_generate
    from tests.synth.conftest import TABLES, make_ctx, make_record, root_config, write_verify_output

    root = tmp_path_factory.mktemp("rollout-library")
    records = [
        make_record(d, load(), t, root / "tables", i) for i, (d, (load, t)) in enumerate(TABLES.items())
    ]
    generate = make_ctx(root, "generate", {"verify": write_verify_output(root, records)})
    run_generate(root_config(root), generate)
    validate = root / "validate"
    shutil.copytree(generate.out_dir / "tasks", validate / "library")
    return validate


def agent_turn(messages: list[dict[str, Any]]) -> str:
    """The scripted agent's next response: the step is the number of assistant turns so far."""
    step = sum(1 for m in messages if m.get("role") == "assistant")
    return command(SCRIPT[min(step, len(SCRIPT) - 1)])


def flaky(
    server: FakeOpenAIServer, fraction: float, seed: int = 0, timeout_delay_s: float = 0.0
) -> list[Reply]:
    """Make about ``fraction`` of the server's chat requests fail: 429, 500, 503 or (when
    ``timeout_delay_s`` > 0) an answer slower than the client's timeout. Each answered request
    schedules the failure of the next one with probability fraction / (1 - fraction). Returns the
    list the injected failures are appended to."""
    rng = random.Random(seed)
    lock = threading.Lock()
    odds = fraction / (1.0 - fraction)
    failures = [Reply(status=429), Reply(status=500), Reply(status=503)]
    if timeout_delay_s > 0:
        failures.append(Reply(text=command("ls"), delay_s=timeout_delay_s))

    injected: list[Reply] = []

    def respond(messages: list[dict[str, Any]]) -> str:
        with lock:
            if rng.random() < odds:
                injected.append(rng.choice(failures))
                server.push(injected[-1])
        return agent_turn(messages)

    server.responder = respond
    return injected


def teacher(server: FakeOpenAIServer, **llm: Any) -> PolicyConfig:
    settings: dict[str, Any] = {
        "model": "openai/fake-model", "api_base": server.base_url, "cache": False, "max_retries": 2,
        "backoff_s": 0.01, "timeout_s": 30.0, "input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
    }  # fmt: skip
    settings.update(llm)
    return PolicyConfig(kind="llm", name="fake", llm=LLMConfig(**settings))


def rollout_config(root: Path, server: FakeOpenAIServer | None, **rollout: Any) -> RootConfig:
    """A root config for the rollout stage: local sandbox, loopback teacher, quick retries."""
    cfg = RootConfig(root=str(root), store=str(root / "store"))
    cfg.sandbox = SandboxConfig(backend="local")
    cfg.split = SplitConfig(heldout_fraction=0.5, seed=0)
    if server is not None:
        cfg.teacher = teacher(server)
    settings: dict[str, Any] = {"per_task": 2, "concurrency": 4, "sandbox_concurrency": 4, "infra_backoff_s": 0.0,
                                "progress_interval_s": 0.0}  # fmt: skip
    settings.update(rollout)
    cfg.rollout = RolloutConfig(**settings)
    cfg.agent.max_steps = 6
    return cfg


def stage_context(root: Path, library: Path, key: str = "rollout-key") -> StageContext:
    out = root / "store" / "rollout" / key
    out.mkdir(parents=True, exist_ok=True)
    return StageContext(
        name="rollout", key=key, out_dir=out, inputs={"validate": library}, store=root / "store", seed=0,
        report=StageReport(stage="rollout"),
    )  # fmt: skip


class _KillableSandbox:
    """A real sandbox whose shell closes the sandbox from another thread before command ``at``."""

    def __init__(self, sandbox: Any, at: int):
        self._sandbox = sandbox
        self._at = at
        self._runs = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sandbox, name)

    def shell(self) -> Any:
        shell = self._sandbox.shell()
        outer = self

        class Shell:
            cwd = property(lambda _: shell.cwd)

            def run(self, command: str, timeout: float) -> Any:
                outer._runs += 1
                if outer._runs == outer._at:
                    killer = threading.Thread(target=outer._sandbox.close)
                    killer.start()
                    killer.join()
                return shell.run(command, timeout)

            def close(self) -> None:
                shell.close()

        return Shell()

    def close(self) -> None:
        self._sandbox.close()


class FaultyFactory:
    """Starts real local sandboxes; the ones ``kill(i)`` selects (by start order, from 0) are closed
    from another thread just before their ``at``-th shell command, and starts ``refuse(i)`` selects
    raise ``SandboxError`` as a dead engine would."""

    def __init__(
        self,
        kill: Callable[[int], bool] = lambda i: False,
        refuse: Callable[[int], bool] = lambda i: False,
        at: int = 2,
    ):
        from stsc.sandbox import make_factory

        self.inner = make_factory(SandboxConfig(backend="local"))
        self.kill, self.refuse, self.at = kill, refuse, at
        self.started = 0
        self.killed = 0
        self.roots: list[Path] = []  # host folders of the sandboxes it started
        self._lock = threading.Lock()

    def start(self, workspace: Path, label: str) -> Any:
        with self._lock:
            index = self.started
            self.started += 1
        if self.refuse(index):
            raise SandboxError("the sandbox engine is not answering")
        sandbox = self.inner.start(workspace, label)
        with self._lock:
            self.roots.append(sandbox.layout.root)
        if self.kill(index):
            with self._lock:
                self.killed += 1
            return _KillableSandbox(sandbox, self.at)
        return sandbox
