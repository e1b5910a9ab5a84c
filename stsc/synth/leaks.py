"""The no-leak gate: does any file of an agent workspace reveal the held-out labels?

Checked on file contents, not names: a workspace file byte-identical to a private file, or a CSV
column that reproduces a label column of a private CSV (joined on the private file's first column,
the id, when the workspace file has it; row by row when both have the same number of rows). A
column counts as a leak when it matches on at least 98% of the rows, and clearly more often than
always guessing the majority label would.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def _normalised(series: pd.Series) -> pd.Series:
    import pandas as pd

    numbers = pd.to_numeric(series, errors="coerce")
    text = series.astype(str).str.strip()
    return text.where(numbers.isna(), numbers.map(lambda x: f"{x:.9g}"))


def _leaky_columns(
    truth: pd.DataFrame, frame: pd.DataFrame, labels: list[str]
) -> list[tuple[str, str, float]]:
    """(label, column, match rate) where ``frame``'s column reproduces a label column row by row."""
    found = []
    for label in labels:
        expected = _normalised(truth[label]).reset_index(drop=True)
        majority = float(expected.value_counts(normalize=True).iloc[0]) if len(expected) else 1.0
        if majority >= 1.0:
            continue
        threshold = max(0.98, majority + 0.5 * (1.0 - majority))
        for column in frame.columns:
            rate = float((_normalised(frame[column]).reset_index(drop=True) == expected).mean())
            if rate >= threshold:
                found.append((label, str(column), rate))
    return found


def find_label_leaks(workspace: Path, private: Path, min_rows: int = 5) -> list[str]:
    """Workspace files that reveal private labels: byte-identical copies of a private file, or a CSV
    column matching a label column of a private CSV (joined on its first column, the id, when the
    file has it; row by row when it has the same number of rows). Empty list = no leak found."""
    import pandas as pd

    def digest(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    private_files = [p for p in sorted(private.rglob("*")) if p.is_file()]
    workspace_files = [p for p in sorted(workspace.rglob("*")) if p.is_file()]
    hashes = {digest(p): p.name for p in private_files}
    leaks = [
        f"{p.relative_to(workspace)} is a copy of private/{hashes[digest(p)]}"
        for p in workspace_files
        if digest(p) in hashes
    ]
    for answer in (p for p in private_files if p.suffix == ".csv"):
        try:
            truth = pd.read_csv(answer, dtype=str, keep_default_na=False)
        except (ValueError, UnicodeDecodeError):
            continue  # unreadable labels fail the evaluation step instead
        if truth.shape[1] < 2 or len(truth) < min_rows:
            continue
        key, labels = truth.columns[0], list(truth.columns[1:])
        for path in (p for p in workspace_files if p.suffix == ".csv"):
            try:
                frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            except (ValueError, UnicodeDecodeError):
                continue
            if key in frame.columns:
                renamed = frame.rename(columns={c: f"ws::{c}" for c in frame.columns if c != key})
                merged = truth.merge(renamed, on=key, how="inner")
                if len(merged) < max(min_rows, len(truth) // 2):
                    continue
                columns = merged[[c for c in renamed.columns if c != key]]
                hits = _leaky_columns(merged, columns, labels)
            elif len(frame) == len(truth):
                hits = _leaky_columns(truth, frame, labels)
            else:
                continue
            rel = path.relative_to(workspace)
            leaks += [
                f"{rel} column {col.removeprefix('ws::')!r} matches private/{answer.name} column {label!r} "
                f"on {rate:.0%} of the test rows"
                for label, col, rate in hits
            ]
    return leaks
