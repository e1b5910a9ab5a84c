"""``stsc-aup``: performance profiles and AUP of a folder of MLGym-layout run folders.

    stsc-aup RUNS_DIR [--models a,b,c] [--tasks x,y] [--task-meta DIR] --output OUT [--bootstrap N]

Writes ``OUT/aup.csv``, ``OUT/best_scores.csv``, ``OUT/last_scores.csv``, ``OUT/aup.json`` and
``OUT/performance_profile.png`` and prints the AUP table with its pool and ``max_tau``. Priority
metrics and directions are built in for the 13 MLGym-Bench tasks; other tasks are read from
``--task-meta`` folders (``meta.json``) or from each run's ``stsc.json`` when it names them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from stsc.errors import StscError
from stsc.evaluation.aup import AUPResult, compute_aup, write_aup_outputs
from stsc.evaluation.mlgym_tasks import (
    MLGYM_TASKS,
    TaskScoring,
    has_scoring_fields,
    load_task_meta_dir,
    merge_scorings,
    scoring_from_meta,
)
from stsc.evaluation.runs import RunResult, load_runs

logger = logging.getLogger(__name__)


def _csv_list(text: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list with at least one name")
    return items


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stsc-aup",
        description="Performance profiles and AUP (MLGym semantics) of a folder of run folders.",
    )
    p.add_argument("runs_dir", type=Path, metavar="RUNS_DIR", help="folder of MLGym-layout run folders")
    p.add_argument("--models", type=_csv_list, help="comparison pool, comma-separated (default: all found)")
    p.add_argument("--tasks", type=_csv_list, help="tasks to score, comma-separated (default: all run)")
    p.add_argument(
        "--task-meta",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="task folder or folder of task folders with meta.json (repeatable)",
    )
    p.add_argument("--output", "-o", type=Path, required=True, metavar="OUT", help="output folder")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (0 = none)")
    p.add_argument("--confidence", type=float, default=0.95, help="bootstrap interval level")
    p.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed")
    p.add_argument("--no-plot", action="store_true", help="skip performance_profile.png")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _run_scorings(runs: Sequence[RunResult]) -> dict[str, TaskScoring]:
    """Scorings named by the runs' own ``stsc.json`` files (first run of each task wins)."""
    found: dict[str, TaskScoring] = {}
    for run in runs:
        if run.task_id not in found and has_scoring_fields(run.meta):
            found[run.task_id] = scoring_from_meta(run.meta, task_id=run.task_id)
    return found


def _format_table(result: AUPResult) -> str:
    level = f"{result.confidence:.0%}"
    head = f"{'model':<36} {'best_aup':>8} {'last_aup':>8}"
    if result.bootstrap_samples:
        head += f"  {'best ' + level + ' CI':>16}  {'last ' + level + ' CI':>16}"
    lines = [
        f"pool ({len(result.pool)} models + baseline): {', '.join(result.pool)}",
        f"tasks ({len(result.tasks)}): {', '.join(result.tasks)}",
        f"max_tau: {result.max_tau:g}",
        head,
    ]
    for m in result.methods:
        line = f"{m:<36} {result.best_aup[m]:>8.3f} {result.last_aup[m]:>8.3f}"
        if result.bootstrap_samples:
            b, c = result.best_ci[m], result.last_ci[m]
            line += f"  {f'[{b.lo:.3f}, {b.hi:.3f}]':>16}  {f'[{c.lo:.3f}, {c.hi:.3f}]':>16}"
        lines.append(line)
    if result.bootstrap_samples:
        lines.append(f"intervals: {result.bootstrap_samples} bootstrap resamples of runs, seed {result.seed}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> AUPResult:
    """Load runs and scorings, compute AUP and write the output files; raises :class:`StscError`."""
    runs = load_runs(args.runs_dir, models=args.models, tasks=args.tasks)
    meta_scorings = [load_task_meta_dir(d) for d in args.task_meta]
    scorings = merge_scorings(MLGYM_TASKS, _run_scorings(runs), *meta_scorings)
    pool = args.models if args.models is not None else sorted({r.model for r in runs})
    result = compute_aup(
        runs,
        scorings,
        pool,
        args.tasks,
        bootstrap=args.bootstrap,
        seed=args.seed,
        confidence=args.confidence,
    )
    paths = write_aup_outputs(result, args.output, plot=not args.no_plot)
    logger.info("wrote %s", ", ".join(str(p) for p in paths))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns 0 on success and 2 on bad input (the message says what to fix)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    try:
        result = run(args)
    except StscError as exc:
        print(f"stsc-aup: error: {exc}", file=sys.stderr)
        return 2
    print(_format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
