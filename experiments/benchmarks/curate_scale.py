"""Wall time of the curate stage on the paper's scale: 34,000 teacher trajectories -> the SFT set.

Writes a synthetic task library and 34,000 run folders in the rollout stage's exact layout
(``<rollout>/runs/<model>__<task>__default__t-..._run_<k>/`` with ``<task>.traj``, ``results.json``
and ``stsc.json``) to a temporary folder, then times one call of the real ``run_curate`` with the
default curate config (processed view, success filter, 48K token cap, dedup, truncation to 32K),
measuring every length with a real student tokenizer (the ``tiny`` student's byte-level BPE by
default). Generation and the one-off student build are not timed; the run files are read from the
page cache, as right after a rollout.

Episodes have 10-30 steps; observations are hundreds to thousands of characters of code, logs,
tables and listings; responses are a discussion, sometimes a think block, and a command (a
script written with a heredoc one time in five). About a quarter of the runs scored nothing and a
few percent repeat an earlier run's actions.

Target on a 2-core machine: <= 300 s. Run: python experiments/benchmarks/curate_scale.py [-n 34000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from stsc.config import CurateConfig, RootConfig, StudentConfig  # noqa: E402
from stsc.store import StageContext, StageReport  # noqa: E402

FOOTER = (
    "(Current Step: {step}, Remaining Steps: {left})\n(Open file: {open})\n(Current directory: {cwd})\nbash-$"
)
MAX_STEPS = 50
MODEL = "openai--gpt-5"


def _line_pool() -> list[str]:
    """Lines of real Python source (this repository's), as agents read and write code."""
    lines = []
    for path in sorted((REPO / "stsc").rglob("*.py")):
        lines += [line for line in path.read_text().splitlines() if line.strip()]
    return lines


class TextMaker:
    """Observations and responses of realistic shape; numbers are random, so BPE caches do not flatter."""

    def __init__(self, rng: random.Random, code: list[str]):
        self.rng, self.code = rng, code

    def _code(self, n_chars: int) -> str:
        out, size = [], 0
        start = self.rng.randrange(len(self.code))
        while size < n_chars:
            line = self.code[(start + len(out)) % len(self.code)]
            out.append(line)
            size += len(line) + 1
        return "\n".join(out)

    def _log(self, n_chars: int) -> str:
        r, out, size, epoch = self.rng, [], 0, 0
        while size < n_chars:
            epoch += 1
            line = (
                f"epoch {epoch:3d} | train_loss {r.uniform(0.05, 2):.5f} | val_loss {r.uniform(0.05, 2):.5f} | "
                f"val_accuracy {r.uniform(0.4, 0.99):.4f} | lr {r.uniform(1e-5, 1e-2):.2e} | {r.uniform(0.5, 40):.1f}s"
            )
            out.append(line)
            size += len(line) + 1
        return "\n".join(out)

    def _table(self, n_chars: int) -> str:
        r = self.rng
        cols = ["id"] + [f"feature_{i}" for i in range(r.randint(3, 12))] + ["target"]
        out, size = [",".join(cols)], 0
        while size < n_chars:
            line = ",".join([str(r.randint(0, 99999))] + [f"{r.gauss(0, 3):.4f}" for _ in cols[1:]])
            out.append(line)
            size += len(line) + 1
        return "\n".join(out)

    def observation(self) -> str:
        n = int(min(6000, max(80, self.rng.lognormvariate(6.7, 0.9))))  # median ~800 characters
        kind = self.rng.choice([self._code, self._log, self._table])
        return kind(n)

    def response(self, step: int) -> tuple[str, str]:
        r = self.rng
        think = f"<think>\n{self._code(r.randint(100, 800))}\n</think>\n" if r.random() < 0.5 else ""
        discussion = " ".join(r.choice(self.code).strip() for _ in range(r.randint(2, 8)))
        if r.random() < 0.2:
            action = f"cat > train_{step}.py << 'EOF'\n{self._code(r.randint(300, 2500))}\nEOF"
        else:
            action = r.choice(
                [
                    "ls -la",
                    "python train.py",
                    "validate",
                    "head -n 20 data/train.csv",
                    f"python train_{step}.py --epochs {r.randint(1, 50)}",
                    "cat baseline.py",
                ]
            )
        return f"{think}DISCUSSION\n{discussion}\n\n```\n{action}\n```", action


def write_library(root: Path, n_tasks: int) -> list[str]:
    """``n_tasks`` library tasks over ``n_tasks // 2`` datasets; returns the training task ids."""
    from stsc.synth.library import split_library
    from stsc.synth.task import DatasetConfig, TaskConfig, TaskDraft, TaskMeta, load_task, write_task

    description = (
        "Predict the target of each row.\n\n{dataset_docs}\nSUBMISSION FORMAT:\nsubmission.csv: id,target."
    )
    tasks = []
    for i in range(n_tasks):
        task_id = f"task-{i:04d}"
        draft = TaskDraft(
            config=TaskConfig(
                id=task_id,
                name=task_id,
                description=description,
                dataset_configs=["datasets/d.yaml"],
                baseline_scores=[{"accuracy": 0.6}],
            ),
            datasets=[DatasetConfig(name="d", description="id, features, target", data_path="data")],
            meta=TaskMeta(
                task_id=task_id,
                topic_id=f"topic-{i}",
                topic_title="t",
                area="tabular",
                dataset_id=f"org/dataset-{i // 2}",
                dataset_revision=None,
                license="mit",
                task_type="classification",
                target="target",
                metric="accuracy",
                higher_is_better=True,
                baseline_score=0.6,
                generator="benchmark",
            ),
            files={"workspace/evaluate.py": "print('{}')\n"},
        )
        tasks.append(load_task(write_task(root / "library" / task_id, draft)))
    return list(split_library(tasks, 0.3, 0).train)


def _episode(
    maker: TextMaker, system: str, task_id: str, previous: list[str] | None
) -> tuple[list, list, list[str]]:
    r = maker.rng
    instance = f"We are now going to work on the following machine learning task.\n\nTASK DESCRIPTION:\n{maker._code(2500)}\n"
    history = [
        {"role": "system", "content": system, "agent": "primary"},
        {
            "role": "user",
            "content": instance
            + FOOTER.format(step=0, left=MAX_STEPS, open="n/a", cwd="/home/agent/workspace"),
            "agent": "primary",
        },
    ]
    steps, actions = [], []
    for step in range(r.randint(10, 30) if previous is None else len(previous)):
        text, action = maker.response(step)
        if previous is not None:
            action = previous[step]
            text = f"DISCUSSION\nAgain.\n\n```\n{action}\n```"
        obs = maker.observation()
        state = json.dumps({"open_file": "n/a", "working_dir": "/home/agent/workspace"})
        steps.append(
            {
                "action": action,
                "observation": obs,
                "response": text,
                "state": state,
                "thought": text[:200],
                "execution_time": round(r.uniform(0.01, 30), 3),
            }
        )
        history.append(
            {
                "role": "assistant",
                "content": text,
                "agent": "primary",
                "thought": text[:200],
                "action": action,
            }
        )
        footer = FOOTER.format(
            step=step + 1, left=MAX_STEPS - step - 1, open="n/a", cwd="/home/agent/workspace"
        )
        history.append({"role": "user", "content": f"{obs}\n{footer}", "agent": "primary"})
        actions.append(action)
    return steps, history, actions


def _write_runs(args: tuple[Path, list[tuple[int, str, int]], int, str]) -> int:
    """Write run folders (plain writes: the rollout's fsyncs are not what is measured here)."""
    runs, items, seed, system = args
    rng = random.Random(seed)
    maker = TextMaker(rng, _line_pool())
    last: dict[str, list[str]] = {}
    for _, task_id, index in items:
        duplicate = task_id in last and rng.random() < 0.03
        steps, history, actions = _episode(maker, system, task_id, last[task_id] if duplicate else None)
        last[task_id] = actions
        scores = (
            []
            if rng.random() < 0.25
            else [{"accuracy": round(rng.uniform(0.4, 0.95), 4)} for _ in range(rng.randint(1, 4))]
        )
        folder = runs / f"{MODEL}__{task_id}__default__t-1.00__p-0.95__c-4.00__install-0_run_{index}"
        folder.mkdir(parents=True)
        info = {
            "model_stats": {
                "total_cost": 0.5,
                "task_cost": 0.5,
                "tokens_sent": 1,
                "tokens_received": 1,
                "api_calls": len(steps),
            },
            "exit_status": "submitted",
            "submission": None,
            "score": scores,
        }
        traj = {"environment": "stsc", "trajectory": steps, "history": history, "info": info}
        (folder / f"{task_id}.traj").write_text(json.dumps(traj, indent=2))
        (folder / "results.json").write_text(json.dumps({"agent": scores, "baseline": {"accuracy": 0.6}}))
        (folder / "stsc.json").write_text(
            json.dumps(
                {
                    "task_id": task_id,
                    "policy": MODEL,
                    "seed": index,
                    "exit_status": "submitted",
                    "steps": len(steps),
                }
            )
        )
    return len(items)


def generate(root: Path, n_runs: int, n_tasks: int, processes: int) -> None:
    from stsc.agent.tools import command_docs
    from stsc.prompts import render

    system = render("agent_system", command_docs=command_docs(), window=1000).text
    train = write_library(root / "validate", n_tasks)
    items = [(k, train[k % len(train)], k // len(train)) for k in range(n_runs)]
    shards = [(root / "rollout" / "runs", items[i::processes], i, system) for i in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        assert sum(pool.map(_write_runs, shards)) == n_runs


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the stage's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--trajectories", type=int, default=34_000)
    parser.add_argument("--tasks", type=int, default=500, help="library tasks (about 70%% train)")
    parser.add_argument("--processes", type=int, default=0, help="curate.concurrency (0 = one per CPU)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated data here")
    args = parser.parse_args()

    from stsc.curate import run_curate
    from stsc.train.students import materialize_student, student_cache_dir

    root = args.workdir or Path(tempfile.mkdtemp(prefix="stsc-curate-scale-"))
    try:
        t0 = time.perf_counter()
        if not (root / "rollout" / "runs").is_dir():
            generate(root, args.trajectories, args.tasks, processes=max(1, os.cpu_count() or 1))
        materialize_student(StudentConfig(), student_cache_dir(root / "store"))
        print(f"generated {args.trajectories} runs in {time.perf_counter() - t0:.1f} s (not timed)")
        size = sum(p.stat().st_size for p in (root / "rollout" / "runs").rglob("*") if p.is_file())
        print(f"run folders: {size / 1e9:.2f} GB")

        cfg = replace(RootConfig(), curate=replace(CurateConfig(), concurrency=args.processes))
        out = root / "curate"
        out.mkdir(exist_ok=True)
        ctx = StageContext(
            name="curate",
            key="bench",
            out_dir=out,
            inputs={"rollout": root / "rollout", "validate": root / "validate"},
            store=root / "store",
            seed=0,
            report=StageReport("curate"),
        )
        cpu0, t0 = _cpu_s(), time.perf_counter()
        run_curate(cfg, ctx)
        wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
        stats = json.loads((out / "stats.json").read_text())
        print(
            f"trajectories {stats['trajectories']} -> examples {stats['examples']}; dropped {stats['dropped']}"
        )
        print(
            f"tokens: total {stats['tokens_total']}, mean {stats['tokens_mean']}, p90 {stats['tokens_p90']}, "
            f"max {stats['tokens_max']}; truncated {stats['truncated_examples']}"
        )
        print(
            f"sft.jsonl: {(out / 'sft.jsonl').stat().st_size / 1e9:.2f} GB; "
            f"{stats['trajectories'] / wall:.0f} trajectories/s (target <= 300 s)"
        )
        print(
            f"CPU time of the stage and its workers: {cpu:.1f} s ({os.getloadavg()[0]:.1f} load average now)"
        )
        print(f"curate_scale_s: {wall:.1f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
