"""The asynchronous engine of the rollout stage: many episodes at once, retried, within budgets.

``Collector.run(plans)`` runs every planned episode and returns one ``EpisodeOutcome`` each:

- ``concurrency`` workers take episodes in plan order; an attempt holds one of
  ``sandbox_concurrency`` sandbox slots from start to end (model-call concurrency is the policy's
  client's own limit); ``step_turns`` of them (default: two per CPU core) work on the host at
  once between two model calls, the rest wait in order (``run_episode``'s ``turns``);
- an infrastructure failure (``EpisodeInfraError``: the sandbox died, the provider kept failing)
  moves the partial run folder to ``failed_attempts/`` and retries the episode after a backoff, up
  to ``max_infra_retries`` times, then records ``infra_failed_after_retries``;
- a spent budget stops new episodes (``budget_exhausted``) and, through ``BudgetedPolicy``, the
  model calls of running ones, whose partial folders are moved aside the same way;
- what the agent does wrong is never retried: it is the exit status in the finished run folder;
- ``MissingAPIKeyError``, ``ConfigError`` and anything unknown stop the whole collection (the
  other episodes are cancelled) and are re-raised; finished run folders stay.

Every sandbox a factory started is closed when ``run`` returns or raises, whatever happened to the
episode that owned it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import threading
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from stsc.agent import EpisodeResult, run_episode
from stsc.agent.policies import Policy, PolicyReply
from stsc.config import AgentConfig, RolloutConfig
from stsc.errors import BudgetExceededError, EpisodeInfraError, SandboxError, TaskFormatError
from stsc.rollout.budget import BudgetedPolicy, SpendLedger
from stsc.rollout.folders import RolloutFolders
from stsc.rollout.plan import EpisodePlan
from stsc.rollout.progress import RolloutProgress
from stsc.sandbox.base import Sandbox, SandboxFactory

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0


class Outcome(enum.StrEnum):
    """How a planned episode ended. Everything but ``FINISHED`` is a drop reason of the funnel."""

    FINISHED = "finished"  # stsc.json written; the agent's exit status says how it went
    INFRA_FAILED = "infra_failed_after_retries"
    BUDGET_EXHAUSTED = "budget_exhausted"
    TASK_ERROR = "task_format_error"


@dataclass(frozen=True)
class EpisodeOutcome:
    plan: EpisodePlan
    outcome: Outcome
    result: EpisodeResult | None = None
    attempts: int = 0  # attempts started by this run of the stage
    error: str = ""


class TrackedFactory:
    """A ``SandboxFactory`` that remembers the sandboxes it started, so ``close_all`` can close any
    an interrupted episode left open (``close`` is idempotent).

    A start still running on an episode's thread when ``close_all`` is called (the episode was
    cancelled while it waited) is waited for, up to ``start_grace_s``; a sandbox that comes up after
    ``close_all`` is closed at once and its start raises ``SandboxError``."""

    def __init__(self, factory: SandboxFactory, start_grace_s: float = 120.0):
        self.factory = factory
        self.start_grace_s = start_grace_s
        self._live: weakref.WeakSet[Sandbox] = weakref.WeakSet()
        self._changed = threading.Condition()
        self._starting = 0
        self._closing = False

    def start(self, workspace: Path, label: str) -> Sandbox:
        with self._changed:
            if self._closing:
                raise SandboxError("the collection is stopping; no new sandbox is started")
            self._starting += 1
        sandbox: Sandbox | None = None
        late = False
        try:
            sandbox = self.factory.start(workspace, label)
        finally:
            try:
                with self._changed:
                    late = self._closing
                    if sandbox is not None and not late:
                        self._live.add(sandbox)
                if late and sandbox is not None:
                    sandbox.close()  # before the start counts as done: close_all waits for it
            finally:
                with self._changed:
                    self._starting -= 1
                    self._changed.notify_all()
        if late:
            raise SandboxError("the collection stopped while this sandbox was starting; it is closed")
        return sandbox

    def close_all(self) -> None:
        with self._changed:
            self._closing = True
            if not self._changed.wait_for(lambda: self._starting == 0, timeout=self.start_grace_s):
                log.warning("rollout: %d sandbox start(s) still running; each closes its sandbox when done",
                            self._starting)  # fmt: skip
            sandboxes = list(self._live)
        for sandbox in sandboxes:
            try:
                sandbox.close()
            except Exception:  # teardown of one must not keep the others open
                log.warning("rollout: closing a sandbox failed", exc_info=True)


class Collector:
    """Runs planned episodes (see the module docstring). One instance per stage run."""

    def __init__(
        self,
        *,
        policy: Policy,
        factory: SandboxFactory,
        agent_cfg: AgentConfig,
        cfg: RolloutConfig,
        ledger: SpendLedger,
        folders: RolloutFolders,
        progress: RolloutProgress,
        label: str,
        config_key: str,
    ):
        self.policy = policy
        self.factory = TrackedFactory(factory)
        self.agent_cfg = agent_cfg
        self.cfg = cfg
        self.ledger = ledger
        self.folders = folders
        self.progress = progress
        self.label = label
        self.config_key = config_key
        self._budget_noted = False

    async def run(self, plans: list[EpisodePlan]) -> list[EpisodeOutcome]:
        """Outcomes of ``plans``, in plan order. Raises what stops the whole collection."""
        if not plans:
            return []
        workers = max(1, min(self.cfg.concurrency, len(plans)))
        loop = asyncio.get_running_loop()
        # Every running episode keeps one thread busy (a command, a sandbox start or close).
        executor = ThreadPoolExecutor(max_workers=workers + 4, thread_name_prefix="stsc-rollout")
        loop.set_default_executor(executor)
        self._sandboxes = asyncio.Semaphore(max(1, self.cfg.sandbox_concurrency))
        self._turns = asyncio.Semaphore(self.cfg.step_turns or 2 * (os.cpu_count() or 1))
        queue, outcomes = deque(plans), {}
        ticker = asyncio.create_task(self._tick())
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(self._worker(queue, outcomes))
        except BaseExceptionGroup as group_error:
            raise _first_cause(group_error) from None
        finally:
            ticker.cancel()
            await asyncio.to_thread(self.factory.close_all)
        return [outcomes[p.run_name] for p in plans]

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.progress.tick()

    async def _worker(self, queue: deque[EpisodePlan], outcomes: dict[str, EpisodeOutcome]) -> None:
        while queue:
            plan = queue.popleft()
            outcome = await self._episode(plan)
            outcomes[plan.run_name] = outcome
            if outcome.outcome is Outcome.FINISHED:
                assert outcome.result is not None
                self.progress.episode_done(outcome.result.steps)
            else:
                self.progress.episode_failed()
                # Once a budget is spent every remaining episode ends unstarted: one line is enough.
                unstarted = outcome.outcome is Outcome.BUDGET_EXHAUSTED and outcome.attempts == 0
                quiet = unstarted and self._budget_noted
                self._budget_noted = self._budget_noted or unstarted
                log.log(logging.DEBUG if quiet else logging.WARNING, "rollout: %s: %s %s",
                        plan.run_name, outcome.outcome.value, outcome.error)  # fmt: skip

    async def _episode(self, plan: EpisodePlan) -> EpisodeOutcome:
        """Attempts of one episode until it finishes, cannot start, or runs out of retries."""
        error = ""
        for attempt in range(1, self.cfg.max_infra_retries + 2):
            async with self._sandboxes:
                reason = self.ledger.exhausted(plan.task_id)
                if reason is not None:
                    return EpisodeOutcome(plan, Outcome.BUDGET_EXHAUSTED, None, attempt - 1, reason)
                try:
                    result = await self._attempt(plan)
                except EpisodeInfraError as e:
                    error = str(e)
                    self.folders.move_aside(plan.run_name, plan.task_id, "infra_error", error)
                except BudgetExceededError as e:
                    self.folders.move_aside(
                        plan.run_name, plan.task_id, Outcome.BUDGET_EXHAUSTED.value, str(e)
                    )
                    return EpisodeOutcome(plan, Outcome.BUDGET_EXHAUSTED, None, attempt, str(e))
                except TaskFormatError as e:
                    self.folders.move_aside(plan.run_name, plan.task_id, Outcome.TASK_ERROR.value, str(e))
                    return EpisodeOutcome(plan, Outcome.TASK_ERROR, None, attempt, str(e))
                else:
                    return EpisodeOutcome(plan, Outcome.FINISHED, result, attempt)
            if attempt <= self.cfg.max_infra_retries:
                delay = min(MAX_BACKOFF_S, self.cfg.infra_backoff_s * 2 ** (attempt - 1))
                log.info("rollout: %s: infrastructure failure, retry %d in %.1fs: %s",
                         plan.run_name, attempt, delay, error)  # fmt: skip
                self.progress.retry()
                await asyncio.sleep(delay)
        return EpisodeOutcome(plan, Outcome.INFRA_FAILED, None, self.cfg.max_infra_retries + 1, error)

    async def _attempt(self, plan: EpisodePlan) -> EpisodeResult:
        calls = 0

        def on_reply(reply: PolicyReply) -> None:
            nonlocal calls
            calls += 1
            self.progress.model_call(reply.cost_usd)

        policy = BudgetedPolicy(self.policy, self.ledger, plan.task_id, on_reply)
        self.progress.episode_started()
        try:
            return await run_episode(
                plan.task_dir, policy, self.factory, self.agent_cfg, self.folders.run_dir(plan.run_name),
                seed=plan.seed, label=self.label, config_key=self.config_key, turns=self._turns,
            )  # fmt: skip
        finally:
            self.progress.episode_stopped(calls)


def _first_cause(group: BaseExceptionGroup) -> BaseException:
    """The first non-cancellation error inside a (nested) exception group."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_cause(error)
        if not isinstance(error, asyncio.CancelledError):
            return error
    return group.exceptions[0]
