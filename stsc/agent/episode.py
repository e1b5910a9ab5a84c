"""The episode loop: a policy acts on one task through the agent-computer interface.

``run_episode`` starts a sandbox on the task's workspace, runs one ``Episode`` and writes the run
folder (``stsc.agent.trajectory``). The episode's state is its messages: the full history plus the
executed steps. Each step asks the policy for a response (re-asking with the format-error prompt on
malformed or refused responses), executes the command and saves the trajectory. Limits raise and
are mapped to MLGym exit statuses in one place (``Episode.run``); on every forced exit the
workspace is still scored (auto-submission).

Errors: agent failures become recorded statuses. Infrastructure failures (``SandboxError``, a model
provider failing after its retries) leave a partial run folder without ``stsc.json`` and raise
``EpisodeInfraError`` so the caller can retry. A content-policy refusal (``ContentRefusedError``)
ends the episode with ``exit_api`` and is not retried. ``BudgetExceededError`` (a stage budget is
spent), ``ConfigError``, ``MissingAPIKeyError`` and ``RequestRejectedError`` (the provider rejects
the caller: bad key, unknown model) propagate unchanged, after the trajectory is saved.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stsc.agent.aci import AgentComputerInterface, Observation
from stsc.agent.history import process_history
from stsc.agent.parser import ParsedResponse, parse_response
from stsc.agent.policies import Policy, PolicyReply
from stsc.agent.task import TaskSpec, load_task
from stsc.agent.tools import command_docs
from stsc.agent.trajectory import (
    AGENT,
    RESULT_FILE,
    EpisodeResult,
    ModelStats,
    TrajWriter,
    best_and_last,
    state_string,
    traj_path,
    write_result,
    write_results,
)
from stsc.config import AgentConfig
from stsc.errors import (
    BudgetExceededError,
    ConfigError,
    ContentRefusedError,
    ContextLimitError,
    EpisodeInfraError,
    LLMError,
    MissingAPIKeyError,
    ModelOutputError,
    RequestRejectedError,
    SandboxError,
    StscError,
)
from stsc.prompts import render
from stsc.sandbox.base import SandboxFactory

log = logging.getLogger(__name__)

# A command running longer than this gives its episode's turn back (see ``run_episode``).
QUICK_COMMAND_S = 0.1


class _Worker:
    """Runs one episode's blocking sandbox calls in order on a thread of its own, so long training
    commands of concurrent episodes never wait for a shared thread pool."""

    def __init__(self, name: str):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class _Exit(Exception):
    """A limit ended the episode; ``reason`` is the MLGym exit reason (max_steps, exit_cost, ...)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Episode:
    """One attempt at one task. State: ``history`` (the full chat, MLGym fields), ``trajectory``
    (executed steps), ``stats`` (model usage) and the interface's scores. ``exit_status`` stays
    ``""`` when an unexpected exception escapes (it propagates after the trajectory is saved)."""

    def __init__(
        self,
        task: TaskSpec,
        policy: Policy,
        aci: AgentComputerInterface,
        cfg: AgentConfig,
        *,
        run_dir: Path,
        seed: int,
        worker: _Worker,
        turns: asyncio.Semaphore | None = None,
    ):
        self.task, self.policy, self.aci, self.cfg = task, policy, aci, cfg
        self.run_dir, self.seed, self.io = run_dir, seed, worker
        self.turns = turns
        self._has_turn = False
        self.history: list[dict[str, Any]] = []
        self.trajectory: list[dict[str, Any]] = []
        self.stats = ModelStats()
        self.steps = 0
        self.truncated = 0  # responses rejected after the model hit its output limit
        self.exit_status = ""
        self.infra_error: BaseException | None = None
        self.prompts: dict[str, str] = {}
        self._save_lock = threading.Lock()
        self._final_saved = False
        self._results_written: int | None = None  # scores in the results.json on disk
        self._cost_on_disk = 0.0  # model_stats.total_cost of the .traj on disk
        self._traj = TrajWriter(traj_path(run_dir, task.task_id))

    async def run(self) -> None:
        """Run to submission or a limit. Maps every ending to ``exit_status`` (see module doc)."""
        try:
            await self._start()
            await self._loop()
        except _Exit as e:
            await self._autosubmit(e.reason)
        except ContextLimitError:
            await self._autosubmit("exit_context")
        except BudgetExceededError:
            await self._autosubmit("exit_cost")
            raise
        except (MissingAPIKeyError, RequestRejectedError):
            raise
        except ContentRefusedError as e:  # the provider will not answer this conversation: not infra
            log.warning("%s: the model refused after %d steps: %s", self.task.task_id, self.steps, e)
            await self._autosubmit("exit_api")
        except (LLMError, SandboxError) as e:
            log.warning("%s: infrastructure failure after %d steps: %s", self.task.task_id, self.steps, e)
            self.infra_error = e
            await self._autosubmit("exit_api" if isinstance(e, LLMError) else "exit_error")
        except ConfigError:
            raise
        except StscError as e:
            log.warning("%s: episode error after %d steps: %s", self.task.task_id, self.steps, e)
            await self._autosubmit("exit_error")
        finally:
            self.save()

    def _render(self, role: str, **variables: Any) -> str:
        name = getattr(self.cfg, f"{role}_template")
        prompts_dir = Path(self.cfg.prompts_dir) if self.cfg.prompts_dir else None
        rendered = render(name, prompts_dir=prompts_dir, **variables)
        self.prompts.setdefault(rendered.name, rendered.sha256)
        return rendered.text.rstrip("\n")

    def _footer(self, state: dict[str, str]) -> dict[str, Any]:
        return {
            "current_step": self.steps,
            "remaining_steps": self.cfg.max_steps - self.steps,
            "open_file": state["open_file"],
            "working_dir": state["working_dir"],
        }

    def _message(self, role: str, content: str, **extra: Any) -> None:
        self.history.append({"role": role, "content": content, "agent": AGENT, **extra})

    async def _start(self) -> None:
        state = await self.io(lambda: self.aci.state)
        self._message("system", self._render("system", command_docs=command_docs(), window=self.cfg.window))
        instance = self._render(
            "instance",
            task_description=self.task.description,
            baseline_scores=json.dumps(self.task.baseline_scores),
            submission_file=self.task.submission_file,
            command_timeout=f"{self.cfg.command_timeout_s:g}",
            training_timeout=f"{self.aci.training_timeout_s:g}",
            **self._footer(state),
        )
        self._message("user", instance)
        await self.io(self._snapshot)

    async def _loop(self) -> None:
        try:
            while True:
                if self.steps >= self.cfg.max_steps:
                    raise _Exit("max_steps")
                response, parsed = await self._query()
                observation = await self._execute_step(response, parsed)
                if observation.done:
                    self.exit_status = observation.exit_status or ""
                    return
        finally:
            self._end_turn()

    async def _take_turn(self) -> None:
        """Wait for this episode's turn (see ``run_episode``); it is held until the next model
        call, or until the step's command has run for ``QUICK_COMMAND_S``."""
        if self.turns is not None and not self._has_turn:
            await self.turns.acquire()
            self._has_turn = True

    def _end_turn(self) -> None:
        if self._has_turn:
            self._has_turn = False
            self.turns.release()

    async def _execute_step(self, response: str, parsed: ParsedResponse) -> Observation:
        """Run ``_step`` on the worker. A command still running after ``QUICK_COMMAND_S`` gives
        the episode's turn back and gets the spend of this step's model calls written to the
        .traj: it can run for hours, and a stage killed meanwhile counts what the .traj says was
        spent. (A quick command's step writes it with the step, once.)"""
        spend_write: asyncio.Future[None] | None = None

        def long_command() -> None:
            nonlocal spend_write
            self._end_turn()
            if self.stats.total_cost != self._cost_on_disk:
                spend_write = asyncio.ensure_future(asyncio.to_thread(self._snapshot))

        timer = asyncio.get_running_loop().call_later(QUICK_COMMAND_S, long_command)
        try:
            return await self.io(self._step, response, parsed)
        finally:
            timer.cancel()
            if spend_write is not None:
                await spend_write

    def _step(self, response: str, parsed: ParsedResponse) -> Observation:
        """Execute the action, record the step and rewrite the snapshot: one trip to the worker."""
        started = time.monotonic()
        observation = self.aci.execute(parsed.action)
        state = self.aci.state
        with self._save_lock:
            if self._final_saved:  # the episode ended (cancelled) while the command ran
                return observation
            self.steps += 1
            self._record(response, parsed, observation, state, time.monotonic() - started)
            self._write(final=False)
        return observation

    async def _query(self) -> tuple[str, ParsedResponse]:
        """The next accepted response; raises ``_Exit("exit_format")`` after too many bad ones."""
        messages = process_history(self.history, self.cfg.history)
        retry: list[dict[str, str]] = []
        for _ in range(max(1, self.cfg.max_format_retries)):
            reply = await self._call(messages + retry)
            try:
                parsed = parse_response(reply.text)
                refusal = self.aci.refusal(parsed.action)
                if refusal:
                    raise ModelOutputError(refusal)
                return reply.text, parsed
            except ModelOutputError as e:
                log.debug("%s: rejected response: %s", self.task.task_id, e)
                error = str(e)
                if reply.truncated:  # the usual reason a command block is missing or unclosed
                    self.truncated += 1
                    error += (
                        f" Your response was cut off at the output limit ({reply.completion_tokens} "
                        "tokens) before it ended: write a shorter DISCUSSION and one command."
                    )
                retry = [
                    {"role": "assistant", "content": reply.text},
                    {"role": "user", "content": self._render("format_error", error=error)},
                ]
        raise _Exit("exit_format")

    async def _call(self, messages: list[dict[str, str]]) -> PolicyReply:
        self._end_turn()
        try:
            reply = await self.policy.act(messages, seed=self.seed)
        except LLMError as e:
            if e.cost_usd:  # billed attempts that never answered
                self.stats.add(0, 0, e.cost_usd)
            raise
        await self._take_turn()
        self.stats.add(reply.prompt_tokens, reply.completion_tokens, reply.cost_usd)
        if 0 < self.cfg.cost_limit_usd < self.stats.task_cost:
            raise _Exit("exit_cost")
        if reply.prompt_tokens + reply.completion_tokens > self.cfg.context_limit_tokens:
            raise _Exit("exit_context")
        return reply

    def _record(
        self,
        response: str,
        parsed: ParsedResponse,
        observation: Observation,
        state: dict[str, str],
        elapsed: float,
    ) -> None:
        self.trajectory.append(
            {
                "action": parsed.action,
                "observation": observation.text,
                "response": response,
                "state": state_string(state),
                "thought": parsed.thought,
                "execution_time": round(elapsed, 3),
            }
        )
        self._message("assistant", response, thought=parsed.thought, action=parsed.action)
        self._message(
            "user",
            self._render("next_step", observation=observation.text.rstrip("\n"), **self._footer(state)),
        )

    async def _autosubmit(self, reason: str) -> None:
        try:
            self.exit_status = await self.io(self.aci.autosubmit, reason)
        except SandboxError as e:
            log.warning("%s: auto-submission (%s) failed: %s", self.task.task_id, reason, e)
            self.infra_error = self.infra_error or e
            self.exit_status = ""

    def info(self) -> dict[str, Any]:
        return {
            "model_stats": vars(self.stats).copy(),
            "exit_status": self.exit_status,
            "submission": self.aci.submission,
            "score": list(self.aci.scores),
        }

    def save(self) -> None:
        """Write the final .traj and results.json, atomically and durably (stsc.json follows).
        A step still running on the worker records nothing after this."""
        with self._save_lock:
            self._final_saved = True
            self._write(final=True)

    def _snapshot(self) -> None:
        with self._save_lock:
            if not self._final_saved:
                self._write(final=False)

    def _write(self, final: bool) -> None:
        """Per-step snapshots rewrite the .traj in place (``TrajWriter``) and results.json only
        when a score was added: creating files is what costs on a busy filesystem, and nothing
        reads them before the final, atomic version."""
        write = self._traj.final if final else self._traj.snapshot
        write(self.trajectory, self.history, self.info())
        self._cost_on_disk = self.stats.total_cost
        scores = list(self.aci.scores)
        if final or len(scores) != self._results_written:
            write_results(self.run_dir, scores, self.task.baseline_scores, final)
            self._results_written = len(scores)


