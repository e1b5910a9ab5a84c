"""Turn the MLflow runs of a `stsc -m` sweep into a table and a plot of AUP against the swept keys.

    python experiments/sweep_table.py                                       # the latest sweep
    python experiments/sweep_table.py --key curate.task_fraction --sweep-run <run id> --method sft
    python experiments/sweep_table.py --key sft.learning_rate --key curate.task_fraction

The table has one column per key: those given with ``--key`` (repeatable), then every other key the
sweep varies (its run's ``stsc.swept_keys`` tag), so the jobs of a sweep over several keys are never
mixed under one value. A job's value of a key is its param (``None`` for null) or, for a config group
(``curate=no_truncation``), its override.

A job run carries each stage's final metrics as ``<stage>.<metric>``; the table takes from them the
number of SFT examples (``curate.items_out``) and the chosen method's Best and Last AUP
(``evaluate.aup_best.<method>``, ``evaluate.aup_last.<method>``), and the bounds of their bootstrap
intervals from ``evaluate.aup_best_lo.<method>`` (``_hi``, and the same for ``last``) where the job
has them, else from the evaluate stage's ``aup.csv`` artifact (for a cached evaluate stage, that of
the run that computed it; without that run in the experiment the intervals stay empty). Jobs logged
before job runs carried these metrics are read from their stage runs.

Writes ``sweep_table.csv`` and ``sweep_aup.png`` (Best and Last AUP against the first key, one line
per combination of the other keys) into ``--output`` and prints the table; the last line is
``sweep_jobs: <n>``. Jobs without a finished evaluate stage (failed, killed or still running) are
left out, each named on stderr; jobs that share the values of every key are named there too (the
sweep varies a key the table lacks: name it with ``--key``).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import Any

NUMBERS = ["sft_examples", "best_aup", "best_lo", "best_hi", "last_aup", "last_lo", "last_hi"]
SWEPT_KEYS_TAG = "stsc.swept_keys"  # on the sweep run: the keys it varies, comma-separated (stsc.tracking)
# A job run carries each stage's final metrics as ``<stage>.<metric>`` and lists those stages in a tag
# (stsc.tracking.JobTracker.roll_up); jobs logged before that carry neither.
STAGES_TAG = "stages"
EXAMPLES_METRIC = "curate.items_out"
AUP_METRIC = "evaluate.aup_{which}.{method}"  # which: best | last
BOUND_METRIC = "evaluate.aup_{which}_{bound}.{method}"  # bound: lo | hi; else read from aup.csv


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


def sweep_keys(client, sweep_id: str, given: list[str] | None) -> list[str]:
    """The table's keys: ``given`` (``--key``) first, then the other keys the sweep run names as
    swept. Exits when there are none (a sweep run from before the tag: name them with ``--key``)."""
    tag = client.get_run(sweep_id).data.tags.get(SWEPT_KEYS_TAG, "")
    keys = list(dict.fromkeys([*(given or []), *(k for k in tag.split(",") if k)]))
    if not keys:
        sys.exit(f"sweep run {sweep_id} names no swept keys (tag {SWEPT_KEYS_TAG}); give them with --key")
    return keys


def _value(job, key: str) -> str:
    """The job's value of ``key``: its param, else its override of it (a config group such as
    ``curate=no_truncation`` is no param), else ``''``."""
    if key in job.data.params:
        return job.data.params[key]
    for item in job.data.tags.get("overrides", "").split():
        name, sep, value = item.partition("=")
        if sep and name.lstrip("+~") == key:
            return value
    return ""


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def collect(client, experiment: str, sweep_id: str, keys: list[str], method: str) -> list[dict[str, Any]]:
    """One row per job with a finished evaluate stage: ``job``, one column per key, then ``NUMBERS``;
    sorted by the keys in order. Exits when no job of the sweep has a value of some key."""
    jobs = _runs(client, experiment, f"tags.mlflow.parentRunId = '{sweep_id}'")
    for key in keys:
        if jobs and not any(_value(job, key) for job in jobs):
            sys.exit(f"no job of sweep {sweep_id} has a param or an override {key!r}; check --key")
    out = []
    for job in jobs:
        values = {k: _value(job, k) for k in keys}
        # a finished job listing its stages carries their metrics: its stage runs need not be read
        listed = job.info.status == "FINISHED" and STAGES_TAG in job.data.tags
        stages = None if listed else _stage_runs(client, experiment, job.info.run_id)
        why = _why_left_out(job, stages)
        if why:
            print(f"job {job.info.run_name} ({_describe(values)}) left out: {why}", file=sys.stderr)
            continue
        out.append({"job": job.info.run_name, **values, **_numbers(client, experiment, job, stages, method)})
    _name_shared_values(out, keys)
    return sorted(out, key=lambda r: [_order(r[k]) for k in keys])


def _stage_runs(client, experiment: str, job_id: str) -> dict[str, Any]:
    """The job's stage runs by stage name."""
    runs = _runs(client, experiment, f"tags.mlflow.parentRunId = '{job_id}'")
    return {r.data.tags.get("stage"): r for r in runs}


