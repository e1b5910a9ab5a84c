"""Score a submission of this task.

Usage: python evaluate.py --submission_file submission.csv

Prints exactly one line, a JSON object holding the task's metric, and nothing else. The held-out
labels are read from the folder named by the STSC_PRIVATE_DIR environment variable (the scoring
step provides it). The submission must hold the id column and the target column, with exactly one
row per test id, and for classification a class of the target in every row (as spelled in
data/train.csv; 1 and 1.0 are one class); otherwise the script exits non-zero and says what is wrong.

When the private folder lists public ids (public_ids.csv), the test rows are split like a
leaderboard: with STSC_SCORE_SPLIT=validate only the public rows are scored (what `validate` shows
the agent); otherwise (submit, the default) only the other rows are, so the final score never uses
rows whose score the agent has seen.
"""

import argparse
import csv
import json
import math
import os
import sys

SPEC = {"id_column": "id", "target": "y", "task_type": "classification", "metric": "accuracy", "classes": []}
ANSWERS_FILE = "answers.csv"
PUBLIC_IDS_FILE = "public_ids.csv"


def fail(message):
    sys.stderr.write(f"evaluate.py: {message}\n")
    sys.exit(1)


def read_rows(path, what):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        fail(f"cannot read the {what} {path}: {e}")
    for column in (SPEC["id_column"], SPEC["target"]):
        if column not in header:
            fail(f"the {what} {path} has no column '{column}' (columns: {header})")
    return rows


def by_id(rows, what):
    out = {}
    for row in rows:
        key = row[SPEC["id_column"]].strip()
        if key in out:
            fail(f"the {what} repeats {SPEC['id_column']} {key!r}; give exactly one row per id")
        out[key] = row[SPEC["target"]]
    return out


def label(value):
    value = (value or "").strip()
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if math.isfinite(number) and number == int(number) else value


def refuse_unknown_classes(submitted, truth):
    """Exit non-zero when a prediction is not a class: one of SPEC's (the labelled files') or a test label."""
    classes = {label(c) for c in SPEC["classes"]} | {label(v) for v in truth.values()}
    unknown = [k for k, v in submitted.items() if label(v) not in classes]
    if unknown:
        shown = ", ".join(f"id {k!r}: {submitted[k]!r}" for k in unknown[:5])
        more = f" and {len(SPEC['classes']) - 20} more" if len(SPEC["classes"]) > 20 else ""
        fail(
            f"{len(unknown)} prediction(s) are not classes of '{SPEC['target']}' ({shown}); predict a "
            f"class as spelled in data/train.csv: one of {SPEC['classes'][:20]}{more}"
        )


def number(value, key):
    try:
        x = float(value)
    except (TypeError, ValueError):
        fail(f"prediction for id {key!r} is {value!r}, not a number")
    if not math.isfinite(x):
        fail(f"prediction for id {key!r} is {value!r}; predictions must be finite numbers")
    return x


def classification_score(y_true, y_pred, metric):
    if metric == "accuracy":
        return sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(y_true)
    classes = sorted(set(y_true) | set(y_pred)) if metric == "macro_f1" else sorted(set(y_true))
    scores = []
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(y_true, y_pred, strict=True))
        fp = sum(t != c and p == c for t, p in zip(y_true, y_pred, strict=True))
        fn = sum(t == c and p != c for t, p in zip(y_true, y_pred, strict=True))
        if metric == "macro_f1":
            scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        else:
            scores.append(tp / (tp + fn) if tp + fn else 0.0)
    return sum(scores) / len(scores)


def regression_score(y_true, y_pred, metric):
    errors = [p - t for t, p in zip(y_true, y_pred, strict=True)]
    if metric == "rmse":
        return math.sqrt(sum(e * e for e in errors) / len(errors))
    if metric == "mae":
        return sum(abs(e) for e in errors) / len(errors)
    mean = sum(y_true) / len(y_true)
    total = sum((t - mean) ** 2 for t in y_true)
    residual = sum(e * e for e in errors)
    if total == 0:  # every true value equal: perfect predictions score 1, others 0 (as scikit-learn)
        return 1.0 if residual == 0 else 0.0
    return 1.0 - residual / total


def scored_ids(private_dir, ids):
    """The test ids this run scores: the public ones for validate, the rest for submit."""
    split = os.environ.get("STSC_SCORE_SPLIT") or "submit"
    if split not in ("validate", "submit"):
        fail(f"STSC_SCORE_SPLIT is {split!r}; use 'validate' or 'submit'")
    path = os.path.join(private_dir, PUBLIC_IDS_FILE)
    if not os.path.exists(path):
        return ids
    with open(path, newline="", encoding="utf-8") as f:
        public = {row[SPEC["id_column"]].strip() for row in csv.DictReader(f)}
    keys = [k for k in ids if (k in public) == (split == "validate")]
    if not keys:
        fail(f"the {split} split of the test rows is empty; check {PUBLIC_IDS_FILE}")
    return keys


def main():
    parser = argparse.ArgumentParser(description="Score a submission file.")
    parser.add_argument("--submission_file", default="submission.csv")
    args = parser.parse_args()
    private_dir = os.environ.get("STSC_PRIVATE_DIR")
    if not private_dir:
        fail("STSC_PRIVATE_DIR is not set; the held-out labels are only available to the scoring step")
    truth = by_id(read_rows(os.path.join(private_dir, ANSWERS_FILE), "answer file"), "answer file")
    submitted = by_id(read_rows(args.submission_file, "submission"), "submission")
    missing = [k for k in truth if k not in submitted]
    extra = [k for k in submitted if k not in truth]
    if missing or extra:
        fail(
            f"the submission must have one row per id of data/test.csv ({len(truth)} rows); "
            f"missing ids: {missing[:5]} ({len(missing)} in all), unknown ids: {extra[:5]} ({len(extra)} in all)"
        )
    if SPEC["task_type"] == "classification":
        refuse_unknown_classes(submitted, truth)
    keys = scored_ids(private_dir, list(truth))
    if SPEC["task_type"] == "classification":
        score = classification_score(
            [label(truth[k]) for k in keys], [label(submitted[k]) for k in keys], SPEC["metric"]
        )
    else:
        y_true = [float(truth[k]) for k in keys]
        score = regression_score(y_true, [number(submitted[k], k) for k in keys], SPEC["metric"])
    print(json.dumps({SPEC["metric"]: score}))


if __name__ == "__main__":
    main()
