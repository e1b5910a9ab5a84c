"""Which episodes the rollout stage runs: the training tasks of the library and ``per_task`` seeded
episodes of each, every one with a fixed run folder name (MLGym layout)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from stsc.agent.trajectory import run_folder_name
from stsc.config import PolicyConfig, RootConfig
from stsc.synth.library import LibrarySplit, list_tasks, split_library
from stsc.synth.task import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpisodePlan:
    """One episode to collect: the ``k``-th trajectory of ``task_id``, sampled with ``seed``."""

    task_id: str
    task_dir: Path
    k: int
    seed: int
    run_name: str  # the run folder's name, unique within the stage


def episode_seed(seed: int, task_id: str, k: int) -> int:
    """A 32-bit seed for the ``k``-th episode of ``task_id``, derived from the run seed."""
    digest = hashlib.sha256(f"{seed}:rollout:{task_id}:{k}".encode()).hexdigest()
    return int(digest[:8], 16)


def policy_model_id(policy: PolicyConfig) -> str:
    """The model part of a run folder name: the litellm model of an ``llm`` policy, else its name."""
    return policy.llm.model if policy.kind == "llm" else policy.name


def _rank(seed: int, task_id: str) -> str:
    return hashlib.sha256(f"{seed}:rollout-tasks:{task_id}".encode()).hexdigest()


def select_training_tasks(cfg: RootConfig, library: Path) -> tuple[list[Task], LibrarySplit]:
    """The training side of the library split by dataset (``cfg.split``), capped at
    ``rollout.max_tasks`` tasks of lowest seeded rank; returned sorted by task id with the split.
    Raises ``TaskFormatError`` when the library cannot be read."""
    tasks = list_tasks(library)
    split = split_library(tasks, cfg.split.heldout_fraction, cfg.split.seed)
    train = set(split.train)
    chosen = [t for t in tasks if t.task_id in train]
    cap = cfg.rollout.max_tasks
    if cap is not None and len(chosen) > cap:
        keep = set(sorted((t.task_id for t in chosen), key=lambda i: _rank(cfg.seed, i))[: max(0, cap)])
        chosen = [t for t in chosen if t.task_id in keep]
    log.info(
        "rollout: %d tasks in the library, %d for training (%d datasets held out), %d used",
        len(tasks),
        len(split.train),
        len(split.heldout_datasets),
        len(chosen),
    )
    if not chosen:
        log.warning("rollout: no training tasks in %s; nothing to collect", library)
    return sorted(chosen, key=lambda t: t.task_id), split


def plan_episodes(cfg: RootConfig, tasks: list[Task]) -> list[EpisodePlan]:
    """``rollout.per_task`` episodes of every task, in task then ``k`` order."""
    teacher, agent = cfg.teacher, cfg.agent
    model = policy_model_id(teacher)
    plans = []
    for task in tasks:
        for k in range(cfg.rollout.per_task):
            name = run_folder_name(
                model, task.task_id, agent.name, teacher.llm.temperature, teacher.llm.top_p,
                agent.cost_limit_usd, k,
            )  # fmt: skip
            plans.append(
                EpisodePlan(task.task_id, task.path, k, episode_seed(cfg.seed, task.task_id, k), name)
            )
    return plans
