"""task_fraction: a seeded, deterministic, nested subset of the training tasks."""

from __future__ import annotations

import pytest

from stsc.curate.select import task_subset
from tests.curate.conftest import Run

IDS = [f"task-{i:03d}" for i in range(40)]
FRACTIONS = [0.0, 0.1, 0.25, 0.3, 0.5, 0.75, 1.0]


def test_subsets_are_nested_and_sized_by_the_fraction() -> None:
    subsets = [set(task_subset(IDS, f, seed=0)) for f in FRACTIONS]
    assert [len(s) for s in subsets] == [0, 4, 10, 12, 20, 30, 40]
    for smaller, larger in zip(subsets, subsets[1:], strict=False):
        assert smaller < larger


def test_the_subset_is_a_pure_function_of_ids_fraction_and_seed() -> None:
    assert task_subset(IDS, 0.25, seed=0) == task_subset(list(reversed(IDS)) + IDS[:3], 0.25, seed=0)
    assert task_subset(IDS, 0.25, seed=0) != task_subset(IDS, 0.25, seed=1)
    assert task_subset(IDS, 0.25, seed=0) == sorted(task_subset(IDS, 0.25, seed=0))


def test_adding_tasks_keeps_the_relative_rank_of_the_existing_ones() -> None:
    before = set(task_subset(IDS[:20], 0.5, seed=3))
    after = set(task_subset(IDS, 0.5, seed=3)) & set(IDS[:20])
    assert after <= before or before <= after


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_the_stage_keeps_only_runs_of_the_selected_tasks(ws, fraction: float) -> None:
    ids = [f"t{i}" for i in range(8)]
    for task_id in ids:
        ws.task(task_id)
        ws.run(Run(task_id, ["ls", f"echo {task_id}", "submit"]))
    _, index, stats, ctx = ws.curate(name=f"f{fraction}", task_fraction=fraction, seed=7)
    selected = task_subset(ids, fraction, seed=7)
    assert [r["task_id"] for r in index] == selected and len(selected) == int(8 * fraction)
    assert stats["dropped"] == {"task_fraction": 8 - len(selected)}
    assert stats["tasks"]["selected"] == len(selected) and stats["tasks"]["with_examples"] == len(selected)
    assert ctx.report.metrics["tasks_selected"] == len(selected)


def test_the_quarter_subset_of_the_stage_lies_inside_its_half_subset(ws) -> None:
    for i in range(12):
        ws.task(f"t{i}")
        ws.run(Run(f"t{i}", ["ls", f"echo {i}", "submit"]))
    kept = {}
    for fraction in (0.25, 0.5, 1.0):
        _, index, _, _ = ws.curate(name=f"f{fraction}", task_fraction=fraction)
        kept[fraction] = {r["task_id"] for r in index}
    assert len(kept[0.25]) == 3 and len(kept[0.5]) == 6 and len(kept[1.0]) == 12
    assert kept[0.25] < kept[0.5] < kept[1.0]
