"""Throughput of the rollout stage: 64 concurrent episodes against a model with a fixed latency.

A scripted OpenAI-compatible server (``tests/fakes/openai_server.py``, run in its own process so
its CPU time is not counted) answers every call after ``--latency`` seconds with a cheap command
(``echo``), and ``submit`` at the last step. The real stage (``stsc.rollout.run_rollout``: local
sandbox, agent loop, litellm client, run folders on disk) collects ``--episodes`` trajectories of
``--steps`` steps each on one small template task, all at once. With a model as the only cost,
steps/s would be ``episodes / latency``; the benchmark prints the measured fraction of that, and
the CPU time of this process per step (the framework's own overhead) and, separately, that of the
sandboxed commands (child processes).

Targets on 2 cores: fraction >= 0.9, <= 2 ms CPU per step.
Run: python experiments/benchmarks/rollout_throughput.py [--episodes 64 --latency 0.5 --steps 20]
"""

from __future__ import annotations

import argparse
import cProfile
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
        per_task=n, concurrency=n, llm_concurrency=n, sandbox_concurrency=n, bundles=False
    )
    cfg.agent.max_steps = args.steps + 5
    return cfg


def run(args: argparse.Namespace, root: Path, base_url: str) -> tuple[float, float, float, int]:
    """(wall s, CPU s of this process, CPU s of finished child processes, steps) of one stage run."""
    from stsc.rollout import run_rollout
    from stsc.store import StageContext, StageReport

    cfg = config(root, base_url, args)
    out = root / "store" / "rollout" / "bench"
    out.mkdir(parents=True)
    ctx = StageContext(name="rollout", key="bench", out_dir=out, inputs={"validate": make_library(root)},
                       store=root / "store", seed=0, report=StageReport(stage="rollout"))  # fmt: skip
    profiler = cProfile.Profile() if args.profile else None
    children0 = _children_cpu()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    run_rollout(cfg, ctx)
    if profiler:
        profiler.disable()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    children = _children_cpu() - children0
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
    assert ctx.report.items_out == args.episodes, ctx.report
    return wall, cpu, children, int(ctx.report.metrics["steps"])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per model call")
    parser.add_argument("--steps", type=int, default=20, help="steps per episode (the last submits)")
    parser.add_argument("--profile", type=int, default=0, help="print the N most expensive functions")
    args = parser.parse_args()
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
            wall, cpu, children, steps = run(args, Path(tmp), base_url)
    finally:
        server.terminate()
        server.wait()
    ideal = args.episodes / args.latency
    fraction = steps / wall / ideal
    print(
        f"episodes {args.episodes} x {args.steps} steps, model latency {args.latency:.2f} s, {os.cpu_count()} cores"
    )
    print(f"wall {wall:.2f} s, {steps / wall:.1f} steps/s (ideal {ideal:.1f})")
    print(f"framework CPU {1000 * cpu / steps:.2f} ms per step (target <= 2), fraction target >= 0.9")
    print(f"sandboxed commands' CPU {1000 * children / steps:.2f} ms per step (child processes)")
    print(f"rollout_throughput_fraction: {fraction:.3f}")


if __name__ == "__main__":
    main()
