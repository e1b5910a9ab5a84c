"""`dry_run=true` prints the plan of the paper recipes without running anything; the plan's numbers
follow the config."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stsc.config import EvalModelConfig, LLMConfig, PolicyConfig, RootConfig, TopicsConfig, TopicSeed
from stsc.evaluation.mlgym_tasks import MLGYM_TASKS
from stsc.plan import Assumptions, StagePlan, make_plan, topic_expansion_calls
from stsc.synth.topics import run_topics
from tests.fakes.openai_server import FakeOpenAIServer
from tests.hub.stages import make_ctx

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("experiment", ["paper_qwen3_4b", "paper_qwen3_8b"])
def test_a_paper_recipe_dry_run_prints_stages_items_calls_tokens_and_usd(
    tmp_path: Path, experiment: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OPENAI_API_KEY", None)  # a plan needs no credentials
    proc = subprocess.run([sys.executable, "-m", "stsc.cli", f"experiment={experiment}", "dry_run=true", f"root={tmp_path}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {
        line.split()[0]: line for line in proc.stdout.splitlines() if line and line.split()[0].isidentifier()
    }
    for stage in STAGES[:-1]:  # every stage but the report
        assert stage in lines, proc.stdout
    assert "openai/gpt-5" in lines["rollout"] and "x 256 trajectories" in lines["rollout"]
    rollout_calls = int(lines["rollout"].split()[3].replace(",", ""))
    assert rollout_calls > 1_000_000  # ~hundreds of tasks x 256 trajectories x ~40 steps
    assert "estimated total: $" in proc.stdout
    assert not (tmp_path / "mlruns" / "store").exists()  # nothing ran


def test_a_sweep_dry_run_counts_each_shared_stage_key_once(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OPENAI_API_KEY", None)
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "stsc.cli", "-m", "experiment=paper_qwen3_4b", "dry_run=true", f"root={tmp_path}",
           "sft.learning_rate=1e-5,2e-5", "force=[rollout]", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plans = [p for p in proc.stdout.split("Dry run: nothing will be executed.")[1:]]
    assert len(plans) == 2, proc.stdout

    def status(plan: str) -> dict[str, str]:
        rows = [line.split() for line in plan.splitlines() if line[:1].isalpha()]
        return {row[0]: row[1] for row in rows if row[1] in ("run", "cached", "shared")}

    first, second = status(plans[0]), status(plans[1])
    upstream = ("topics", "propose", "verify", "generate", "validate", "rollout", "curate")
    assert all(first[s] == "run" for s in first), plans[0]
    assert [second[s] for s in upstream] == ["shared"] * len(upstream)  # the forced rollout too
    assert [second[s] for s in ("sft", "evaluate", "report")] == ["run"] * 3
    assert "shared: run by an earlier job" in plans[1] and "shared:" not in plans[0]
    totals = [float(re.search(r"estimated total: \$([\d,.]+)", p).group(1).replace(",", "")) for p in plans]
    assert totals[1] == 0.0 < totals[0]  # the second job's own stages call no priced model


# the first stage each ablation's factor reaches: its arms share everything upstream of it
ABLATION_STAGE = {
    "ablate_no_hub": "verify",
    "ablate_no_self_debug": "validate",
    "ablate_no_success_filter": "curate",
    "ablate_no_truncation": "curate",
    "ablate_teacher": "rollout",
    "ablate_task_scaling": "curate",
}
STAGES = [
    "topics",
    "propose",
    "verify",
    "generate",
    "validate",
    "rollout",
    "curate",
    "sft",
    "evaluate",
    "report",
]


def test_every_ablation_recipe_has_an_expected_first_stage() -> None:
    assert set(ABLATION_STAGE) == {p.stem for p in (REPO / "conf" / "experiment").glob("ablate_*.yaml")}


@pytest.mark.parametrize("experiment", sorted(ABLATION_STAGE))
def test_an_ablation_sweep_dry_run_shares_every_stage_upstream_of_its_factor(
    tmp_path: Path, experiment: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OPENAI_API_KEY", None)
    cmd = [sys.executable, "-m", "stsc.cli", "-m", f"experiment={experiment}", "dry_run=true", f"root={tmp_path}",
           f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plans = proc.stdout.split("Dry run: nothing will be executed.")[1:]
    assert len(plans) >= 2, proc.stdout  # one job per arm
    first = STAGES.index(ABLATION_STAGE[experiment])
    for plan in plans[1:]:
        rows = [line.split() for line in plan.splitlines() if line[:1].isalpha()]
        status = {row[0]: row[1] for row in rows if row[1] in ("run", "cached", "shared")}
        assert [status[s] for s in STAGES] == ["shared"] * first + ["run"] * (len(STAGES) - first), plan
    assert not (tmp_path / "mlruns" / "store").exists()


# -- estimates computed from the config --------------------------------------------------------------


def _unit_cfg(tmp_path: Path) -> RootConfig:
    cfg = RootConfig(root=str(tmp_path))
    cfg.topics = TopicsConfig(
        n=30,
        areas={"tabular": 1.0, "graphs": 1.0},  # quotas 15 + 15
        seeds=[
            TopicSeed("tabular", "Wine quality prediction", "Predict the quality score of wines."),
            TopicSeed("tabular", "Crop yield estimation", "Estimate crop yields from field data."),
        ],
        expand_with_llm=True,
        batch_size=5,
        max_llm_calls=100,
        llm=LLMConfig(model="openai/fake-model", input_cost_per_token=1e-6, output_cost_per_token=2e-6),
    )
    return cfg


def _stages(cfg: RootConfig) -> dict[str, StagePlan]:
    return {s.name: s for s in make_plan(cfg).stages}


def test_topic_calls_follow_batch_size_per_area(tmp_path: Path) -> None:
    cfg = _unit_cfg(tmp_path)
    topics = _stages(cfg)["topics"]
    # tabular misses 13 (ceil(13/5) = 3 calls), graphs 15 (3 calls); "20 per call" would say 2
    assert topic_expansion_calls(cfg.topics) == 6
    assert topics.calls == 6
    assert topics.prompt_tokens == 6 * Assumptions().topic_call[0]
    assert "5 topics per call" in topics.note and "at most 100 calls" in topics.note


def test_topic_calls_stop_at_the_call_cap(tmp_path: Path) -> None:
    cfg = _unit_cfg(tmp_path)
    cfg.topics.max_llm_calls = 4
    assert _stages(cfg)["topics"].calls == 4
    cfg.topics.expand_with_llm = False
    assert _stages(cfg)["topics"].calls == 0


def _fresh_topics(messages: list[dict]) -> str:
    """Fake model: exactly the requested number of new, distinct topics."""
    prompt = messages[-1]["content"]
    area = re.search(r'in the area "([^"]+)"', prompt).group(1)
    count = int(re.search(r"Propose (\d+) new", prompt).group(1))
    drafts = []
    for _ in range(count):
        _fresh_topics.n += 1
        drafts.append({"title": f"{area} problem {_fresh_topics.n}", "description": f"Fresh {area} topic."})
    return json.dumps({"topics": drafts})


@pytest.mark.parametrize("batch_size,max_llm_calls", [(5, 100), (4, 100), (10, 100), (5, 3)])
def test_topic_calls_match_what_the_stage_makes(
    tmp_path: Path, openai_server: FakeOpenAIServer, batch_size: int, max_llm_calls: int
) -> None:
    cfg = _unit_cfg(tmp_path)
    cfg.topics.batch_size, cfg.topics.max_llm_calls = batch_size, max_llm_calls
    cfg.topics.llm.api_base, cfg.topics.llm.max_retries = openai_server.base_url, 0
    _fresh_topics.n = 0
    openai_server.responder = _fresh_topics
    run_topics(cfg, make_ctx(tmp_path, "topics"))
    assert len(openai_server.chat_requests) == topic_expansion_calls(cfg.topics)


def test_evaluate_counts_the_listed_tasks(tmp_path: Path) -> None:
    cfg = _unit_cfg(tmp_path)
    cfg.eval.suite, cfg.eval.runs_per_task = "mlgym", 4
    cfg.eval.tasks = ["3SATTime", "blotto"]
    evaluate = _stages(cfg)["evaluate"]
    assert evaluate.items == 2 * 2 * 4  # base + sft students x 2 tasks x 4 runs (13 tasks gave 104)
    assert "2 tasks" in evaluate.note
    cfg.eval.suite = "library"
    assert _stages(cfg)["evaluate"].items == 2 * 2 * 4


def test_evaluate_defaults_to_every_task_of_the_suite(tmp_path: Path) -> None:
    cfg = _unit_cfg(tmp_path)
    cfg.eval.suite, cfg.eval.runs_per_task = "mlgym", 3
    assert _stages(cfg)["evaluate"].items == 2 * len(MLGYM_TASKS) * 3 == 78


def test_rollout_runs_every_training_task_whatever_the_curate_task_fraction(tmp_path: Path) -> None:
    cfg = _unit_cfg(tmp_path)
    cfg.teacher = PolicyConfig(kind="llm", name="t", llm=_priced("openai/teacher"))
    cfg.split.heldout_fraction, cfg.rollout.per_task = 0.3, 2
    full = _stages(cfg)
    cfg.curate.task_fraction = 0.5
    half = _stages(cfg)
    # the rollout key ignores curate.task_fraction: the same episodes run either way
    assert half["rollout"].items == full["rollout"].items > 0
    assert half["rollout"].calls == full["rollout"].calls > 0
    assert half["rollout"].usd == pytest.approx(full["rollout"].usd)
    n_train = full["rollout"].items // 2
    kept = int(math.ceil(0.5 * n_train) * 2 * Assumptions().kept_fraction)
    assert half["curate"].items == half["sft"].items == kept < full["curate"].items


def _priced(model: str, cost_in: float = 1e-6, cost_out: float = 4e-6) -> LLMConfig:
    return LLMConfig(model=model, input_cost_per_token=cost_in, output_cost_per_token=cost_out)


def test_evaluate_prices_llm_methods_like_the_rollout_teacher(tmp_path: Path) -> None:
    cfg = _unit_cfg(tmp_path)
    cfg.eval.suite, cfg.eval.tasks, cfg.eval.runs_per_task, cfg.eval.max_steps = "mlgym", ["blotto"], 4, 50
    gpt5 = _priced("openai/gpt-5", 1.25e-6, 1e-5)
    cfg.eval.models = [
        EvalModelConfig("gpt5", PolicyConfig(kind="llm", name="gpt5", llm=gpt5)),
        EvalModelConfig("scripted", PolicyConfig(kind="scripted")),
    ]
    a = Assumptions()
    evaluate = _stages(cfg)["evaluate"]
    assert evaluate.items == 4 * 1 * 4  # gpt5, scripted, base, sft x 1 task x 4 runs
    calls = int(4 * 50 * a.steps_per_episode_mean)  # only gpt5 calls a model (students: transformers)
    assert evaluate.calls == calls
    assert evaluate.prompt_tokens == calls * a.prompt_tokens_per_step
    assert evaluate.completion_tokens == calls * a.completion_tokens_per_step
    expected = calls * (a.prompt_tokens_per_step * 1.25e-6 + a.completion_tokens_per_step * 1e-5)
    assert evaluate.usd == pytest.approx(expected) and expected > 0
    assert evaluate.model == "openai/gpt-5"
    # vLLM-served students make calls at no charge
    cfg.eval.student_backend = "vllm"
    served = _stages(cfg)["evaluate"]
    assert served.calls == 3 * calls and served.usd == pytest.approx(expected)
    # an unpriced model makes the estimate unknown, local methods alone cost nothing
    cfg.eval.models[0].policy.llm = LLMConfig(model="openai/no-such-model-xyz")
    assert _stages(cfg)["evaluate"].usd is None
    cfg.eval.models, cfg.eval.student_backend = [], "transformers"
    local = _stages(cfg)["evaluate"]
    assert (local.calls, local.usd) == (0, 0.0)
