"""MLGym's published run results reproduce MLGym's own AUP table (reference/mlgym.md §7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stsc.evaluation.aup import BASELINE, compute_aup, write_aup_outputs
from stsc.evaluation.mlgym_tasks import MLGYM_TASKS
from stsc.evaluation.runs import load_runs

from .conftest import GOLDEN, MLGYM_REPORTED_MODELS

# MLGym's aggregate table (Best AUP, Last AUP) for the models it reports in reference/mlgym.md §7.
PUBLISHED = {
    "metagen-gpt-o1": (1.423, 1.444),
    "metagen-claude-35-sonnet-new": (1.426, 1.419),
    "metagen-gemini-15-pro": (1.420, 1.405),
    "metagen-llama3-405b-tools": (1.330, 1.353),
    "metagen-gpt4o2": (1.288, 1.317),
    BASELINE: (1.220, 1.243),
}


@pytest.fixture(scope="module")
def reported(mlgym_runs_dir: Path):
    runs = load_runs(mlgym_runs_dir)
    return compute_aup(runs, MLGYM_TASKS, MLGYM_REPORTED_MODELS)


def test_pool_is_the_twelve_reported_models_over_all_thirteen_tasks(reported) -> None:
    assert len(reported.pool) == 12
    assert "metagen-gemini-20-pro" not in reported.pool
    assert set(reported.tasks) == set(MLGYM_TASKS)
    assert reported.max_tau == 1.5


@pytest.mark.parametrize("method", sorted(PUBLISHED))
def test_best_and_last_aup_match_mlgyms_table(reported, method: str) -> None:
    assert (reported.best_aup[method], reported.last_aup[method]) == PUBLISHED[method]


def test_mountaincar_baseline_is_taken_from_the_dicts_that_hold_reward_mean(reported) -> None:
    assert reported.best_scores.get(BASELINE, "rlMountainCarContinuous") == pytest.approx(33.793758392333984)


def test_aup_depends_on_the_pool(mlgym_runs_dir: Path, reported) -> None:
    runs = load_runs(mlgym_runs_dir)
    small = compute_aup(runs, MLGYM_TASKS, ["metagen-gpt-o1", "metagen-gpt4o2"])
    assert small.pool == ("metagen-gpt-o1", "metagen-gpt4o2")
    assert small.best_aup["metagen-gpt-o1"] != reported.best_aup["metagen-gpt-o1"]


@pytest.mark.parametrize("name", ["aup", "best_scores", "last_scores"])
def test_tables_match_golden_files(reported, tmp_path: Path, name: str) -> None:
    write_aup_outputs(reported, tmp_path, plot=False)
    golden = GOLDEN / f"mlgym_{name}.csv"
    assert (tmp_path / f"{name}.csv").read_text() == golden.read_text(), (
        f"{name}.csv changed; if intended, re-record with .venv/bin/python tests/evaluation/record_golden.py"
    )
