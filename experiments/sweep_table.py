"""Turn the MLflow runs of a `stsc -m` sweep into a table and a plot of AUP against the swept key.

    python experiments/sweep_table.py --key curate.task_fraction            # the latest sweep
    python experiments/sweep_table.py --key curate.task_fraction --sweep-run <run id> --method sft

For every job of the sweep it reads the job's value of ``--key`` (a param), the number of SFT examples
(the curate stage's ``items_out``) and, from the evaluate stage's ``aup.csv`` artifact (for a cached
evaluate stage, that of the run that computed it), the chosen method's Best and Last AUP with their
bootstrap intervals. Writes ``sweep_table.csv`` and
``sweep_aup.png`` into ``--output`` and prints the table; the last line is ``sweep_jobs: <n>``. Jobs
without a finished evaluate stage (failed, killed or still running) are left out, each named on stderr.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import Any

COLUMNS = ["job", "value", "sft_examples", "best_aup", "best_lo", "best_hi", "last_aup", "last_lo", "last_hi"]


def _client(root: Path, uri: str | None):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri or f"sqlite:///{(root / 'mlruns' / 'mlflow.db').resolve()}")


def _runs(client, experiment: str, filter_string: str) -> list[Any]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        sys.exit(f"no MLflow experiment named {experiment!r}; check --root/--tracking-uri/--experiment")
    return client.search_runs(
        [exp.experiment_id],
        filter_string=filter_string,
        max_results=5000,
        order_by=["attributes.start_time DESC"],
    )


def _computing_run(client, experiment: str, stage_run) -> Any:
    """The run that holds a stage's files: the stage run itself, or for a cache hit (whose run logs
    only the stored metrics) the finished run that computed the same content key."""
    tags = stage_run.data.tags
    if tags.get("cache_hit") != "true":
        return stage_run
    found = _runs(
        client,
        experiment,
        f"tags.stage = '{tags['stage']}' AND tags.content_key = '{tags['content_key']}' "
        "AND tags.cache_hit = 'false' AND attributes.status = 'FINISHED'",
    )
    if not found:
        sys.exit(
            f"the cached {tags['stage']} stage (key {tags['content_key']}) of run {stage_run.info.run_id} "
            f"has no finished run that computed it in experiment {experiment!r}"
        )
    return found[0]


def _aup_row(client, experiment: str, stage_run, method: str) -> dict[str, Any]:
    """The method's row of the ``aup.csv`` artifact of the evaluate stage's run."""
    run_id = _computing_run(client, experiment, stage_run).info.run_id
    local = Path(client.download_artifacts(run_id, "aup.csv"))
    with open(local, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row.get("model") == method:
            return row
    sys.exit(f"method {method!r} not in the AUP table (has {[r.get('model') for r in rows]})")


def collect(client, experiment: str, sweep_id: str, key: str, method: str) -> list[dict[str, Any]]:
    jobs = _runs(client, experiment, f"tags.mlflow.parentRunId = '{sweep_id}'")
    out = []
    for job in jobs:
        stages = {
            r.data.tags.get("stage"): r
            for r in _runs(client, experiment, f"tags.mlflow.parentRunId = '{job.info.run_id}'")
        }
        evaluate = stages.get("evaluate")
        if evaluate is None or evaluate.info.status != "FINISHED":
            why = (
                "it has no evaluate stage"
                if evaluate is None
                else f"its evaluate stage {evaluate.info.status}"
            )
            print(
                f"job {job.info.run_name} ({key}={job.data.params.get(key, '')}) left out: {why}",
                file=sys.stderr,
            )
            continue
        aup = _aup_row(client, experiment, evaluate, method)
        curate = stages.get("curate")
        out.append(
            {
                "job": job.info.run_name,
                "value": job.data.params.get(key, ""),
                "sft_examples": int(curate.data.metrics.get("items_out", 0)) if curate else "",
                "best_aup": aup.get("best_aup"),
                "best_lo": aup.get("best_aup_lo"),
                "best_hi": aup.get("best_aup_hi"),
                "last_aup": aup.get("last_aup"),
                "last_lo": aup.get("last_aup_lo"),
                "last_hi": aup.get("last_aup_hi"),
            }
        )
    return sorted(out, key=lambda r: _order(r["value"]))


def _num(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _order(value: Any) -> tuple[int, Any]:
    """Numbers ascending, then other values (``None`` of a nullable key, names) by their text."""
    number = _num(value)
    return (0, number) if isinstance(number, float) else (1, str(value))


def plot(rows: list[dict[str, Any]], key: str, method: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    xs = [_num(r["value"]) for r in rows]
    if not all(isinstance(x, float) for x in xs):  # e.g. null among numbers: categories in table order
        xs = [str(r["value"]) for r in rows]
    for which, colour in (("best", "#4C72B0"), ("last", "#DD8452")):
        ys = [float(r[f"{which}_aup"]) for r in rows]
        ax.plot(xs, ys, marker="o", color=colour, label=f"{which} AUP")
        # drawn from its bounds: a percentile interval need not contain the point estimate
        bounds = [
            (x, float(r[f"{which}_lo"]), float(r[f"{which}_hi"]))
            for x, r in zip(xs, rows, strict=True)
            if r[f"{which}_lo"] not in (None, "") and r[f"{which}_hi"] not in (None, "")
        ]
        if bounds:
            bx, lo, hi = zip(*bounds, strict=True)
            ax.vlines(bx, lo, hi, color=colour, alpha=0.6)
            ax.scatter(bx * 2, lo + hi, marker="_", s=80, color=colour)
    ax.set_xlabel(key)
    ax.set_ylabel(f"AUP of '{method}'")
    ax.set_title("AUP across the sweep (bootstrap intervals)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--key", required=True, help="swept config key, e.g. curate.task_fraction")
    ap.add_argument("--method", default="sft", help="AUP pool member to plot (default: sft)")
    ap.add_argument("--sweep-run", help="MLflow run id of the sweep (default: the latest sweep)")
    ap.add_argument("--root", type=Path, default=Path("."), help="project root holding mlruns/")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite under --root)")
    ap.add_argument("--experiment", default="stsc")
    ap.add_argument("--output", type=Path, default=Path("sweep_out"))
    args = ap.parse_args(argv)
    client = _client(args.root, args.tracking_uri)
    sweep_id = args.sweep_run
    if sweep_id is None:
        sweeps = _runs(client, args.experiment, "tags.`stsc.kind` = 'sweep'")
        if not sweeps:
            sys.exit("no sweep run found; run a sweep with `stsc -m ...` first")
        sweep_id = sweeps[0].info.run_id
    rows = collect(client, args.experiment, sweep_id, args.key, args.method)
    if not rows:
        sys.exit(f"sweep {sweep_id} has no job with an evaluate stage")
    args.output.mkdir(parents=True, exist_ok=True)
    with open(args.output / "sweep_table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.key, args.method, args.output / "sweep_aup.png")
    print(f"sweep {sweep_id}, method {args.method}")
    print("  ".join(f"{c:>12}" for c in COLUMNS[1:]))
    for r in rows:
        print("  ".join(f"{str(r[c]):>12}" for c in COLUMNS[1:]))
    print(f"sweep_jobs: {len(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
