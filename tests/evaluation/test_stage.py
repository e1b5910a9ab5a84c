"""The evaluate stage end to end: real template tasks validated in local sandboxes, offline and
local-model methods, MLGym-layout runs, AUP tables, the plot, resume and infrastructure retries."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from stsc.config import EvalModelConfig, PolicyConfig, RootConfig, SandboxConfig, SplitConfig
from stsc.evaluation.stage import run_evaluate
from stsc.store import StageContext, StageReport
from stsc.synth.library import LibrarySplit
from tests.fakes.openai_server import FakeOpenAIServer

RUN_SUFFIX = "__default__t-0.00__p-0.95__c-4.00__install-0_run_"
OUTPUT_FILES = ["aup.csv", "best_scores.csv", "last_scores.csv", "aup.json", "performance_profile.png"]


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A validate stage folder: template tasks on iris and diabetes (two each), validated in local
    sandboxes (so each has a measured baseline score). Split 50/50, two tasks are held out."""
    from stsc.synth.generate import run_generate
    from stsc.synth.validate import run_validate
    from tests.synth.conftest import TABLES, make_ctx, make_record, root_config, write_verify_output

    root = tmp_path_factory.mktemp("eval-library")
    records = [
        make_record(d, load(), t, root / "tables", i) for i, (d, (load, t)) in enumerate(TABLES.items())
    ]
    generate = make_ctx(root, "generate", {"verify": write_verify_output(root, records)})
    run_generate(root_config(root), generate)
    validate = make_ctx(root, "validate", {"generate": generate.out_dir})
    run_validate(root_config(root), validate)
    assert validate.report.items_out == 4
    return validate.out_dir


def method(name: str, kind: str, **policy: Any) -> EvalModelConfig:
    return EvalModelConfig(name=name, policy=PolicyConfig(kind=kind, name=kind, **policy))


def eval_config(root: Path, *models: EvalModelConfig, **fields: Any) -> RootConfig:
    cfg = RootConfig(root=str(root), store=str(root / "store"))
    cfg.sandbox = SandboxConfig(backend="local")
    cfg.split = SplitConfig(heldout_fraction=0.5, seed=0)
    settings: dict[str, Any] = {"models": list(models), "include_base_student": False, "include_sft_student": False,
                                "runs_per_task": 1, "max_steps": 20, "bootstrap_samples": 50, "concurrency": 2,
                                "infra_backoff_s": 0.0}  # fmt: skip
    settings.update(fields)
    for key, value in settings.items():
        setattr(cfg.eval, key, value)
    return cfg


def stage_context(root: Path, inputs: dict[str, Path], key: str = "evaluate-key") -> StageContext:
    out = root / "store" / "evaluate" / key
    out.mkdir(parents=True, exist_ok=True)
    return StageContext(
        name="evaluate", key=key, out_dir=out, inputs=inputs, store=root / "store", seed=0,
        report=StageReport(stage="evaluate"),
    )  # fmt: skip


