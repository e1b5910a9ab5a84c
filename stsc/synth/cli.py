"""``stsc-tasks``: inspect and export task libraries.

    stsc-tasks list <library> [--heldout-fraction F --seed S]   the tasks as a table (and their split)
    stsc-tasks check <library-or-task>                          shape-check against the task contract
    stsc-tasks export-mlgym <library> <out> [--task ID ...]     write an MLGym repository tree

``<library>`` is a ``validate`` stage folder, its ``library/`` folder, or any folder of task folders.
Exit status: 0 on success, 1 when ``check`` finds problems, 2 on bad input.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.4g}"


def format_table(rows: list[list[str]]) -> str:
    """Left-aligned plain-text table; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    from stsc.synth.library import list_tasks, split_library

    tasks = list_tasks(args.library)
    if not tasks:
        print(f"no tasks in {args.library}")
        return 0
    split = (
        split_library(tasks, args.heldout_fraction, args.seed) if args.heldout_fraction is not None else None
    )
    header = ["task_id", "dataset", "type", "target", "metric", "goal", "baseline", "generator"]
    rows = [header + (["split"] if split else [])]
    for t in tasks:
        m = t.meta
        row = [t.task_id, m.dataset_id, m.task_type, m.target, m.metric, "max" if m.higher_is_better else "min",
               _fmt(m.baseline_score), m.generator]  # fmt: skip
        rows.append(row + ([split.side(t.task_id)] if split else []))
    print(format_table(rows))
    datasets = len({t.meta.dataset_id for t in tasks})
    summary = f"{len(tasks)} tasks from {datasets} datasets"
    if split:
        summary += f"; split seed {split.seed}: {len(split.train)} train, {len(split.heldout)} held out ({', '.join(split.heldout_datasets)})"
    print(summary)
    return 0


def _check(args: argparse.Namespace) -> int:
    from stsc.synth.library import library_root
    from stsc.synth.task import TASK_YAML, check_task_folder

    root = library_root(args.path)
    folders = (
        [root]
        if (root / TASK_YAML).is_file()
        else sorted(p for p in root.iterdir() if (p / TASK_YAML).is_file())
    )
    bad = 0
    for folder in folders:
        problems = check_task_folder(folder)
        bad += bool(problems)
        print(f"{folder.name}: {'ok' if not problems else 'INVALID'}")
        for problem in problems:
            print(f"  - {problem}")
    print(f"{len(folders) - bad} of {len(folders)} task folders satisfy the task contract")
    return 1 if bad else 0


def _export(args: argparse.Namespace) -> int:
    from stsc.synth.mlgym_export import export_mlgym

    report = export_mlgym(args.library, args.out, args.task or None)
    print(f"exported {len(report.tasks)} tasks to {report.root} (configs/tasks, configs/datasets, data/)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stsc-tasks", description="Inspect and export stsc task libraries.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="print the tasks of a library as a table")
    p.add_argument("library", type=Path)
    p.add_argument("--heldout-fraction", type=float, default=None, help="also show the by-dataset split")
    p.add_argument("--seed", type=int, default=0, help="split seed (with --heldout-fraction)")
    p.set_defaults(fn=_list)
    p = sub.add_parser("check", help="check task folders against the task contract")
    p.add_argument("path", type=Path)
    p.set_defaults(fn=_check)
    p = sub.add_parser("export-mlgym", help="write the library as an MLGym repository tree")
    p.add_argument("library", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--task", action="append", help="export only this task id (repeatable)")
    p.set_defaults(fn=_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``stsc-tasks``; returns the exit status."""
    from stsc.errors import StscError

    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except (StscError, ValueError, FileNotFoundError) as e:
        print(f"stsc-tasks: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
