"""Budgets of the rollout stage: one for the whole stage, one per task (USD).

``SpendLedger`` knows what was spent (restored from the run folders of earlier attempts, then
charged call by call) and answers two questions: may a new episode of this task start, and may an
episode of this task send another model call. ``BudgetedPolicy`` puts the second question in front
of every call of the wrapped policy: once a budget is spent the call raises
``BudgetExceededError``, which the episode turns into an ``exit_cost`` auto-submission before
stopping. Calls already in flight complete and are charged, so spend can pass a budget by at most
what those calls cost.

Both are used from the event loop's thread only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from stsc.agent.policies import Policy, PolicyReply
from stsc.errors import BudgetExceededError, LLMError
from stsc.rollout.folders import Spend


def tightest(**budgets: float | None) -> tuple[float | None, str]:
    """The lowest of the set budgets and its config key (dots as ``__``); (None, first key) when
    none is set."""
    keys = list(budgets)
    set_ = [(value, key) for key, value in budgets.items() if value is not None]
    value, key = min(set_) if set_ else (None, keys[0])
    return value, key.replace("__", ".")


class SpendLedger:
    """USD spent by the stage and by each task, against ``budget_usd`` and ``per_task_budget_usd``
    (None = unlimited). ``budget_key`` names the setting the stage budget comes from (error text)."""

    def __init__(
        self,
        budget_usd: float | None,
        per_task_budget_usd: float | None,
        restored: Mapping[str, Spend] | None = None,
        budget_key: str = "rollout.budget_usd",
    ):
        self.budget_usd = budget_usd
        self.budget_key = budget_key
        self.per_task_budget_usd = per_task_budget_usd
        self.by_task: dict[str, float] = {k: v.cost_usd for k, v in (restored or {}).items()}
        self.restored_usd = sum(self.by_task.values())
        self.total_usd = self.restored_usd

    def charge(self, task_id: str, cost_usd: float) -> None:
        self.by_task[task_id] = self.by_task.get(task_id, 0.0) + cost_usd
        self.total_usd += cost_usd

    def exhausted(self, task_id: str) -> str | None:
        """Why no more spend is allowed for ``task_id`` (which budget, how much), or None."""
        if self.budget_usd is not None and self.total_usd >= self.budget_usd:
            return (
                f"the stage budget {self.budget_key}=${self.budget_usd:.4f} is spent "
                f"(${self.total_usd:.4f}); raise {self.budget_key} to collect more"
            )
        spent = self.by_task.get(task_id, 0.0)
        if self.per_task_budget_usd is not None and spent >= self.per_task_budget_usd:
            return (
                f"the budget of task {task_id} (${self.per_task_budget_usd:.4f}) is spent (${spent:.4f}); "
                "raise rollout.per_task_budget_usd to collect more"
            )
        return None

    def remaining_usd(self) -> float | None:
        """What is left of the stage budget (None = unlimited)."""
        return None if self.budget_usd is None else max(0.0, self.budget_usd - self.total_usd)


class BudgetedPolicy:
    """``policy`` acting for one episode of ``task_id``, within the ledger's budgets.

    ``on_reply`` is called with every reply (progress accounting). Raises ``BudgetExceededError``
    before a call once a budget is spent; everything else the wrapped policy raises passes through.
    """

    def __init__(
        self,
        policy: Policy,
        ledger: SpendLedger,
        task_id: str,
        on_reply: Callable[[PolicyReply], None] | None = None,
    ):
        self.policy = policy
        self.name = policy.name
        self.ledger = ledger
        self.task_id = task_id
        self.on_reply = on_reply

    async def act(self, messages: list[dict[str, str]], *, seed: int) -> PolicyReply:
        reason = self.ledger.exhausted(self.task_id)
        if reason is not None:
            raise BudgetExceededError(reason)
        try:
            reply = await self.policy.act(messages, seed=seed)
        except LLMError as e:
            self.ledger.charge(self.task_id, e.cost_usd)  # billed attempts that never answered
            raise
        self.ledger.charge(self.task_id, reply.cost_usd)
        if self.on_reply is not None:
            self.on_reply(reply)
        return reply
