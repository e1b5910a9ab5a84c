"""The report stage: the whole funnel (topics -> ... -> student AUP), cost and yield per stage, USD per
accepted task and per kept example, plots; printed at the end of a run and logged to MLflow.

It reads the ``report.json`` of every upstream stage, following the ``upstream`` keys recorded in
each stage folder's ``stage.json``, so it sees exactly the lineage of this run.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from stsc.store import REPORT_FILE, atomic_write_json, atomic_write_text, read_json

log = logging.getLogger(__name__)

FUNNEL = [
    # (label, stage, which count)
    ("topics", "topics", "items_out"),
    ("proposals", "propose", "items_out"),
    ("verified datasets", "verify", "items_out"),
    ("generated tasks", "generate", "items_out"),
    ("accepted tasks", "validate", "items_out"),
    ("trajectories", "rollout", "items_out"),
    ("kept examples", "curate", "items_out"),
]


def lineage(store: Path, inputs: dict[str, Path]) -> dict[str, Path]:
    """Every stage folder upstream of ``inputs`` (stage name -> folder), walking ``stage.json``."""
    found: dict[str, Path] = {}
    todo = list(inputs.items())
    while todo:
        name, folder = todo.pop()
        if name in found:
            continue
        found[name] = folder
        meta = folder / "stage.json"
        if meta.exists():
            for up, key in read_json(meta).get("upstream", {}).items():
                todo.append((up, store / up / key))
    return found


def _reports(folders: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return {n: read_json(f / REPORT_FILE) for n, f in folders.items() if (f / REPORT_FILE).exists()}


def funnel_rows(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for label, stage, field in FUNNEL:
        if stage in reports:
            r = reports[stage]
            rows.append(
                {"step": label, "stage": stage, "count": int(r[field]), "dropped": dict(r.get("drops", {}))}
            )
    return rows


def cost_rows(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    order = [s for _, s, _ in FUNNEL] + ["sft", "evaluate"]
    rows = []
    for stage in [s for s in order if s in reports]:
        r = reports[stage]
        yield_ = r["items_out"] / r["items_in"] if r["items_in"] else None
        rows.append(
            {
                "stage": stage,
                "items_in": r["items_in"],
                "items_out": r["items_out"],
                "yield": None if yield_ is None else round(yield_, 4),
                "prompt_tokens": r["prompt_tokens"],
                "completion_tokens": r["completion_tokens"],
                "cost_usd": round(r["cost_usd"], 6),
                "wall_s": round(r["wall_s"], 2),
            }
        )
    return rows


def unit_costs(reports: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    synth = sum(
        reports[s]["cost_usd"]
        for s in ("topics", "propose", "verify", "generate", "validate")
        if s in reports
    )
    accepted = reports.get("validate", {}).get("items_out", 0)
    rollout_cost = reports.get("rollout", {}).get("cost_usd", 0.0)
    kept = reports.get("curate", {}).get("items_out", 0)
    return {
        "usd_per_accepted_task": synth / accepted if accepted else None,
        "usd_per_kept_example": (synth + rollout_cost) / kept if kept else None,
        "total_usd": sum(r["cost_usd"] for r in reports.values()),
    }


def _aup_rows(evaluate_dir: Path | None) -> list[dict[str, str]]:
    if evaluate_dir is None or not (evaluate_dir / "aup.csv").exists():
        return []
    with open(evaluate_dir / "aup.csv", newline="") as f:
        return list(csv.DictReader(f))


def format_summary(
    funnel: list[dict],
    costs: list[dict],
    units: dict,
    aup: list[dict],
    aup_meta: dict,
    paired: dict | None = None,
) -> str:
    out = io.StringIO()
    out.write("\nFunnel\n")
    for row in funnel:
        drops = ", ".join(f"{k}: {v}" for k, v in sorted(row["dropped"].items()) if v) or "-"
        out.write(f"  {row['step']:<18} {row['count']:>7}   dropped: {drops}\n")
    out.write("\nCost and yield per stage\n")
    out.write(f"  {'stage':<9} {'in':>7} {'out':>7} {'yield':>7} {'tokens':>12} {'USD':>10} {'wall s':>8}\n")
    for r in costs:
        y = "-" if r["yield"] is None else f"{r['yield']:.2f}"
        out.write(
            f"  {r['stage']:<9} {r['items_in']:>7} {r['items_out']:>7} {y:>7} "
            f"{r['prompt_tokens'] + r['completion_tokens']:>12} {r['cost_usd']:>10.4f} {r['wall_s']:>8.1f}\n"
        )
    fmt = {k: ("-" if v is None else f"${v:.4f}") for k, v in units.items()}
    out.write(
        f"  USD per accepted task: {fmt['usd_per_accepted_task']}   USD per kept example: "
        f"{fmt['usd_per_kept_example']}   total: {fmt['total_usd']}\n"
    )
    if aup:
        from stsc.evaluation.bootstrap import suite_tasks

        out.write(
            f"\nAUP (pool: {', '.join(aup_meta.get('pool', []))}; max_tau {aup_meta.get('max_tau')}; "
            f"{len(aup_meta.get('tasks', []))} {suite_tasks(aup_meta.get('suite'))})\n"
        )
        cols = list(aup[0].keys())
        out.write("  " + "  ".join(f"{c:>14}" for c in cols) + "\n")
        for row in aup:
            out.write("  " + "  ".join(f"{row[c]:>14}" for c in cols) + "\n")
        if any(c.endswith("_lo") for c in cols) and aup_meta.get("confidence"):
            out.write(
                f"  _lo/_hi: {100 * aup_meta['confidence']:g}% percentile interval over "
                f"{aup_meta.get('bootstrap_samples')} resamples of each model's runs per task\n"
            )
    if paired:
        from stsc.evaluation.bootstrap import describe_paired

        out.write(f"\n{describe_paired(paired)}\n")
    return out.getvalue()


def _plot_funnel(funnel: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    ax.barh([r["step"] for r in funnel][::-1], [r["count"] for r in funnel][::-1], color="#4C72B0")
    for i, r in enumerate(funnel[::-1]):
        ax.text(r["count"], i, f" {r['count']}", va="center", fontsize=8)
    ax.set_xlabel("items")
    ax.set_title("stsc funnel")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_report(cfg: Any, ctx: Any) -> None:
    """Write funnel.json, cost.csv-like tables, summary.txt and funnel.png into the stage folder."""
    folders = lineage(ctx.store, ctx.inputs)
    reports = _reports(folders)
    funnel, costs, units = funnel_rows(reports), cost_rows(reports), unit_costs(reports)
    evaluate_dir = folders.get("evaluate")
    aup = _aup_rows(evaluate_dir)
    aup_meta = (
        read_json(evaluate_dir / "aup.json") if evaluate_dir and (evaluate_dir / "aup.json").exists() else {}
    )
    from stsc.evaluation.bootstrap import PAIRED_FILE

    paired_path = evaluate_dir / PAIRED_FILE if evaluate_dir else None
    paired = read_json(paired_path) if paired_path and paired_path.exists() else None
    summary = format_summary(funnel, costs, units, aup, aup_meta, paired)
    atomic_write_json(
        ctx.out_dir / "funnel.json",
        {"funnel": funnel, "costs": costs, "unit_costs": units, "aup": aup, "aup_meta": aup_meta,
         "paired": paired},
    )  # fmt: skip
    atomic_write_text(ctx.out_dir / "summary.txt", summary)
    _plot_funnel(funnel, ctx.out_dir / "funnel.png")
    ctx.log_table("funnel", [{k: v for k, v in r.items() if k != "dropped"} for r in funnel])
    ctx.log_table("cost_yield", costs)
    ctx.artifacts += [ctx.out_dir / "summary.txt", ctx.out_dir / "funnel.png"]
    ctx.report.add_in(len(reports))
    ctx.report.add_out(1)
    ctx.report.metrics.update({k: v for k, v in units.items() if v is not None})
    for row in aup:
        try:
            ctx.report.metrics[f"aup_best.{row['model']}"] = float(row["best_aup"])
            ctx.report.metrics[f"aup_last.{row['model']}"] = float(row["last_aup"])
        except (KeyError, ValueError):
            log.warning("unreadable AUP row %s", row)


def format_outcomes(outcomes: list[Any]) -> str:
    """A plain-text table of stage outcomes (``stsc.pipeline.StageOutcome``), plus the report's summary."""
    header = f"{'stage':<10} {'key':<12} {'cached':<6} {'in':>6} {'out':>6} {'USD':>9} {'wall s':>8}  drops"
    lines = ["", header, "-" * len(header)]
    for o in outcomes:
        r = o.report
        drops = ", ".join(f"{k}={v}" for k, v in sorted(r.drops.items()) if v) or "-"
        lines.append(
            f"{o.name:<10} {o.key:<12} {'yes' if o.cache_hit else 'no':<6} {r.items_in:>6} {r.items_out:>6} "
            f"{r.cost_usd:>9.4f} {r.wall_s:>8.1f}  {drops}"
        )
    for o in outcomes:
        if o.name == "report" and (o.folder / "summary.txt").exists():
            lines.append((o.folder / "summary.txt").read_text())
    return "\n".join(lines)
