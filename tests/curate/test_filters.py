"""Each curate filter, switched on and off, with the drop reasons it records."""

from __future__ import annotations

import json
from pathlib import Path

from stsc.curate.select import load_library
from stsc.curate.tokens import TokenCounter
from tests.curate.conftest import Run, Workspace

ACTIONS = ["ls", "cat baseline.py", "python baseline.py", "validate", "submit"]


def _tasks(ws: Workspace, *ids: str, **kw) -> None:
    for task_id in ids:
        ws.task(task_id, **kw)


def test_the_success_filter_drops_runs_without_a_scored_submission_and_can_be_switched_off(ws) -> None:
    _tasks(ws, "a")
    ws.run(Run("a", ACTIONS, index=0))
    ws.run(Run("a", ACTIONS[:3], scores=[], index=1))
    ws.run(Run("a", ACTIONS[:4], scores=[{"loss": 0.3}], index=2))  # scored, but not the priority metric

    rows, index, stats, ctx = ws.curate()
    assert len(rows) == 1 and [r["run"].endswith("_run_0") for r in index] == [True]
    assert stats["dropped"] == {"no_success": 2}
    assert ctx.report.items_in == 3 and ctx.report.items_out == 1 and ctx.report.drops == {"no_success": 2}

    rows, _, stats, _ = ws.curate(name="off", require_success=False)
    assert len(rows) == 3 and stats["dropped"] == {}


def test_beats_baseline_follows_the_metric_direction_of_each_task(ws) -> None:
    ws.task("acc", baseline=0.5)
    ws.task("err", metric="rmse", higher_is_better=False, baseline=2.0)
    ws.task("unscored", baseline=None)
    ws.run(Run("acc", ACTIONS, scores=[{"accuracy": 0.4}, {"accuracy": 0.6}], index=0))  # best beats
    ws.run(Run("acc", ACTIONS[:4], scores=[{"accuracy": 0.5}], index=1))  # a tie does not
    ws.run(Run("err", ACTIONS, scores=[{"rmse": 1.5}], index=0))  # lower is better: beats
    ws.run(Run("err", ACTIONS[:4], scores=[{"rmse": 2.5}], index=1))
    ws.run(Run("unscored", ACTIONS, scores=[{"accuracy": 0.9}], index=0))

    _, index, stats, _ = ws.curate(require_beats_baseline=True)
    assert [(r["task_id"], r["run"][-5:]) for r in index] == [
        ("acc", "run_0"),
        ("err", "run_0"),
        ("unscored", "run_0"),
    ]
    assert stats["dropped"] == {"below_baseline": 2}
    assert [r["best_score"] for r in index][:2] == [0.6, 1.5]

    _, index, stats, _ = ws.curate(name="default")
    assert len(index) == 5 and stats["dropped"] == {}


def test_a_task_without_any_baseline_score_cannot_pass_the_beats_baseline_filter(ws, tmp_path) -> None:
    ws.task("unscored", baseline=None)
    folder = ws.run(Run("unscored", ACTIONS, scores=[{"accuracy": 0.9}]))
    (folder / "results.json").write_text(json.dumps({"agent": [{"accuracy": 0.9}], "baseline": {}}))
    _, _, stats, _ = ws.curate(require_beats_baseline=True)
    assert stats["dropped"] == {"no_baseline_score": 1}


def test_max_total_tokens_drops_long_trajectories_before_truncation(ws, tokenizer) -> None:
    _tasks(ws, "a")
    ws.run(Run("a", ACTIONS[:2], index=0))
    ws.run(Run("a", ACTIONS, observations=["x " * 400] * 5, index=1))
    _, index, _, _ = ws.curate(name="all", max_total_tokens=None)
    short, long = sorted(r["tokens_full"] for r in index)
    limit = (short + long) // 2

    rows, index, stats, _ = ws.curate(max_total_tokens=limit, max_seq_len=short)
    assert len(rows) == 1 and index[0]["tokens"] == short
    assert stats["dropped"] == {"too_many_tokens": 1}
    assert TokenCounter(tokenizer).count(rows[0]["messages"]) == short


