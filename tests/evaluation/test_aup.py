"""Performance ratios, profiles and AUP with MLGym's semantics (reference/mlgym.md §6)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from stsc.errors import ConfigError
from stsc.evaluation.aup import (
    BASELINE,
    ScoreTable,
    aup_scores,
    compute_aup,
    max_tau_for,
    performance_ratios,
    profile,
    run_score,
    score_tables,
)
from stsc.evaluation.mlgym_tasks import MLGYM_TASKS, TaskScoring
from stsc.evaluation.runs import load_runs, read_run

FIVE = {
    "o1": "metagen-gpt-o1",
    "gemini": "metagen-gemini-15-pro",
    "gpt4o": "metagen-gpt4o2",
    "claude": "metagen-claude-35-sonnet-new",
    "llama": "metagen-llama3-405b-tools",
}
ACC = TaskScoring("cls", "acc", True, None)
LOSS = TaskScoring("lm", "loss", False, None)


@pytest.fixture(scope="module")
def five_model_result(mlgym_runs_dir: Path):
    runs = load_runs(mlgym_runs_dir, models=FIVE.values())
    return compute_aup(runs, MLGYM_TASKS, list(FIVE.values()))


def _ratio(result, short: str, task: str, table: str = "best") -> float:
    ratios = getattr(result, f"{table}_ratios").ratios
    return round(ratios.get(FIVE.get(short, short), task), 3)


def test_fineweb_worked_example_ratios_and_missing_llama_penalty(five_model_result) -> None:
    task = "languageModelingFineWeb"
    assert round(five_model_result.best_scores.get(FIVE["o1"], task), 3) == 3.966
    assert five_model_result.best_scores.get(FIVE["llama"], task) is None
    got = [_ratio(five_model_result, m, task) for m in ("o1", "gemini", "gpt4o", "claude", BASELINE, "llama")]
    assert got == [1.0, 1.05, 1.099, 1.128, 1.178, 1.237]
    assert five_model_result.best_ratios.caps[task] == 2


def test_blotto_worked_example_infeasible_negative_baseline(five_model_result) -> None:
    task = "blotto"
    got = [_ratio(five_model_result, m, task) for m in ("claude", "gemini", "o1", "gpt4o", "llama", BASELINE)]
    assert got == [1.0, 2.311, 2.32, 12.275, 13.401, 14.071]
    assert round(five_model_result.best_ratios.worst[task], 3) == 13.401
    assert five_model_result.best_ratios.caps[task] == 15


def test_fineweb_example_from_rounded_scores_table() -> None:
    scores = {"o1": 3.966, "gemini": 4.166, "gpt4o": 4.361, "claude": 4.476, "llama": None, BASELINE: 4.673}
    table = ScoreTable.from_mapping({m: {"lm": s} for m, s in scores.items()}, list(scores), ["lm"])
    ratios = performance_ratios(table, {"lm": False})
    assert ratios.ratios.get("llama", "lm") == pytest.approx(4.673 / 3.966 * 1.05)
    assert ratios.ratios.get("gemini", "lm") == pytest.approx(4.166 / 3.966)
    assert ratios.ratios.get("o1", "lm") == 1.0


def test_method_best_on_every_task_gets_aup_equal_to_max_tau(write_run, tmp_path: Path) -> None:
    scorings = {"cls": ACC, "lm": LOSS}
    write_run("star", "cls", agent=[{"acc": 0.9}], baseline={"acc": 0.5})
    write_run("star", "lm", agent=[{"loss": 1.0}], baseline={"loss": 3.0})
    write_run("weak", "cls", agent=[{"acc": 0.6}], baseline={"acc": 0.5})
    write_run("weak", "lm", agent=[{"loss": 2.0}], baseline={"loss": 3.0})
    result = compute_aup(load_runs(tmp_path / "runs"), scorings, ["star", "weak"])
    assert result.best_aup["star"] == result.last_aup["star"] == result.max_tau
    assert result.best_aup["weak"] < result.max_tau
    assert result.best_aup[BASELINE] < result.best_aup["weak"]


def test_best_skips_entries_without_the_metric_and_last_is_the_last_entrys(write_run) -> None:
    run = read_run(write_run("m", "cls", agent=[{"acc": 0.7}, {"other": 5.0}, {"acc": 0.9}, {"acc": 0.8}]))
    assert (run_score(run, ACC).best, run_score(run, ACC).last) == (0.9, 0.8)
    # a final submission that printed NaN (training diverged) has no last score, not an earlier one
    diverged = read_run(write_run("m", "cls", 1, agent=[{"acc": 0.7}, {"acc": float("nan")}]))
    assert (run_score(diverged, ACC).best, run_score(diverged, ACC).last) == (0.7, None)
    low = read_run(write_run("m", "lm", agent=[{"loss": 2.0}, {"loss": 1.5}, {"loss": 1.8}]))
    assert (run_score(low, LOSS).best, run_score(low, LOSS).last) == (1.5, 1.8)


def test_empty_runs_are_ignored_and_last_at_k_is_the_best_last_submission(write_run, tmp_path: Path) -> None:
    write_run("m", "cls", 0, agent=[{"acc": 0.9}, {"acc": 0.6}], baseline={"acc": 0.5})
    write_run("m", "cls", 1, agent=[{"acc": 0.7}], baseline={"acc": 0.5})
    write_run("m", "cls", 2, agent=[])
    write_run("m", "cls", 3, agent=None)
    write_run("m", "cls", 4, results=False)
    best, last = score_tables(load_runs(tmp_path / "runs"), {"cls": ACC}, ["m"], ["cls"])
    assert best.get("m", "cls") == 0.9
    assert last.get("m", "cls") == 0.7
    assert best.get(BASELINE, "cls") == 0.5


def test_baseline_comes_from_the_first_results_dict_holding_the_metric(write_run, tmp_path: Path) -> None:
    scoring = {"car": TaskScoring("car", "Reward Mean", True, 99.0)}
    write_run("a", "car", 0, agent=[{"Reward Mean": 40.0}], baseline={"Reward": -0.003})
    write_run("b", "car", 0, agent=[{"Reward Mean": 30.0}], baseline={"Reward Mean": 33.8, "Reward Std": 1.0})
    best, _ = score_tables(load_runs(tmp_path / "runs"), scoring, ["a", "b"], ["car"])
    assert best.get(BASELINE, "car") == 33.8


def test_baseline_falls_back_to_task_scoring_then_missing(write_run, tmp_path: Path) -> None:
    scorings = {"cls": TaskScoring("cls", "acc", True, 0.4), "lm": LOSS}
    write_run("m", "cls", agent=[{"acc": 0.8}])
    write_run("m", "lm", agent=[{"loss": 1.0}])
    result = compute_aup(load_runs(tmp_path / "runs"), scorings, ["m"])
    assert result.best_scores.get(BASELINE, "cls") == 0.4
    assert result.best_scores.get(BASELINE, "lm") is None
    assert result.best_ratios.ratios.get(BASELINE, "cls") == pytest.approx(2.0)
    assert result.best_ratios.ratios.get(BASELINE, "lm") == pytest.approx(1.05)


def test_minimise_task_model_worse_than_baseline_is_penalised() -> None:
    table = ScoreTable.from_mapping(
        {"a": {"lm": 2.0}, "b": {"lm": 5.0}, BASELINE: {"lm": 4.0}}, ["a", "b", BASELINE], ["lm"]
    )
    ratios = performance_ratios(table, {"lm": False})
    assert ratios.ratios.get(BASELINE, "lm") == 2.0
    assert ratios.worst["lm"] == 2.0
    assert ratios.ratios.get("b", "lm") == pytest.approx(2.1)
    assert ratios.caps["lm"] == 3


def test_maximise_negative_scores_are_infeasible_even_above_baseline() -> None:
    methods = ["a", "b", BASELINE]
    table = ScoreTable.from_mapping(
        {"a": {"g": 0.5}, "b": {"g": -0.1}, BASELINE: {"g": -0.2}}, methods, ["g"]
    )
    ratios = performance_ratios(table, {"g": True})
    assert ratios.worst["g"] == 1.0
    assert ratios.ratios.get("b", "g") == ratios.ratios.get(BASELINE, "g") == pytest.approx(1.05)


def test_no_feasible_method_gives_everyone_the_same_penalty() -> None:
    table = ScoreTable.from_mapping({"a": {"g": -1.0}, BASELINE: {"g": -0.5}}, ["a", BASELINE], ["g"])
    ratios = performance_ratios(table, {"g": True})
    assert ratios.ratios.get("a", "g") == ratios.ratios.get(BASELINE, "g") == pytest.approx(1.05)
    assert ratios.caps["g"] == 2


def test_zero_scores_do_not_divide_by_zero() -> None:
    methods = ["a", "b", BASELINE]
    maxi = ScoreTable.from_mapping({"a": {"g": 0.5}, "b": {"g": 0.0}, BASELINE: {"g": 0.0}}, methods, ["g"])
    r = performance_ratios(maxi, {"g": True})
    assert r.ratios.get("a", "g") == 1.0
    assert r.ratios.get("b", "g") == pytest.approx(1.05)
    mini = ScoreTable.from_mapping({"a": {"t": 0.0}, "b": {"t": 2.0}, BASELINE: {"t": 4.0}}, methods, ["t"])
    r = performance_ratios(mini, {"t": False})
    assert r.ratios.get("a", "t") == 1.0
    assert all(math.isfinite(v) for row in r.ratios.values for v in row)


def test_missing_model_is_penalised_on_every_task_and_logged(write_run, tmp_path: Path, caplog) -> None:
    write_run("m", "cls", agent=[{"acc": 0.8}], baseline={"acc": 0.5})
    write_run("m", "lm", agent=[{"loss": 1.0}], baseline={"loss": 2.0})
    with caplog.at_level(logging.WARNING):
        result = compute_aup(load_runs(tmp_path / "runs"), {"cls": ACC, "lm": LOSS}, ["m", "ghost"])
    assert "ghost" in caplog.text
    assert result.best_ratios.ratios.get("ghost", "cls") == pytest.approx(1.6 * 1.05)
    assert result.best_ratios.ratios.get("ghost", "lm") == pytest.approx(2.0 * 1.05)
    assert result.best_aup["ghost"] < result.best_aup[BASELINE] < result.best_aup["m"]


def test_max_tau_is_shared_by_both_tables(write_run, tmp_path: Path) -> None:
    write_run("a", "cls", agent=[{"acc": 0.9}, {"acc": 0.02}])
    write_run("b", "cls", agent=[{"acc": 0.85}, {"acc": 0.8}])
    result = compute_aup(load_runs(tmp_path / "runs"), {"cls": ACC}, ["a", "b"])
    assert result.best_ratios.caps["cls"] == 2
    assert result.last_ratios.caps["cls"] == math.ceil(0.8 / 0.02 * 1.05) == 42
    assert result.max_tau == 1.7
    assert result.best_aup["a"] == 1.7


@pytest.mark.parametrize(
    ("caps", "expected"), [([2], 0.4), ([15, 2], 1.2), ([10], 1.0), ([27, 14], 1.5), ([100], 2.0)]
)
def test_max_tau_rounds_up_to_a_tenth_of_a_decade(caps: list[int], expected: float) -> None:
    assert max_tau_for(caps) == expected


def test_aup_is_the_left_riemann_sum_of_the_profile() -> None:
    ratios = ScoreTable(("a", BASELINE), ("x", "y"), ((1.0, 3.0), (2.0, 1.0)))
    tau, curves = profile(ratios, 0.5)
    assert len(tau) == 500 and tau[0] == 0.0 and tau[-1] == 0.5
    expected = sum((tau[i + 1] - tau[i]) * curves["a"][i] for i in range(499))
    aups = aup_scores(ratios, 0.5)
    assert aups["a"] == round(expected, 3)
    # "a" reaches ratio 3 (log 0.477) only near the end of the grid: half the tasks for most of it.
    assert aups["a"] == pytest.approx(0.5 * 0.5 + 0.5 * (0.5 - math.log10(3)), abs=2e-3)


def test_pool_and_task_errors_say_what_to_fix(write_run, tmp_path: Path) -> None:
    write_run("m", "unknownTask", agent=[{"acc": 0.8}])
    runs = load_runs(tmp_path / "runs")
    with pytest.raises(ConfigError, match="unknownTask"):
        compute_aup(runs, MLGYM_TASKS, ["m"])
    with pytest.raises(ConfigError, match="empty"):
        compute_aup(runs, MLGYM_TASKS, [])
    with pytest.raises(ConfigError, match="reserved"):
        compute_aup(runs, {"unknownTask": ACC}, ["m", BASELINE])
    with pytest.raises(ConfigError, match="confidence"):
        compute_aup(runs, {"unknownTask": ACC}, ["m"], bootstrap=10, confidence=1.5)


def test_pool_names_with_slashes_match_folder_safe_runs(write_run, tmp_path: Path) -> None:
    write_run("Qwen--Qwen3-4B", "cls", agent=[{"acc": 0.8}], baseline={"acc": 0.5})
    result = compute_aup(load_runs(tmp_path / "runs"), {"cls": ACC}, ["Qwen/Qwen3-4B"])
    assert result.best_scores.get("Qwen/Qwen3-4B", "cls") == 0.8
    assert [r["model"] for r in result.rows()] == ["Qwen/Qwen3-4B", BASELINE]
