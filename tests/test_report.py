"""The report stage reads the whole lineage and computes the funnel and unit costs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from stsc.config import RootConfig
from stsc.report import run_report
from stsc.store import StageContext, StageReport, atomic_write_json

CHAIN = [  # stage, upstream, in, out, drops, usd
    ("topics", [], 0, 10, {}, 0.10),
    ("propose", ["topics"], 10, 9, {"malformed_json": 1}, 0.20),
    ("verify", ["propose"], 9, 6, {"gated": 2, "license:other": 1}, 0.0),
    ("generate", ["verify"], 6, 6, {}, 0.30),
    ("validate", ["generate"], 6, 4, {"exploit_probe": 2}, 0.40),
    ("rollout", ["validate"], 8, 8, {}, 2.00),
    ("curate", ["rollout", "validate"], 8, 5, {"no_success": 3}, 0.0),
]


def _store(tmp_path: Path) -> dict[str, Path]:
    folders = {}
    for name, ups, n_in, n_out, drops, usd in CHAIN:
        folder = tmp_path / name / f"k-{name}"
        rep = StageReport(
            stage=name,
            items_in=n_in,
            items_out=n_out,
            drops=Counter(drops),
            cost_usd=usd,
            prompt_tokens=100,
            completion_tokens=10,
            wall_s=1.0,
        )
        atomic_write_json(folder / "report.json", rep.to_dict())
        atomic_write_json(folder / "stage.json", {"stage": name, "upstream": {u: f"k-{u}" for u in ups}})
        folders[name] = folder
    return folders


def test_report_walks_the_lineage_and_computes_unit_costs(tmp_path: Path) -> None:
    folders = _store(tmp_path)
    out = tmp_path / "report" / "k"
    out.mkdir(parents=True)
    ctx = StageContext("report", "k", out, {"curate": folders["curate"]}, tmp_path, 0, StageReport("report"))
    run_report(RootConfig(), ctx)
    summary = (out / "summary.txt").read_text()
    assert "accepted tasks" in summary and "exploit_probe: 2" in summary and "license:other: 1" in summary
    funnel = {r["step"]: r["count"] for r in ctx.tables["funnel"]}
    assert funnel == {
        "topics": 10,
        "proposals": 9,
        "verified datasets": 6,
        "generated tasks": 6,
        "accepted tasks": 4,
        "trajectories": 8,
        "kept examples": 5,
    }
    assert abs(ctx.report.metrics["usd_per_accepted_task"] - 1.0 / 4) < 1e-9
    assert abs(ctx.report.metrics["usd_per_kept_example"] - 3.0 / 5) < 1e-9
    assert (out / "funnel.png").stat().st_size > 1000


def test_the_summary_states_the_student_difference_with_its_interval() -> None:
    from stsc.report import format_summary

    paired = {"model": "sft", "reference": "base", "best_delta": 0.011, "best_delta_lo": 0.004,
              "best_delta_hi": 0.019, "last_delta": 0.011, "last_delta_lo": 0.004, "last_delta_hi": 0.019,
              "wins": 4, "ties": 4, "losses": 0, "tasks": 8, "samples": 500, "confidence": 0.95,
              "suite": "library"}  # fmt: skip
    units = {"usd_per_accepted_task": None, "usd_per_kept_example": None, "total_usd": 0.0}
    aup = [{"model": "sft", "best_aup": 1.2, "last_aup": 1.1}]
    text = format_summary(
        [], [], units, aup, {"pool": ["sft"], "suite": "library", "tasks": ["a", "b"]}, paired
    )
    assert "sft - base: best AUP +0.011 [+0.004, +0.019]" in text
    assert (
        "(95% interval over resampled held-out tasks); per task (best attempt) 4 better, 4 tied, 0 worse"
        in text
    )
    assert "2 held-out tasks)" in text and "_lo/_hi" not in text  # no interval columns
    with_ci = [{**aup[0], "best_aup_lo": 1.1, "best_aup_hi": 1.3, "last_aup_lo": 1.0, "last_aup_hi": 1.2}]
    meta = {"pool": ["sft"], "suite": "library", "tasks": ["a"], "confidence": 0.9, "bootstrap_samples": 200}
    described = format_summary([], [], units, with_ci, meta, None)
    assert "_lo/_hi: 90% percentile interval over 200 resamples of each model's runs per task" in described
    mlgym = format_summary([], [], units, aup, {"pool": ["sft"], "suite": "mlgym", "tasks": ["a"]},
                           {**paired, "suite": "mlgym"})  # fmt: skip
    assert "1 MLGym tasks)" in mlgym and "resampled MLGym tasks" in mlgym and "held-out" not in mlgym
    assert "sft - base" not in format_summary(
        [], [], {"usd_per_accepted_task": None, "usd_per_kept_example": None, "total_usd": 0.0}, [], {}
    )