def test_dedup_drops_repeated_action_sequences_per_task_only(ws) -> None:
    _tasks(ws, "a", "b")
    ws.run(Run("a", ACTIONS, index=0))
    ws.run(Run("a", ACTIONS, observations=[f"other output {i}" for i in range(5)], index=1))  # same actions
    ws.run(Run("a", ACTIONS[:-1] + ["submit "], index=2))  # one action differs
    ws.run(Run("b", ACTIONS, index=0))  # same actions, other task

    _, index, stats, _ = ws.curate()
    assert [(r["task_id"], r["run"][-5:]) for r in index] == [("a", "run_0"), ("a", "run_2"), ("b", "run_0")]
    assert stats["dropped"] == {"duplicate": 1}
    assert stats["per_task"]["a"] == {
        "trajectories": 3,
        "examples": 2,
        "tokens": index[0]["tokens"] + index[1]["tokens"],
        "dropped": {"duplicate": 1},
    }

    _, index, stats, _ = ws.curate(name="off", dedup=False)
    assert len(index) == 4 and stats["dropped"] == {}


def test_runs_of_held_out_and_unknown_tasks_are_dropped_before_anything_is_read(ws) -> None:
    for i in range(4):
        ws.task(f"t{i}", dataset_id=f"ds/{i}")
    _, heldout = load_library(ws.validate, 0.3, 0)
    assert len(heldout) == 1
    for i in range(4):
        ws.run(Run(f"t{i}", ACTIONS))
    ws.run(Run("not-in-library", ACTIONS))

    _, index, stats, _ = ws.curate()
    assert stats["dropped"] == {"heldout_task": 1, "unknown_task": 1}
    assert {r["task_id"] for r in index} == {f"t{i}" for i in range(4)} - heldout
    assert stats["tasks"]["heldout"] == 1 and stats["tasks"]["training"] == 3


def test_unfinished_and_unreadable_runs_are_dropped_with_their_reason(ws) -> None:
    _tasks(ws, "a")
    ws.run(Run("a", ACTIONS, index=0))
    ws.run(Run("a", ACTIONS[:2], index=1, finished=False))
    broken = ws.run(Run("a", ACTIONS[:3], index=2))
    (broken / "a.traj").write_text('{"history": [')
    odd = ws.run(Run("a", ACTIONS[:4], index=3))
    traj = json.loads((odd / "a.traj").read_text())
    traj["history"][2]["content"] = None
    (odd / "a.traj").write_text(json.dumps(traj))

    surrogate = ws.run(Run("a", ACTIONS[:1], index=4))
    text = (surrogate / "a.traj").read_text()
    (surrogate / "a.traj").write_text(text.replace("output of ls", "output of ls \\ud800"))

    _, index, stats, _ = ws.curate()
    assert len(index) == 1 and stats["dropped"] == {"unfinished_run": 1, "unreadable_run": 3}


def test_truncation_cuts_whole_trailing_turns_and_keeps_the_longest_fitting_prefix(ws, tokenizer) -> None:
    _tasks(ws, "a")
    ws.run(
        Run("a", ACTIONS, observations=[f"output {i}\n" + "value 0.5 " * 40 for i in range(5)], think=True)
    )
    full_rows, full_index, _, _ = ws.curate(name="whole", truncate=False)
    full = full_rows[0]["messages"]
    counter = TokenCounter(tokenizer)
    ends = [i + 1 for i, m in enumerate(full) if m["role"] == "assistant"]
    lengths = [counter.count(full[:e]) for e in ends]
    assert lengths == sorted(lengths) and full_index[0]["tokens"] == lengths[-1]
    limit = lengths[2] + 1  # room for three turns, not four

    rows, index, stats, _ = ws.curate(max_seq_len=limit)
    kept = rows[0]["messages"]
    assert kept == full[: ends[2]]
    assert kept[-1]["role"] == "assistant" and [m["role"] for m in kept[:2]] == ["system", "user"]
    summary = {k: index[0][k] for k in ("tokens", "tokens_full", "turns", "turns_truncated")}
    assert summary == {"tokens": lengths[2], "tokens_full": lengths[-1], "turns": 3, "turns_truncated": 2}
    assert stats["truncated_examples"] == 1 and stats["turns_truncated"] == 2

    rows, index, _, _ = ws.curate(name="exact", max_seq_len=lengths[3])
    assert rows[0]["messages"] == full[: ends[3]] and index[0]["tokens"] == lengths[3]

    rows, index, _, _ = ws.curate(name="off", max_seq_len=limit, truncate=False)
    assert rows[0]["messages"] == full and index[0]["tokens"] == lengths[-1] > limit