def _why_left_out(job, stages: dict[str, Any] | None) -> str | None:
    """Why the job has no finished evaluate stage, or None when it has one; ``stages`` None: the
    job finished, so every stage its ``stages`` tag lists did."""
    if stages is None:
        return None if "evaluate" in job.data.tags[STAGES_TAG].split(",") else "it has no evaluate stage"
    evaluate = stages.get("evaluate")
    if evaluate is None:
        return "it has no evaluate stage"
    return None if evaluate.info.status == "FINISHED" else f"its evaluate stage {evaluate.info.status}"


def _numbers(client, experiment: str, job, stages: dict[str, Any] | None, method: str) -> dict[str, Any]:
    """``NUMBERS`` of a job whose evaluate stage finished: from the job run's metrics where it has
    them; what they lack (interval bounds, or everything for a job logged before jobs carried their
    stages' metrics) from its stage runs, read here when ``stages`` is None."""
    out = _metric_numbers(job, method) if STAGES_TAG in job.data.tags else {}
    if all(c in out for c in NUMBERS):
        return out
    stages = stages if stages is not None else _stage_runs(client, experiment, job.info.run_id)
    if "sft_examples" not in out:
        curate = stages.get("curate")
        out["sft_examples"] = int(curate.data.metrics.get("items_out", 0)) if curate else ""
    row = _aup_row(client, experiment, job, stages["evaluate"], method, required="best_aup" not in out)
    for which in ("best", "last"):
        out.setdefault(f"{which}_aup", row.get(f"{which}_aup", ""))
        for bound in ("lo", "hi"):
            out.setdefault(f"{which}_{bound}", row.get(f"{which}_aup_{bound}", ""))
    return out


def _metric_numbers(job, method: str) -> dict[str, Any]:
    """What the job run's own metrics give of ``NUMBERS``: SFT examples, the method's Best and Last
    AUP and the bounds of their intervals where logged. Exits when the job's AUP pool lacks ``method``."""
    metrics = job.data.metrics
    out: dict[str, Any] = {
        "sft_examples": int(metrics[EXAMPLES_METRIC]) if EXAMPLES_METRIC in metrics else ""
    }
    prefix = AUP_METRIC.format(which="best", method="")
    pool = sorted(k.removeprefix(prefix) for k in metrics if k.startswith(prefix))
    if not pool:
        return out
    if method not in pool:
        sys.exit(
            f"method {method!r} is not in the AUP pool of job {job.info.run_name} (has {pool}); set --method"
        )
    for which in ("best", "last"):
        out[f"{which}_aup"] = f"{metrics[AUP_METRIC.format(which=which, method=method)]:.3f}"
        bounds = [metrics.get(BOUND_METRIC.format(which=which, bound=b, method=method)) for b in ("lo", "hi")]
        if None not in bounds:
            out[f"{which}_lo"], out[f"{which}_hi"] = (f"{v:.3f}" for v in bounds)
    return out


