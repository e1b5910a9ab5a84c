"""Bootstrap confidence intervals of AUP over runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from stsc.evaluation.aup import BASELINE, aup_scores, compute_aup
from stsc.evaluation.mlgym_tasks import MLGYM_TASKS, TaskScoring
from stsc.evaluation.runs import load_runs

from .conftest import MLGYM_REPORTED_MODELS

ACC = TaskScoring("cls", "acc", True, None)
LOSS = TaskScoring("lm", "loss", False, None)
SCORINGS = {"cls": ACC, "lm": LOSS}


def _two_task_runs(write_run, root: Path, flaky_runs: int) -> list:
    """Model "steady" repeats one result; "flaky" scores once and then ``flaky_runs`` empty runs."""
    for k in range(4):
        write_run("steady", "cls", k, agent=[{"acc": 0.7}], baseline={"acc": 0.5}, root=root)
        write_run("steady", "lm", k, agent=[{"loss": 2.0}], baseline={"loss": 3.0}, root=root)
    write_run("flaky", "cls", 0, agent=[{"acc": 0.9}], baseline={"acc": 0.5}, root=root)
    write_run("flaky", "lm", 0, agent=[{"loss": 1.0}], baseline={"loss": 3.0}, root=root)
    for k in range(1, 1 + flaky_runs):
        write_run("flaky", "cls", k, agent=[], root=root)
        write_run("flaky", "lm", k, agent=None, root=root)
    return load_runs(root)


def test_identical_runs_give_intervals_collapsed_on_the_estimate(write_run, tmp_path: Path) -> None:
    runs = _two_task_runs(write_run, tmp_path / "runs", flaky_runs=0)
    result = compute_aup(runs, SCORINGS, ["steady", "flaky"], bootstrap=50)
    for method in ("steady", "flaky", BASELINE):
        assert (result.best_ci[method].lo, result.best_ci[method].hi) == (result.best_aup[method],) * 2
        assert (result.last_ci[method].lo, result.last_ci[method].hi) == (result.last_aup[method],) * 2


def test_runs_that_scored_nothing_are_resampled_too(write_run, tmp_path: Path) -> None:
    runs = _two_task_runs(write_run, tmp_path / "runs", flaky_runs=3)
    result = compute_aup(runs, SCORINGS, ["steady", "flaky"], bootstrap=400, seed=1)
    # In about a third of the resamples "flaky" draws only its empty runs and is missing everywhere;
    # resamples are measured on the point estimate's grid.
    missing = compute_aup([r for r in runs if r.model != "flaky"], SCORINGS, ["steady", "flaky"])
    missing_aup = aup_scores(missing.best_ratios.ratios, result.max_tau)["flaky"]
    assert result.best_aup["flaky"] == result.max_tau
    assert result.best_ci["flaky"].lo == missing_aup < result.best_aup["flaky"]
    assert result.best_ci["flaky"].hi == result.best_aup["flaky"]
    assert result.best_ci["steady"].hi > result.best_aup["steady"]


def test_intervals_are_reproducible_from_the_seed(write_run, tmp_path: Path) -> None:
    runs = _two_task_runs(write_run, tmp_path / "runs", flaky_runs=3)
    a = compute_aup(runs, SCORINGS, ["steady", "flaky"], bootstrap=30, seed=7, confidence=0.5)
    b = compute_aup(runs, SCORINGS, ["steady", "flaky"], bootstrap=30, seed=7, confidence=0.5)
    assert a.best_ci == b.best_ci and a.last_ci == b.last_ci
    assert [row["best_aup_lo"] for row in a.rows()] == [a.best_ci[m].lo for m in a.methods]


def test_published_results_get_ordered_intervals_for_every_method(mlgym_runs_dir: Path) -> None:
    runs = load_runs(mlgym_runs_dir)
    result = compute_aup(runs, MLGYM_TASKS, MLGYM_REPORTED_MODELS, bootstrap=100, seed=0)
    assert set(result.best_ci) == set(result.last_ci) == set(result.methods)
    for ci in (*result.best_ci.values(), *result.last_ci.values()):
        assert 0 < ci.lo <= ci.hi <= result.max_tau
    assert any(ci.hi - ci.lo > 0.01 for ci in result.best_ci.values())
    assert list(result.rows()[0]) == [
        "model",
        "best_aup",
        "last_aup",
        "best_aup_lo",
        "best_aup_hi",
        "last_aup_lo",
        "last_aup_hi",
    ]


def test_paired_comparison_resamples_tasks_and_counts_wins(write_run, tmp_path: Path) -> None:
    from stsc.evaluation.bootstrap import paired_comparison

    scorings = {f"t{i}": ACC for i in range(6)}
    for i in range(6):
        task = f"t{i}"
        write_run("sft", task, agent=[{"acc": 0.6 if i < 3 else 0.0}], baseline={"acc": 0.6}, root=tmp_path)
        write_run("base", task, agent=[{"acc": 0.0}], baseline={"acc": 0.6}, root=tmp_path)
    result = compute_aup(load_runs(tmp_path), scorings, ["sft", "base"])
    c = paired_comparison(result, "sft", "base", samples=2000, seed=3)
    assert (c.wins, c.ties, c.losses, c.tasks) == (3, 3, 0, 6)
    assert c.best_delta == round(result.best_aup["sft"] - result.best_aup["base"], 3) > 0
    # sft is never worse on a task, so no resample of tasks can make the difference negative; it is
    # zero only when all six draws land on tied tasks (probability 1/64, inside a 95% interval's tail)
    assert 0 <= c.best_ci.lo < c.best_delta < c.best_ci.hi
    assert c.as_dict()["best_delta_lo"] == c.best_ci.lo and "3 better, 3 tied, 0 worse" in c.sentence()
    assert paired_comparison(result, "sft", "base", samples=2000, seed=3) == c, "seeded"
    same = paired_comparison(result, "base", "base", samples=50)
    assert (same.best_delta, same.best_ci.lo, same.best_ci.hi, same.wins, same.losses) == (0, 0, 0, 0, 0)
    worse = paired_comparison(result, "base", "sft", samples=2000, seed=3)
    assert worse.best_delta == -c.best_delta and worse.best_ci.hi == -c.best_ci.lo


def test_paired_comparison_rejects_unknown_methods(write_run, tmp_path: Path) -> None:
    import pytest

    from stsc.evaluation.bootstrap import paired_comparison

    runs = _two_task_runs(write_run, tmp_path / "runs", flaky_runs=0)
    result = compute_aup(runs, SCORINGS, ["steady", "flaky"])
    with pytest.raises(ValueError, match="'sft' is not a method"):
        paired_comparison(result, "sft", "steady", samples=10)
    with pytest.raises(ValueError, match="samples=0"):
        paired_comparison(result, "flaky", "steady", samples=0)


def test_intervals_do_not_depend_on_the_order_of_the_pool_tasks_or_runs(write_run, tmp_path: Path) -> None:
    for k, (acc_a, acc_b, loss_a, loss_b) in enumerate(
        [(0.9, 0.6, 1.0, 2.5), (0.5, 0.8, 2.0, 1.2), (0.7, 0.55, 1.5, 1.8), (0.6, 0.75, 2.6, 1.4)]
    ):
        write_run("a", "cls", k, agent=[{"acc": acc_a}], baseline={"acc": 0.5})
        write_run("b", "cls", k, agent=[{"acc": acc_b}], baseline={"acc": 0.5})
        write_run("a", "lm", k, agent=[{"loss": loss_a}], baseline={"loss": 3.0})
        write_run("b", "lm", k, agent=[{"loss": loss_b}], baseline={"loss": 3.0})
    runs = load_runs(tmp_path / "runs")
    ref = compute_aup(runs, SCORINGS, ["a", "b"], ["cls", "lm"], bootstrap=200, seed=5)
    assert ref.best_ci["a"].lo < ref.best_ci["a"].hi  # the runs differ, so the draws matter
    for pool, tasks, order in (
        (["b", "a"], ["cls", "lm"], runs),
        (["a", "b"], ["lm", "cls"], runs),
        (["a", "b"], ["cls", "lm"], runs[::-1]),
    ):
        other = compute_aup(order, SCORINGS, pool, tasks, bootstrap=200, seed=5)
        assert (other.best_ci, other.last_ci) == (ref.best_ci, ref.last_ci), (pool, tasks)


def test_the_per_task_counts_say_they_compare_best_attempts(write_run, tmp_path: Path) -> None:
    from stsc.evaluation.bootstrap import paired_comparison

    # best attempt: sft 0.9 beats base 0.5; last attempt: sft 0.1 loses to base 0.5
    write_run("sft", "cls", agent=[{"acc": 0.9}, {"acc": 0.1}], baseline={"acc": 0.2})
    write_run("base", "cls", agent=[{"acc": 0.5}], baseline={"acc": 0.2})
    result = compute_aup(load_runs(tmp_path / "runs"), {"cls": ACC}, ["sft", "base"])
    # sft's last 0.1 is below the baseline 0.2: penalised at the worst ratio 0.5 / 0.2 times 1.05
    assert result.last_ratios.ratios.get("sft", "cls") == pytest.approx(2.625)
    c = paired_comparison(result, "sft", "base", samples=10)
    assert (c.wins, c.ties, c.losses, c.last_delta < 0) == (1, 0, 0, True)
    assert c.sentence().endswith("per task (best attempt) 1 better, 0 tied, 0 worse")
