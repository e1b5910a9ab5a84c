"""Fixtures of the curate tests: the tiny student's tokenizer, a task library written with the
synthesis room's task writer, and run folders written with the agent room's trajectory writer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stsc.agent.trajectory import (
    AGENT,
    EpisodeResult,
    run_folder_name,
    state_string,
    write_result,
    write_results,
    write_traj,
)
from stsc.config import RootConfig, StudentConfig
from stsc.synth.task import DatasetConfig, TaskConfig, TaskDraft, TaskMeta, write_task
from tests.curate.golden import root_config, stage_context

FOOTER = "(Current Step: {step}, Remaining Steps: {left})\n(Open file: n/a)\n(Current directory: /home/agent/workspace)\nbash-$"


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stage store shared by the session, so the tiny student is built once."""
    from stsc.train.students import materialize_student, student_cache_dir

    root = tmp_path_factory.mktemp("store")
    materialize_student(StudentConfig(), student_cache_dir(root))
    return root


@pytest.fixture(scope="session")
def tokenizer(store: Path):
    """The tiny student's tokenizer with its training template, as curate and sft load it."""
    from stsc.curate.tokens import load_student_tokenizer
    from stsc.train.students import materialize_student, student_cache_dir

    return load_student_tokenizer(
        materialize_student(StudentConfig(), student_cache_dir(store)), StudentConfig()
    )


def write_library_task(
    library: Path,
    task_id: str,
    dataset_id: str,
    *,
    metric: str = "accuracy",
    higher_is_better: bool = True,
    baseline: float | None = 0.5,
) -> Path:
    """A minimal valid library task (only what curation reads matters: meta.json)."""
    description = "Predict the label.\n\n{dataset_docs}\nSUBMISSION FORMAT:\nsubmission.csv with id,label."
    draft = TaskDraft(
        config=TaskConfig(
            id=task_id,
            name=task_id,
            description=description,
            dataset_configs=["datasets/d.yaml"],
            baseline_scores=[{metric: baseline}] if baseline is not None else [],
        ),
        datasets=[DatasetConfig(name="d", description="id, x, label", data_path="data")],
        meta=TaskMeta(
            task_id=task_id,
            topic_id="t",
            topic_title="t",
            area="tabular",
            dataset_id=dataset_id,
            dataset_revision=None,
            license="mit",
            task_type="classification",
            target="label",
            metric=metric,
            higher_is_better=higher_is_better,
            baseline_score=baseline,
            generator="test",
        ),
        files={"workspace/evaluate.py": "print('{}')\n"},
    )
    return write_task(library / task_id, draft)


@dataclass
class Run:
    """One synthetic episode: the commands, their outputs and the scored submissions."""

    task_id: str
    actions: list[str]
    observations: list[str] | None = None  # default: a few lines per step
    scores: list[dict] = field(default_factory=lambda: [{"accuracy": 0.9}])
    index: int = 0
    model: str = "teacher"
    finished: bool = True
    think: bool = False  # wrap a reasoning block around the first response


def response(action: str, step: int, think: bool = False) -> str:
    head = f"<think>\nStep {step}: decide what to run.\n</think>\n" if think else ""
    return f"{head}DISCUSSION\nStep {step}: I run the next command.\n\n```\n{action}\n```"


def write_run(runs: Path, run: Run, max_steps: int = 50) -> Path:
    """A run folder in the episode writer's exact format (history: system, task, then one
    response and one observation per step)."""
    folder = runs / run_folder_name(run.model, run.task_id, "default", 0.0, 0.95, 4.0, run.index)
    observations = run.observations or [
        f"output of {a}\n" + "line\n" * (i + 1) for i, a in enumerate(run.actions)
    ]
    history = [
        {"role": "system", "content": "SETTING: you are a researcher.", "agent": AGENT},
        {
            "role": "user",
            "content": f"TASK DESCRIPTION:\nSolve {run.task_id}.\n" + FOOTER.format(step=0, left=max_steps),
            "agent": AGENT,
        },
    ]
    steps = []
    for i, (action, obs) in enumerate(zip(run.actions, observations, strict=True)):
        text = response(action, i, think=run.think and i == 0)
        state = state_string({"open_file": "n/a", "working_dir": "/home/agent/workspace"})
        steps.append(
            {
                "action": action,
                "observation": obs,
                "response": text,
                "state": state,
                "thought": f"Step {i}",
                "execution_time": 0.01,
            }
        )
        history.append(
            {"role": "assistant", "content": text, "agent": AGENT, "thought": f"Step {i}", "action": action}
        )
        history.append(
            {
                "role": "user",
                "content": obs + "\n" + FOOTER.format(step=i + 1, left=max_steps - i - 1),
                "agent": AGENT,
            }
        )
    info = {"model_stats": {}, "exit_status": "submitted", "submission": None, "score": run.scores}
    write_traj(folder, run.task_id, steps, history, info)
    write_results(folder, run.scores, {"accuracy": 0.5})
    if run.finished:
        write_result(
            folder,
            EpisodeResult(
                task_id=run.task_id,
                policy=run.model,
                seed=run.index,
                label="test",
                config_key="",
                agent="default",
                exit_status="submitted",
                steps=len(steps),
                prompt_tokens=0,
                completion_tokens=0,
                cost_usd=0.0,
                api_calls=len(steps),
                metric="accuracy",
                higher_is_better=True,
                scores=run.scores,
            ),
        )
    return folder


@dataclass
class Workspace:
    """A rollout folder and a validate folder for one curate run."""

    root: Path
    store: Path

    @property
    def rollout(self) -> Path:
        return self.root / "rollout"

    @property
    def validate(self) -> Path:
        return self.root / "validate"

    def task(self, task_id: str, dataset_id: str = "ds/shared", **kw) -> None:
        """A library task; tasks sharing one dataset are never split apart (all train)."""
        write_library_task(self.validate / "library", task_id, dataset_id, **kw)

    def run(self, run: Run) -> Path:
        return write_run(self.rollout / "runs", run)

    def curate(self, cfg: RootConfig | None = None, name: str = "out", **curate: object):
        """Run the stage; returns ``(rows, index rows, stats, ctx)``."""
        from stsc.curate import run_curate

        cfg = cfg or root_config(**curate)
        ctx = stage_context(cfg, self.root / name, self.store, self.rollout, self.validate)
        run_curate(cfg, ctx)
        rows = [json.loads(line) for line in (ctx.out_dir / "sft.jsonl").read_text().splitlines()]
        index = [json.loads(line) for line in (ctx.out_dir / "index.jsonl").read_text().splitlines()]
        stats = json.loads((ctx.out_dir / "stats.json").read_text())
        return rows, index, stats, ctx


@pytest.fixture
def ws(tmp_path: Path, store: Path) -> Workspace:
    (tmp_path / "rollout" / "runs").mkdir(parents=True)
    return Workspace(tmp_path, store)
