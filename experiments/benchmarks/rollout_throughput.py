"""Throughput of the rollout stage: 64 concurrent episodes against a model with a fixed latency.

A scripted OpenAI-compatible server (``tests/fakes/openai_server.py``, run in its own process so
its CPU time is not counted) answers every call after ``--latency`` seconds with a cheap command
(``echo``), and ``submit`` at the last step. The real stage (``stsc.rollout.run_rollout``: local
sandbox, agent loop, litellm client, run folders on disk) collects ``--episodes`` trajectories of
``--steps`` steps each on one small template task, all at once. With a model as the only cost,
steps/s would be ``episodes / latency``; the benchmark prints the measured fraction of that, and
the CPU time of this process per step and, separately, that of the sandboxed commands.

In the same run it then replays exactly the prompts the episodes sent (read back from their
``.traj`` histories) through bare ``litellm.acompletion``, at the same concurrency, against the
same server: no sandbox, no agent, no stsc. That is the ceiling of any framework built on litellm
in one process on this machine, and its CPU per call is litellm's own share of the stage's CPU per
step. Last, the same replay split over ``--shards`` processes (default: one per core) started
together: the ceiling when litellm's CPU is spread over every core, as a sharded collector would.

With a fixed latency and a common start the replies come back in bursts of 64. The stage works
through a burst ``rollout.step_turns`` episodes at a time (default two per core), so the first
episodes are back with the model early; ``--step-turns 64`` turns that ordering off (every episode
of a burst progresses at once, and all of them reach the model late).

Targets on 2 cores: fraction >= 0.9, <= 2 ms CPU per step.
Run: python experiments/benchmarks/rollout_throughput.py [--episodes 64 --latency 0.5 --steps 20 --step-turns 0]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SERVER = """
import sys
from tests.fakes.openai_server import FakeOpenAIServer

latency, steps = float(sys.argv[1]), int(sys.argv[2])

def respond(messages):
    step = sum(1 for m in messages if m.get("role") == "assistant")
    command = "submit" if step >= steps - 1 else f"echo step {step}"
    return f"DISCUSSION\\nStep {step}.\\n\\n```\\n{command}\\n```"

with FakeOpenAIServer(responder=respond, latency_s=latency) as server:
    print(server.base_url, flush=True)
    sys.stdin.read()
