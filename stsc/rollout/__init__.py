"""The ``rollout`` stage: teacher trajectories of the training tasks (paper step 6).

Input: the accepted tasks of the ``validate`` stage (``<validate>/library/<task_id>/``). The library
is split by dataset (``split.*``, ``stsc.synth.library.split_library``); only training tasks are
run, at most ``rollout.max_tasks`` of them.

Output (``ctx.out_dir``):

- ``runs/<run-name>/``: one MLGym-layout run folder per finished episode (``<task>.traj``,
  ``results.json``, ``stsc.json``), ``rollout.per_task`` per task, each with a seed derived from
  the run seed, the task id and its index ``k``;
- ``failed_attempts/<run-name>/attempt-<n>/``: partial run folders of attempts that failed on
  infrastructure, ran out of budget or were interrupted, each with a ``failure.json``;
- ``split.json``: the library split (training and held-out task ids and datasets);
- ``bundles/<task_id>.tar.gz``: the task's run folders, logged as artifacts (``rollout.bundles``);
- the ``episodes`` table: one row per planned episode.

Funnel: items in = episodes planned; items out = finished episodes (whatever the agent's exit
status); drops by reason: ``infra_failed_after_retries``, ``budget_exhausted``,
``task_format_error``. Usage: tokens and USD of every attempt, resumed runs included.

How episodes run (concurrency, retries, budgets, teardown): ``stsc.rollout.collector``.
"""

from stsc.rollout.stage import run_rollout

__all__ = ["run_rollout"]