def test_step_examples_over_max_seq_len_are_counted_as_left_out_not_as_truncated(ws) -> None:
    _tasks(ws, "a")
    ws.run(Run("a", ACTIONS, observations=[f"output {i}\n" + "value 0.5 " * 40 for i in range(5)]))
    rows, index, stats, _ = ws.curate(name="all", examples="step", history_view="full", truncate=False)
    lengths = [r["tokens"] for r in index]
    assert len(rows) == len(ACTIONS) and lengths == sorted(lengths)  # the full view only grows

    rows, index, stats, ctx = ws.curate(examples="step", history_view="full", max_seq_len=lengths[2])
    assert len(rows) == 3 and stats["steps_too_long"] == 2
    assert stats["truncated_examples"] == 0 and stats["turns_truncated"] == 0
    assert ctx.report.metrics["steps_too_long"] == 2.0
    # each row is one whole example: its own tokens, nothing cut from it
    assert [(r["tokens"], r["tokens_full"], r["turns"], r["turns_truncated"]) for r in index] == [
        (n, n, 1, 0) for n in lengths[:3]
    ]
    rows, _, stats, _ = ws.curate(
        name="none", examples="step", history_view="full", max_seq_len=lengths[0] - 1
    )
    assert rows == [] and stats["dropped"] == {"first_turn_too_long": 1}
    assert stats["steps_too_long"] == len(ACTIONS)  # every step of the dropped trajectory


def test_an_example_whose_first_turn_alone_is_too_long_is_dropped(ws, tokenizer) -> None:
    _tasks(ws, "a")
    ws.run(Run("a", ACTIONS))
    full_rows, _, _, _ = ws.curate(name="whole", truncate=False)
    first = full_rows[0]["messages"][:3]
    limit = TokenCounter(tokenizer).count(first) - 1

    rows, _, stats, ctx = ws.curate(max_seq_len=limit)
    assert rows == [] and stats["dropped"] == {"first_turn_too_long": 1}
    assert ctx.report.drops == {"first_turn_too_long": 1}


def test_output_order_is_by_task_then_run_folder_whatever_the_writing_order(ws) -> None:
    _tasks(ws, "b", "a")
    for task_id, k in [("b", 1), ("a", 2), ("b", 0), ("a", 0), ("a", 1)]:
        ws.run(Run(task_id, ACTIONS[: 2 + k] + [f"echo {task_id}{k}"], index=k))
    _, index, _, ctx = ws.curate()
    order = [(r["task_id"], int(r["run"].rsplit("_", 1)[1])) for r in index]
    assert order == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    assert ctx.tables["sft_examples"] == index
    first = (ctx.out_dir / "sft.jsonl").read_bytes()
    _, _, _, again = ws.curate(name="again")
    assert (again.out_dir / "sft.jsonl").read_bytes() == first


def test_runs_may_sit_up_to_three_levels_below_the_runs_folder(ws) -> None:
    _tasks(ws, "a")
    ws.run(Run("a", ACTIONS, index=0))
    nested = ws.rollout / "runs" / "teacher" / "batch-1"
    from tests.curate.conftest import write_run

    write_run(nested, Run("a", ACTIONS[:3], index=1))
    _, index, _, _ = ws.curate()
    assert len(index) == 2


def test_an_empty_rollout_gives_an_empty_sft_set_and_a_complete_report(ws: Workspace, tmp_path: Path) -> None:
    _tasks(ws, "a")
    rows, index, stats, ctx = ws.curate()
    assert rows == [] and index == [] and stats["examples"] == 0 and stats["histogram"]["counts"] == [0] * 11
    assert ctx.report.items_in == 0 and ctx.report.items_out == 0


def test_a_rerun_after_a_killed_run_replaces_its_outputs_and_removes_the_temp_file(ws) -> None:
    _tasks(ws, "a")
    ws.run(Run("a", ACTIONS))
    out = ws.root / "out"
    out.mkdir()
    (out / ".sft.jsonl.killed.tmp").write_text('{"messages": [')
    (out / "sft.jsonl").write_text("stale\n")
    rows, _, _, _ = ws.curate()
    assert len(rows) == 1 and sorted(p.name for p in out.iterdir()) == [
        "index.jsonl",
        "sft.jsonl",
        "stats.json",
    ]


def test_token_quantiles_are_nearest_rank() -> None:
    from stsc.curate.stage import quantile

    ten = list(range(1, 11))
    assert (quantile(ten, 0.5), quantile(ten, 0.9), quantile(ten, 1.0)) == (5, 9, 10)
    assert (quantile([7], 0.5), quantile([7], 0.9), quantile([], 0.5)) == (7, 7, 0)
    assert (quantile([1, 2, 3], 0.5), quantile([1, 2, 3], 0.9)) == (2, 3)