"""


def make_library(root: Path) -> Path:
    """A ``validate``-shaped folder holding one template task on iris."""
    from sklearn.datasets import load_iris

    from stsc.config import GeneratorConfig
    from stsc.hub.records import Decision, TargetSpec, TaskType, VerifiedDataset
    from stsc.synth.generate import GenerationSource
    from stsc.synth.task import write_task
    from stsc.synth.template import TemplatePlan, build_task

    frame = load_iris(as_frame=True).frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    target = TargetSpec(column="target", task_type=TaskType.CLASSIFICATION, n_classes=3)
    record = VerifiedDataset(
        proposal_id="p", topic_id="t", requested_id="sklearn/iris", dataset_id="sklearn/iris", license="bsd-3-clause",
        source="offline", targets=[target], decision=Decision.ACCEPTED, reason="ok",
    )  # fmt: skip
    source = GenerationSource("iris", record, "t", "benchmark", "ml", "Iris", (target,))
    draft = build_task(source, frame, TemplatePlan(target, "accuracy"), GeneratorConfig(), seed=0)
    write_task(root / "validate" / "library" / draft.task_id, draft)
    return root / "validate"


def config(root: Path, base_url: str, args: argparse.Namespace):
    from stsc.config import LLMConfig, PolicyConfig, RolloutConfig, RootConfig, SandboxConfig, SplitConfig

    cfg = RootConfig(root=str(root), store=str(root / "store"))
    cfg.sandbox = SandboxConfig(backend="local")
    cfg.split = SplitConfig(heldout_fraction=0.0)
    llm = LLMConfig(model="openai/fake-model", api_base=base_url, input_cost_per_token=0.0,
                    output_cost_per_token=0.0, timeout_s=60.0)  # fmt: skip
    cfg.teacher = PolicyConfig(kind="llm", name="fake", llm=llm)
    n = args.episodes
    cfg.rollout = RolloutConfig(
        per_task=n,
        concurrency=n,
        llm_concurrency=n,
        sandbox_concurrency=n,
        bundles=False,
        step_turns=args.step_turns,
    )
    cfg.agent.max_steps = args.steps + 5
    return cfg


def run(args: argparse.Namespace, root: Path, base_url: str) -> tuple[float, float, float, float, int]:
    """(wall s, CPU s of this process, of its event-loop thread, of finished child processes, steps)
    of one stage run."""
    from stsc.rollout import stage as _stage

    run_rollout = _stage.run_rollout
    from stsc.store import StageContext, StageReport

    cfg = config(root, base_url, args)
    out = root / "store" / "rollout" / "bench"
    out.mkdir(parents=True)
    ctx = StageContext(name="rollout", key="bench", out_dir=out, inputs={"validate": make_library(root)},
                       store=root / "store", seed=0, report=StageReport(stage="rollout"))  # fmt: skip
    # the event loop's own CPU (time.thread_time: a wall-clock profile would charge GIL waits to
    # whatever call released the GIL)
    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    children0 = _children_cpu()
    cpu0, wall0, loop0 = time.process_time(), time.perf_counter(), time.thread_time()
    if profiler:
        profiler.enable()
    run_rollout(cfg, ctx)
    if profiler:
        profiler.disable()
    wall, cpu, loop = time.perf_counter() - wall0, time.process_time() - cpu0, time.thread_time() - loop0
    children = _children_cpu() - children0
    if profiler:
        pstats.Stats(profiler).sort_stats(os.environ.get("BENCH_SORT", "tottime")).print_stats(args.profile)
    assert ctx.report.items_out == args.episodes, ctx.report
    return wall, cpu, loop, children, int(ctx.report.metrics["steps"])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def recorded_prompts(root: Path, cfg) -> list[list[list[dict[str, str]]]]:
    """Per episode, the messages of each of its model calls, rebuilt from its ``.traj`` history."""
    from stsc.agent.history import process_history

    episodes = []
    for traj_file in sorted((root / "store").rglob("*.traj")):
        history = json.loads(traj_file.read_text())["history"]
        calls = [i for i, m in enumerate(history) if m["role"] == "assistant"]
        episodes.append([process_history(history[:i], cfg.agent.history) for i in calls])
    return episodes


def bare_litellm(episodes: list[list[list[dict[str, str]]]], base_url: str) -> tuple[float, float, int]:
    """(wall s, CPU s, calls) of replaying ``episodes`` concurrently through ``litellm.acompletion``
    with the options ``LLMClient`` sends."""
    import litellm

    from stsc.llm.providers import register_prices

    register_prices("openai/fake-model", 0.0, 0.0)
    options = {"api_base": base_url, "api_key": "no-key", "timeout": 60.0, "max_retries": 0, "num_retries": 0,
               "input_cost_per_token": 0.0, "output_cost_per_token": 0.0}  # fmt: skip

    async def replay(prompts: list[list[dict[str, str]]]) -> None:
        for messages in prompts:
            await asyncio.wait_for(
                litellm.acompletion(model="openai/fake-model", messages=messages, **options), 60.0
            )

    async def all_episodes() -> None:
        await asyncio.gather(*(replay(p) for p in episodes))

    cpu0, wall0 = time.process_time(), time.perf_counter()
    asyncio.run(all_episodes())
    return time.perf_counter() - wall0, time.process_time() - cpu0, sum(len(p) for p in episodes)


def sharded_litellm(
    episodes: list[list[list[dict[str, str]]]], base_url: str, shards: int, tmp: Path
) -> tuple[float, float, int]:
    """(wall s, CPU s of all shards, calls) of ``bare_litellm`` run on ``episodes`` split over
    ``shards`` processes; each imports litellm first, and all start together."""
    procs = []
    for i in range(shards):
        path = tmp / f"shard-{i}.json"
        path.write_text(json.dumps(episodes[i::shards]))
        procs.append(subprocess.Popen([sys.executable, __file__, "--replay-shard", str(path), "--base-url", base_url],
                                      cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))  # fmt: skip
    try:
        for proc in procs:  # each says "ready" once litellm is imported
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        wall0 = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [json.loads(proc.stdout.readline()) for proc in procs if proc.stdout is not None]
        wall = time.perf_counter() - wall0
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return wall, sum(r["cpu"] for r in results), sum(r["calls"] for r in results)


def replay_shard(path: Path, base_url: str) -> None:
    """The child side of ``sharded_litellm``."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm  # noqa: F401

    episodes = json.loads(path.read_text())
    print("ready", flush=True)
    sys.stdin.readline()
    _, cpu, calls = bare_litellm(episodes, base_url)
    print(json.dumps({"cpu": cpu, "calls": calls}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per model call")
    parser.add_argument("--steps", type=int, default=20, help="steps per episode (the last submits)")
    parser.add_argument("--step-turns", type=int, default=0, help="rollout.step_turns (0: two per CPU core; "
                        "--episodes: no ordering)")  # fmt: skip
    parser.add_argument("--profile", type=int, default=0, help="print the N most expensive functions")
    parser.add_argument("--shards", type=int, default=os.cpu_count() or 1,
                        help="processes for the sharded bare-litellm replay (0: skip it)")  # fmt: skip
    parser.add_argument("--replay-shard", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay_shard:
        replay_shard(args.replay_shard, args.base_url)
        return
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(args.latency), str(args.steps)], cwd=REPO,
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        import litellm  # noqa: F401  (imported before timing: seconds, once per process)

        with tempfile.TemporaryDirectory(prefix="stsc-bench-") as tmp:
            wall, cpu, loop, children, steps = run(args, Path(tmp), base_url)
            prompts = recorded_prompts(Path(tmp), config(Path(tmp), base_url, args))
            bare_wall, bare_cpu, calls = bare_litellm(prompts, base_url)
            sharded = sharded_litellm(prompts, base_url, args.shards, Path(tmp)) if args.shards else None
    finally:
        server.terminate()
        server.wait()
    ideal = args.episodes / args.latency
    fraction, bare_fraction = steps / wall / ideal, calls / bare_wall / ideal
    per_step, per_call = 1000 * cpu / steps, 1000 * bare_cpu / calls
    print(
        f"episodes {args.episodes} x {args.steps} steps, model latency {args.latency:.2f} s, {os.cpu_count()} cores"
    )
    print(
        f"stsc rollout: wall {wall:.2f} s, {steps / wall:.1f} steps/s (ideal {ideal:.1f}), fraction {fraction:.3f}"
    )
    print(f"  CPU {per_step:.2f} ms per step, of which the event loop's thread {1000 * loop / steps:.2f} ms")
    print(f"  sandboxed commands' CPU {1000 * children / steps:.2f} ms per step (child processes)")
    print(f"bare litellm, the same {calls} prompts at the same concurrency: wall {bare_wall:.2f} s, "
          f"fraction {bare_fraction:.3f}, CPU {per_call:.2f} ms per call")  # fmt: skip
    if sharded is not None:
        shard_wall, shard_cpu, shard_calls = sharded
        print(f"bare litellm over {args.shards} processes: wall {shard_wall:.2f} s, fraction "
              f"{shard_calls / shard_wall / ideal:.3f}, CPU {1000 * shard_cpu / shard_calls:.2f} ms per call")  # fmt: skip
    print(f"stsc's own CPU per step (beyond litellm's): {per_step - per_call:.2f} ms")
    print(f"stsc fraction / bare litellm fraction: {fraction / bare_fraction:.3f}")
    print("targets: fraction >= 0.9, CPU <= 2 ms per step")
    print(f"rollout_throughput_fraction: {fraction:.3f}")


if __name__ == "__main__":
    main()
