"""The no-leak gate: does any file of an agent workspace reveal the held-out labels?

Checked on file contents, not names: a workspace file byte-identical to a private file, or a CSV
column that gives a label column of a private CSV away. Rows are joined on the private file's first
column, the id (found in the workspace file under its own name or under any other name whose values
are those ids; ids compare as numbers where they are numbers), else row by row when both files have
the same number of rows. A column leaks when it reproduces the label, relabels it (class codes,
another spelling: each of its values stands for one class) or, for a numeric label, orders the rows
like it (rank correlation at least 0.999: a rounded or rescaled copy); in the first two cases on at
least 98% of the rows, and clearly more often than always guessing the majority label would. The
ids themselves leak when, in a file holding the label for other rows (``train.csv``), the label of
the row with the nearest id passes the same test (ids numbered before a table sorted by its label
was shuffled).
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


def id_key(value: object) -> str:
    """An id as evaluators compare it, exactly: ``7``, ``7.0`` and `` 7`` are one id, and long
    ids stay distinct (no float rounding)."""
    from decimal import Decimal, InvalidOperation

    text = str(value).strip()
    try:
        number = Decimal(text)
    except InvalidOperation:
        return text
    if not number.is_finite():
        return text
    return str(int(number)) if number == number.to_integral_value() else str(number.normalize())


def _ids(series: pd.Series) -> pd.Series:
    return series.map(id_key)


RANK_CORRELATION = 0.999


def _leaky_columns(
    truth: pd.DataFrame, frame: pd.DataFrame, labels: list[str]
) -> list[tuple[str, str, float]]:
    """(label, column, rate) where ``frame``'s column, row by row, reproduces or relabels a label
    column (rate: the share of rows it gets right) or ranks a numeric one (rate: |Spearman rho|)."""
    import pandas as pd

    found = []
    for label in labels:
        expected = _normalised(truth[label]).reset_index(drop=True)
        majority = float(expected.value_counts(normalize=True).iloc[0]) if len(expected) else 1.0
        if majority >= 1.0:
            continue
        threshold = max(0.98, majority + 0.5 * (1.0 - majority))
        classes = expected.nunique()
        categorical = classes <= max(2, min(50, len(expected) // 2))
        numeric_label = pd.to_numeric(truth[label], errors="coerce").reset_index(drop=True)
        for column in frame.columns:
            values = _normalised(frame[column]).reset_index(drop=True)
            rate = float((values == expected).mean())
            if rate < threshold and categorical and values.nunique() <= classes:
                pairs = pd.DataFrame({"x": values, "y": expected})
                rate = float(
                    pairs.groupby("x")["y"].agg(lambda y: y.value_counts().iloc[0]).sum() / len(pairs)
                )
            if rate >= threshold:
                found.append((label, str(column), rate))
            elif not categorical and numeric_label.notna().mean() >= 0.98:
                numbers = pd.to_numeric(frame[column].reset_index(drop=True), errors="coerce")
                if numbers.notna().mean() >= 0.98:
                    rho = numbers.corr(numeric_label, method="spearman")
                    if pd.notna(rho) and abs(rho) >= RANK_CORRELATION:
                        found.append((label, str(column), float(abs(rho))))
    return found


def _id_column(frame: pd.DataFrame, key: str, ids: set[str]) -> str | None:
    """The column of ``frame`` holding the private ids: ``key`` itself, else a column of unique
    values that covers at least 90% of ``ids``."""
    if key in frame.columns:
        return key
    for column in frame.columns:
        values = _ids(frame[column])
        if values.is_unique and len(ids & set(values)) >= 0.9 * len(ids):
            return str(column)
    return None


def _id_order_hits(
    truth: pd.DataFrame, key: str, labels: list[str], frame: pd.DataFrame, id_column: str
) -> list[tuple[str, float]]:
    """(label, rate) where the label of ``frame``'s row with the nearest numeric id, among rows
    that are not test rows, reproduces (or ranks) ``truth``'s label as ``_leaky_columns`` judges:
    ids handed out before a table sorted by its label was shuffled give the label away."""
    import numpy as np
    import pandas as pd

    test_ids = pd.to_numeric(truth[key], errors="coerce")
    other = frame[~_ids(frame[id_column]).isin(set(_ids(truth[key])))]
    known = pd.to_numeric(other[id_column], errors="coerce")
    if test_ids.isna().any() or known.isna().any() or len(known) < 2:
        return []
    order = np.argsort(known.to_numpy(), kind="stable")
    sorted_ids = known.to_numpy()[order]
    right = np.clip(np.searchsorted(sorted_ids, test_ids.to_numpy()), 1, len(sorted_ids) - 1)
    left = right - 1
    closer_left = np.abs(test_ids.to_numpy() - sorted_ids[left]) <= np.abs(
        sorted_ids[right] - test_ids.to_numpy()
    )
    nearest = order[np.where(closer_left, left, right)]
    found = []
    for label in (c for c in labels if c in other.columns):
        guess = pd.DataFrame({label: other[label].to_numpy()[nearest]})
        found += [(label, rate) for label, _, rate in _leaky_columns(truth, guess, [label])]
    return found


def find_label_leaks(
    workspace: Path, private: Path, min_rows: int = 5, id_column: str | None = None
) -> list[str]:
    """Workspace files that reveal private labels: byte-identical copies of a private file, or a CSV
    column matching a label column of a private CSV (joined on its id column when the file has it:
    ``id_column`` (the task's, see ``Task.id_column``) where the private CSV has that column, else
    its first; row by row when it has the same number of rows). Empty list = no leak found."""
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
        key = id_column if id_column in truth.columns else truth.columns[0]
        labels = [c for c in truth.columns if c != key]
        ids = set(_ids(truth[key]))
        for path in (p for p in workspace_files if p.suffix == ".csv"):
            try:
                frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            except (ValueError, UnicodeDecodeError):
                continue
            id_column = _id_column(frame, key, ids)
            rel = path.relative_to(workspace)
            if id_column is not None:
                leaks += [
                    f"{rel} column {id_column!r} gives private/{answer.name} column {label!r} away: the "
                    f"{label!r} of the row with the nearest {id_column!r} matches on {rate:.0%} of the test rows"
                    for label, rate in _id_order_hits(truth, key, labels, frame, id_column)
                ]
            merged = None
            if id_column is not None:
                renamed = frame.rename(columns={c: f"ws::{c}" for c in frame.columns})
                renamed["__id"] = _ids(frame[id_column])
                merged = truth.assign(__id=_ids(truth[key])).merge(renamed, on="__id", how="inner")
                if len(merged) < max(min_rows, len(truth) // 2):
                    merged = None
            if merged is not None:
                columns = merged[[f"ws::{c}" for c in frame.columns if c != id_column]]
                hits = _leaky_columns(merged, columns, labels)
            elif len(frame) == len(truth):
                hits = _leaky_columns(truth, frame, labels)
            else:
                continue
            leaks += [
                f"{rel} column {col.removeprefix('ws::')!r} matches private/{answer.name} column {label!r} "
                f"on {rate:.0%} of the test rows"
                for label, col, rate in hits
            ]
    return leaks