def _aup_row(client, experiment: str, job, stage_run, method: str, required: bool) -> dict[str, Any]:
    """The method's row of the ``aup.csv`` artifact of the evaluate stage's run (of the run that
    computed it, for a cache hit). Without such a run in the experiment: exits when ``required``,
    else says so on stderr and returns ``{}``. Exits when the table lacks ``method``."""
    run_id = _computing_run_id(client, experiment, stage_run)
    if run_id is None:
        tags = stage_run.data.tags
        where = (
            f"the cached evaluate stage (key {tags['content_key']}) of job {job.info.run_name} has no "
            f"finished run that computed it in experiment {experiment!r}"
        )
        if required:
            sys.exit(where)
        print(f"{where}: its AUP intervals are left empty", file=sys.stderr)
        return {}
    local = Path(client.download_artifacts(run_id, "aup.csv"))
    with open(local, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row.get("model") == method:
            return row
    sys.exit(f"method {method!r} not in the AUP table (has {[r.get('model') for r in rows]})")


def _computing_run_id(client, experiment: str, stage_run) -> str | None:
    """The id of the run that holds a stage's files: the stage run itself, or for a cache hit (whose
    run logs only the stored metrics and tables) the finished run that computed the same content key
    (its ``computed_in_run`` tag, else found by the key); None when the experiment has none."""
    tags = stage_run.data.tags
    if tags.get("cache_hit") != "true":
        return stage_run.info.run_id
    if tags.get("computed_in_run"):
        return tags["computed_in_run"]
    found = _runs(
        client,
        experiment,
        f"tags.stage = '{tags['stage']}' AND tags.content_key = '{tags['content_key']}' "
        "AND tags.cache_hit = 'false' AND attributes.status = 'FINISHED'",
    )
    return found[0].info.run_id if found else None


def _name_shared_values(rows: list[dict[str, Any]], keys: list[str]) -> None:
    """Name on stderr the jobs whose values of all ``keys`` are the same: the sweep varies a key
    the table lacks, and their rows would otherwise read as repeats."""
    first: dict[tuple[str, ...], str] = {}
    for row in rows:
        values = tuple(str(row[k]) for k in keys)
        if values in first:
            print(
                f"jobs {first[values]} and {row['job']} share {_describe(dict(zip(keys, values, strict=True)))}: "
                "the sweep varies a key the table lacks; name it with --key",
                file=sys.stderr,
            )
        else:
            first[values] = row["job"]


def _num(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _order(value: Any) -> tuple[int, Any]:
    """Numbers ascending, then other values (``None`` of a nullable key, names) by their text."""
    number = _num(value)
    return (0, number) if isinstance(number, float) else (1, str(value))


def plot(rows: list[dict[str, Any]], keys: list[str], method: str, path: Path) -> None:
    """Best and Last AUP (two panels) against ``keys[0]``, one line per combination of the other
    keys' values, each point with its bootstrap interval where the row has one."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    first, others = keys[0], keys[1:]
    position, ticks = _axis([r[first] for r in rows])
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(str(r[k]) for k in others), []).append(r)
    combos = sorted(groups, key=lambda c: [_order(v) for v in c])
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, which in zip(axes, ("best", "last"), strict=True):
        for i, combo in enumerate(combos):
            members = sorted(groups[combo], key=lambda r: _order(r[first]))
            label = _describe(dict(zip(others, combo, strict=True)))
            _line(ax, [position(r[first]) for r in members], members, which, f"C{i % 10}", label)
        if ticks:
            ax.set_xticks(range(len(ticks)), ticks)
        ax.set_xlabel(first)
        ax.set_title(f"{which.capitalize()} AUP")
        if others:
            ax.legend(fontsize="small")
    axes[0].set_ylabel(f"AUP of '{method}'")
    fig.suptitle("AUP across the sweep (bootstrap intervals)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _axis(values: list[Any]) -> tuple[Any, list[str]]:
    """Where a value of the plotted key goes: itself when every value is a number, else (e.g. null
    among numbers) the index of its category in sorted order, with those categories as tick labels."""
    if all(isinstance(_num(v), float) for v in values):
        return _num, []
    ticks = sorted({str(v) for v in values}, key=_order)
    return (lambda v: ticks.index(str(v))), ticks


def _line(ax, xs: list[Any], rows: list[dict[str, Any]], which: str, colour: str, label: str) -> None:
    ax.plot(xs, [float(r[f"{which}_aup"]) for r in rows], marker="o", color=colour, label=label)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--key",
        action="append",
        help="config key to table, repeatable; the first is the plot's x axis (default: the keys the "
        "sweep varies; those not given are added after the given ones)",
    )
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
    keys = sweep_keys(client, sweep_id, args.key)
    rows = collect(client, args.experiment, sweep_id, keys, args.method)
    if not rows:
        sys.exit(f"sweep {sweep_id} has no job with an evaluate stage")
    columns = ["job", *keys, *NUMBERS]
    args.output.mkdir(parents=True, exist_ok=True)
    with open(args.output / "sweep_table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, keys, args.method, args.output / "sweep_aup.png")
    print(f"sweep {sweep_id}, method {args.method}")
    shown = columns[1:]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in shown]
    print("  ".join(f"{c:>{w}}" for c, w in zip(shown, widths, strict=True)))
    for r in rows:
        print("  ".join(f"{str(r[c]):>{w}}" for c, w in zip(shown, widths, strict=True)))
    print(f"sweep_jobs: {len(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