def run_dirs(out: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted((out / "runs").iterdir()) if p.is_dir()}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def evaluated(library: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[RootConfig, StageContext]:
    """The stage run once: submit_baseline and a scripted researcher on the held-out tasks."""
    root = tmp_path_factory.mktemp("evaluate")
    cfg = eval_config(
        root, method("submit_baseline", "submit_baseline"), method("scripted", "scripted", attempts=1)
    )
    ctx = stage_context(root, {"validate": library})
    run_evaluate(cfg, ctx)
    return cfg, ctx


def test_every_method_runs_every_held_out_task_in_mlgym_run_folders(library: Path, evaluated) -> None:
    _, ctx = evaluated
    heldout = LibrarySplit.load(ctx.out_dir / "split.json").heldout
    assert len(heldout) == 2
    names = run_dirs(ctx.out_dir)
    assert sorted(names) == sorted(
        f"{m}__{t}{RUN_SUFFIX}0" for m in ("submit_baseline", "scripted") for t in heldout
    )
    for name, folder in names.items():
        task = name.split("__")[1]
        metric = json.loads((library / "library" / task / "meta.json").read_text())["metric"]
        results = json.loads((folder / "results.json").read_text())
        assert set(results) == {"agent", "baseline"}
        assert results["agent"] and all(isinstance(e, dict) and metric in e for e in results["agent"])
        assert set(results["baseline"]) >= {metric}
        meta = json.loads((folder / "stsc.json").read_text())
        assert (
            meta["task_id"] == task and meta["exit_status"] == "submitted" and meta["config_key"] == ctx.key
        )
        traj = json.loads((folder / f"{task}.traj").read_text())
        assert {"environment", "trajectory", "history", "info"} <= set(traj)
    seeds = {json.loads((f / "stsc.json").read_text())["seed"] for f in names.values()}
    assert len(seeds) == 2  # episode k of a task has one seed for every method


def test_scores_tables_plot_and_artifacts_come_from_the_runs(evaluated) -> None:
    cfg, ctx = evaluated
    out = ctx.out_dir
    assert [p.name for p in ctx.artifacts] == [*OUTPUT_FILES, "suite.json", "split.json"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in ctx.artifacts)
    assert (out / "performance_profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    aup = {r["model"]: r for r in read_csv(out / "aup.csv")}
    assert list(aup) == ["submit_baseline", "scripted", "baseline"] and "best_aup_lo" in aup["scripted"]
    best = {r["model"]: r for r in read_csv(out / "best_scores.csv")}
    for task, score in best["baseline"].items():
        if task != "model":  # submitting the baseline scores the baseline
            assert float(best["submit_baseline"][task]) == pytest.approx(float(score))
    assert aup["submit_baseline"]["best_aup"] == aup["baseline"]["best_aup"]
    assert ctx.tables["aup"][0]["model"] == "submit_baseline" and len(ctx.tables["scores_best"]) == 3
    counts = {(r["model"], r["exit_status"]): r["count"] for r in ctx.tables["exit_status_counts"]}
    assert counts == {("scripted", "submitted"): 2, ("submit_baseline", "submitted"): 2}
    metrics = ctx.report.metrics
    assert metrics["aup_best.scripted"] == float(aup["scripted"]["best_aup"])
    assert metrics["aup_last.baseline"] == float(aup["baseline"]["last_aup"])
    for which in ("best", "last"):  # the intervals too, so that runs compare in the MLflow table
        assert metrics[f"aup_{which}_lo.scripted"] == float(aup["scripted"][f"{which}_aup_lo"])
        assert metrics[f"aup_{which}_hi.scripted"] == float(aup["scripted"][f"{which}_aup_hi"])
    assert (ctx.report.items_in, ctx.report.items_out, sum(ctx.report.drops.values())) == (4, 4, 0)
    assert metrics["episodes_scored"] == 4 and metrics["tasks"] == 2 and metrics["methods"] == 2
    summary = json.loads((out / "aup.json").read_text())
    assert summary["pool"] == ["submit_baseline", "scripted"] and summary["bootstrap_samples"] == 50


def test_stsc_aup_reads_the_runs_folder(library: Path, evaluated, tmp_path: Path) -> None:
    from stsc.evaluation.cli import main

    _, ctx = evaluated
    out = tmp_path / "aup"
    code = main([str(ctx.out_dir / "runs"), "--task-meta", str(library / "library"), "--models",
                 "submit_baseline,scripted", "-o", str(out), "--bootstrap", "0", "--no-plot"])  # fmt: skip
    assert code == 0
    ours = [(r["model"], r["best_aup"], r["last_aup"]) for r in read_csv(ctx.out_dir / "aup.csv")]
    assert [(r["model"], r["best_aup"], r["last_aup"]) for r in read_csv(out / "aup.csv")] == ours


def test_a_rerun_skips_finished_runs_and_reruns_an_interrupted_one(evaluated, tmp_path: Path) -> None:
    cfg, first = evaluated
    ctx = stage_context(tmp_path, first.inputs)
    shutil.copytree(first.out_dir, ctx.out_dir, dirs_exist_ok=True)
    before = {n: (p / "stsc.json").read_bytes() for n, p in run_dirs(ctx.out_dir).items()}
    interrupted = next(n for n in before if n.startswith("submit_baseline__"))
    (ctx.out_dir / "runs" / interrupted / "stsc.json").unlink()
    run_evaluate(cfg, ctx)
    after = {n: (p / "stsc.json").read_bytes() for n, p in run_dirs(ctx.out_dir).items()}
    assert set(after) == set(before)
    assert {n for n in after if after[n] != before[n]} <= {interrupted}
    (moved,) = list((ctx.out_dir / "failed_attempts" / interrupted).iterdir())
    assert json.loads((moved / "failure.json").read_text())["reason"] == "interrupted"
    assert ctx.report.items_out == 4 and read_csv(ctx.out_dir / "aup.csv") == read_csv(
        first.out_dir / "aup.csv"
    )


def test_students_on_the_transformers_backend_end_with_recorded_statuses(
    library: Path, tmp_path: Path
) -> None:
    from stsc.synth.library import list_tasks, split_library
    from stsc.train.students import materialize_student

    task = split_library(list_tasks(library), 0.5, 0).heldout[0]
    cfg = eval_config(tmp_path, include_base_student=True, include_sft_student=True, max_steps=2,
                      student_max_tokens=16, bootstrap_samples=0, tasks=[task])  # fmt: skip
    cfg.student.name, cfg.student.source = "tiny", "tiny"
    sft = tmp_path / "sft"
    shutil.copytree(materialize_student(cfg.student, tmp_path / "store" / "students"), sft / "model")
    ctx = stage_context(tmp_path, {"validate": library, "sft": sft})
    run_evaluate(cfg, ctx)
    runs = run_dirs(ctx.out_dir)
    assert sorted(runs) == [f"base__{task}{RUN_SUFFIX}0", f"sft__{task}{RUN_SUFFIX}0"]
    for folder in runs.values():
        meta = json.loads((folder / "stsc.json").read_text())
        assert meta["exit_status"] and meta["api_calls"] >= 1 and meta["prompt_tokens"] > 0
    assert [r["model"] for r in ctx.tables["aup"]] == ["base", "sft", "baseline"]
    assert ctx.report.items_out == 2


def test_students_behind_vllm_servers_answer_under_their_served_names(library: Path, tmp_path: Path) -> None:
    from tests.rollout.conftest import agent_turn

    sft = tmp_path / "sft" / "model"
    sft.mkdir(parents=True)
    (sft / "config.json").write_text("{}")
    with FakeOpenAIServer(model="sft", responder=agent_turn) as tuned, \
            FakeOpenAIServer(model="base", responder=agent_turn) as base:  # fmt: skip
        cfg = eval_config(tmp_path, include_base_student=True, include_sft_student=True, student_backend="vllm",
                          vllm_api_base=tuned.base_url, vllm_base_api_base=base.base_url, bootstrap_samples=0)  # fmt: skip
        cfg.student.source, cfg.student.model_id = "hub", "Qwen/Qwen3-4B"
        ctx = stage_context(tmp_path, {"validate": library, "sft": tmp_path / "sft"})
        run_evaluate(cfg, ctx)
        asked = {s.model: {r.params.get("model") for r in s.chat_requests} for s in (tuned, base)}
    assert asked == {"sft": {"sft"}, "base": {"base"}}
    statuses = {(r["model"], r["exit_status"]): r["count"] for r in ctx.tables["exit_status_counts"]}
    assert statuses == {("base", "submitted"): 2, ("sft", "submitted"): 2}
    [paired] = ctx.tables["paired"]  # same replies, same scores: no difference on any task
    assert json.loads((ctx.out_dir / "paired.json").read_text()) == paired
    assert (paired["model"], paired["reference"], paired["best_delta"], paired["ties"]) == (
        "sft",
        "base",
        0,
        2,
    )
    assert ctx.report.metrics["aup_delta_best.sft_vs_base"] == 0


def test_infrastructure_failures_are_retried_then_dropped(library: Path, tmp_path: Path) -> None:
    from tests.rollout.conftest import FaultyFactory

    cfg = eval_config(tmp_path, method("submit_baseline", "submit_baseline"), max_infra_retries=1,
                      bootstrap_samples=0, concurrency=1)  # fmt: skip
    ctx = stage_context(tmp_path, {"validate": library})
    factory = FaultyFactory(refuse=lambda i: i in (0, 2, 3))  # task 1 fails once, task 2 twice
    run_evaluate(cfg, ctx, sandbox_factory=factory)
    assert ctx.report.items_out == 1 and dict(ctx.report.drops) == {"infra_failed_after_retries": 1}
    rows = ctx.tables["episodes"]
    assert sorted((r["outcome"], r["attempts"]) for r in rows) == [
        ("finished", 2),
        ("infra_failed_after_retries", 2),
    ]
    counts = {r["exit_status"]: r["count"] for r in ctx.tables["exit_status_counts"]}
    assert counts == {"submitted": 1, "infra_failed_after_retries": 1}
    best = {r["model"]: r for r in read_csv(ctx.out_dir / "best_scores.csv")}
    failed_task = next(r["task"] for r in rows if r["outcome"] != "finished")
    assert best["submit_baseline"][failed_task] == ""  # missing, so penalised in the profile


def test_the_mlgym_suite_runs_imported_tasks(tmp_path: Path) -> None:
    from stsc.agent.task import load_task
    from tests.evaluation.test_suites import make_mlgym_checkout

    checkout = make_mlgym_checkout(tmp_path / "MLGym")
    cfg = eval_config(tmp_path, method("submit_baseline", "submit_baseline"), suite="mlgym",
                      mlgym_root=str(checkout), tasks=["battleOfSexes", "regressionKaggleHousePrice"],
                      bootstrap_samples=0)  # fmt: skip
    ctx = stage_context(tmp_path, {})
    run_evaluate(cfg, ctx)
    runs = run_dirs(ctx.out_dir)
    house = json.loads(
        (runs[f"submit_baseline__regressionKaggleHousePrice{RUN_SUFFIX}0"] / "stsc.json").read_text()
    )
    assert house["exit_status"] == "submitted" and 0.5 < house["best_score"] < 1.0
    game_dir = ctx.out_dir / "mlgym_tasks" / "battleOfSexes"
    game = json.loads((runs[f"submit_baseline__battleOfSexes{RUN_SUFFIX}0"] / "stsc.json").read_text())
    artefact = json.loads((game_dir / "meta.json").read_text())["submission_file"]
    # a game task's artefact is the strategy the agent edits (not the opponent in target.py)
    assert artefact == "strategy.py" and load_task(game_dir).submission_file == artefact
    assert game["exit_status"] == "submitted" and game["best_score"] == 1.0
    assert [r["model"] for r in ctx.tables["aup"]] == ["submit_baseline", "baseline"]
    assert json.loads((ctx.out_dir / "suite.json").read_text())["suite"] == "mlgym"
    assert not (ctx.out_dir / "split.json").exists() and "split.json" not in [p.name for p in ctx.artifacts]


def test_a_missing_api_key_stops_the_stage_before_any_episode(
    library: Path, tmp_path: Path, monkeypatch
) -> None:
    from stsc.config import LLMConfig
    from stsc.errors import MissingAPIKeyError

    monkeypatch.delenv("STSC_TEST_EVAL_KEY", raising=False)
    api = method("api-model", "llm", llm=LLMConfig(model="openai/gpt-4o", api_key_env="STSC_TEST_EVAL_KEY"))
    cfg = eval_config(tmp_path, method("submit_baseline", "submit_baseline"), api)
    ctx = stage_context(tmp_path, {"validate": library})
    with pytest.raises(MissingAPIKeyError, match="STSC_TEST_EVAL_KEY"):
        run_evaluate(cfg, ctx)
    assert run_dirs(ctx.out_dir) == {}


def test_a_model_methods_own_budget_holds_across_resumed_runs(
    library: Path, openai_server, tmp_path: Path
) -> None:
    from stsc.config import LLMConfig
    from tests.rollout.conftest import agent_turn

    openai_server.responder = agent_turn
    llm = LLMConfig(model="openai/fake-model", api_base=openai_server.base_url, cache=False, max_retries=0,
                    input_cost_per_token=1e-4, output_cost_per_token=1e-3)  # fmt: skip
    first = stage_context(tmp_path / "first", {"validate": library})
    run_evaluate(eval_config(tmp_path / "first", method("api-model", "llm", llm=llm)), first)
    spent = sum(
        json.loads((p / "stsc.json").read_text())["cost_usd"] for p in run_dirs(first.out_dir).values()
    )
    assert spent > 0 and len(run_dirs(first.out_dir)) == 2

    # The stage is killed before its last episode finished; the method's cap is what it had spent.
    again = stage_context(tmp_path / "again", {"validate": library})
    shutil.copytree(first.out_dir, again.out_dir, dirs_exist_ok=True)
    interrupted = sorted(run_dirs(again.out_dir))[-1]
    (again.out_dir / "runs" / interrupted / "stsc.json").unlink()
    capped = dataclasses.replace(llm, budget_usd=spent)
    requests = len(openai_server.chat_requests)
    run_evaluate(eval_config(tmp_path / "again", method("api-model", "llm", llm=capped)), again)
    assert len(openai_server.chat_requests) == requests  # nothing left of the cap: no call is sent
    assert again.report.drops == {"budget_exhausted": 1}