async def run_episode(
    task_dir: Path,
    policy: Policy,
    sandbox_factory: SandboxFactory,
    agent_cfg: AgentConfig,
    run_dir: Path,
    *,
    seed: int,
    label: str,
    config_key: str = "",
    turns: asyncio.Semaphore | None = None,
) -> EpisodeResult:
    """Run ``policy`` on the task in ``task_dir`` and write the run folder ``run_dir``.

    ``turns``, shared by concurrent episodes, bounds how many of them work on the host at once:
    from a model reply to the next model call (parsing, a quick command, the step's record and
    snapshot, the next prompt); a command still running after ``QUICK_COMMAND_S`` gives the turn
    back. The others wait in order, so a burst of replies is worked through one episode after
    another instead of every episode slowly at once (one event loop, one GIL, a few cores): the
    first replies go back to the model early instead of all of them late.

    A run folder that already holds ``stsc.json`` is finished: its result is returned without
    running anything. Raises ``TaskFormatError`` for a malformed task, ``EpisodeInfraError`` when
    the sandbox or the model provider failed (retry the episode), and lets ``BudgetExceededError``,
    ``MissingAPIKeyError`` and ``ConfigError`` through. The sandbox is always closed.
    """
    run_dir = Path(run_dir)
    if (run_dir / RESULT_FILE).exists():
        return EpisodeResult.read(run_dir)
    task = load_task(task_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    worker = _Worker(f"episode-{task.task_id}")
    try:
        sandbox = await worker(sandbox_factory.start, task.workspace_dir, label)
    except SandboxError as e:
        worker.close()
        raise EpisodeInfraError(f"{task.task_id}: the sandbox did not start: {e}", str(run_dir)) from e
    except BaseException:  # cancelled while starting: the start finishes on the worker's thread
        worker.close()
        raise
    try:
        aci = await worker(AgentComputerInterface, sandbox, task, agent_cfg)
        episode = Episode(
            task, policy, aci, agent_cfg, run_dir=run_dir, seed=seed, worker=worker, turns=turns
        )
        await episode.run()
        await worker(aci.close)
    except SandboxError as e:
        raise EpisodeInfraError(f"{task.task_id}: sandbox failure: {e}", str(run_dir)) from e
    finally:
        # Not on the worker: after a cancellation it may still be running the agent's command,
        # which closing the sandbox kills.
        await asyncio.to_thread(sandbox.close)
        worker.close()
    if episode.infra_error is not None:
        raise EpisodeInfraError(
            f"{task.task_id}: infrastructure failure after {episode.steps} steps: {episode.infra_error}",
            str(run_dir),
        ) from episode.infra_error
    result = _result(episode, policy, agent_cfg, run_dir, seed=seed, label=label, config_key=config_key)
    write_result(run_dir, result)
    if episode.truncated:
        log.warning(
            "%s: %d response(s) were cut at %s's output limit and rejected; raise it "
            "(llm.max_tokens, eval.student_max_tokens)", task.task_id, episode.truncated, policy.name,
        )  # fmt: skip
    log.info(
        "%s: %s after %d steps, best %s", task.task_id, result.exit_status, result.steps, result.best_score
    )
    return result


def _result(episode: Episode, policy: Policy, cfg: AgentConfig, run_dir: Path, **ids: Any) -> EpisodeResult:
    task, scores = episode.task, list(episode.aci.scores)
    best, last = best_and_last(task, scores)
    return EpisodeResult(
        task_id=task.task_id,
        policy=policy.name,
        agent=cfg.name,
        exit_status=episode.exit_status,
        steps=episode.steps,
        prompt_tokens=episode.stats.tokens_sent,
        completion_tokens=episode.stats.tokens_received,
        cost_usd=episode.stats.task_cost,
        api_calls=episode.stats.api_calls,
        metric=task.metric,
        higher_is_better=task.higher_is_better,
        scores=scores,
        best_score=best,
        last_score=last,
        baseline_score=task.metric_value(task.baseline_scores),
        run_dir=str(run_dir),
        prompts=dict(episode.prompts),
        **ids,
    )
