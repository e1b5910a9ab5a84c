"""The exploit probes of ``gate_exploit_probes`` (see ``stsc.synth.checks``): submissions built to
catch an evaluate.py that can be gamed, run in the task's sandbox after the baseline.

- evaluate.py must refuse to score without ``$STSC_PRIVATE_DIR`` and refuse a submission missing
  rows or repeating ids (even with the right row count);
- the baseline's submission with its rows reversed scores exactly the baseline's score (labels
  matched by id, not position);
- the sample submission and a constant prediction do not beat the baseline, nor do all three score
  the same when the constant prediction differs from the baseline's (a score blind to the
  predictions);
- the baseline's submission with the true labels in a quarter of the scored rows and blank
  predictions in the others is refused or scores worse than the true labels in every row (blank
  predictions are not dropped from the score).

Ids are read from the task's id column (``Task.id_column``: the one meta.json records, else the
first column of ``private/answers.csv``).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from stsc.errors import EvaluationError
from stsc.sandbox.base import ExecResult, Sandbox
from stsc.synth.checks import (
    Failure,
    Step,
    command_failure,
    parse_metrics,
    run_evaluation,
    same_score,
)
from stsc.synth.leaks import id_key
from stsc.synth.task import ANSWERS, WORKSPACE, Task
from stsc.synth.template import PUBLIC_IDS

if TYPE_CHECKING:
    import pandas as pd


def submission_id_column(task: Task, columns: list[str]) -> str:
    """Which of a submission's ``columns`` holds the ids: the task's id column (``Task.id_column``)
    when the submission has it, else the submission's first column."""
    declared = task.id_column
    return declared if declared is not None and declared in columns else str(columns[0])


def probe_submissions(task: Task, out_dir: Path) -> dict[str, Path]:
    """Probe files built from the sample submission: ``constant`` (one value per prediction column,
    every column but the id: the training mode/mean of the target, else the sample's first value),
    ``partial`` (the first half of the rows) and ``duplicated`` (as many rows as the sample, but the
    first half of them twice and the rest missing)."""
    import pandas as pd

    sample = pd.read_csv(task.path / task.config.sample_submission)
    train_path = task.workspace / "data" / "train.csv"
    train = pd.read_csv(train_path) if train_path.is_file() else None
    constant = sample.copy()
    id_column = submission_id_column(task, [str(c) for c in sample.columns])
    for column in (c for c in sample.columns if c != id_column):
        value = sample[column].iloc[0] if len(sample) else 0
        if column == task.meta.target and train is not None and column in train.columns:
            labels = train[column].dropna()
            if len(labels):
                value = labels.mode().iloc[0] if task.meta.task_type != "regression" else float(labels.mean())
        constant[column] = value
    out = {name: out_dir / f"probe_{name}.csv" for name in ("constant", "partial", "duplicated")}
    constant.to_csv(out["constant"], index=False)
    half = len(sample) // 2
    sample.iloc[:half].to_csv(out["partial"], index=False)
    sample.iloc[[i % max(1, half) for i in range(len(sample))]].to_csv(out["duplicated"], index=False)
    return out


# Probe submissions evaluate.py must refuse, and what is wrong with each.
REFUSED_PROBES = {
    "partial": "missing half of the test ids",
    "duplicated": "with the right number of rows that repeats some test ids and misses others",
}


def exploit_probes(
    task: Task, sandbox: Sandbox, baseline: float, timeout: float, seen: dict
) -> Failure | None:
    """Refusals first (no labels, missing rows), then trivial submissions against the baseline."""
    unprivileged = sandbox.exec(
        f"python {task.config.evaluation_paths[0]} --submission_file submission.csv", timeout=timeout
    )
    if unprivileged.ok:
        return command_failure(
            Step.EXPLOIT,
            "evaluate.py scored a submission without $STSC_PRIVATE_DIR; it must read the labels only from there",
            unprivileged,
        )
    with tempfile.TemporaryDirectory(prefix="stsc-probes-") as tmp:
        try:
            files = probe_submissions(task, Path(tmp))
        except (ValueError, UnicodeDecodeError) as e:
            return Failure(
                Step.SHAPE, f"sample_submission.csv or data/train.csv is not a readable CSV file: {e}"
            )
        for path in files.values():
            sandbox.put(path, path.name)
        for name, what in REFUSED_PROBES.items():
            run = run_evaluation(sandbox, task, files[name].name, timeout)
            if run.ok:
                return command_failure(
                    Step.EXPLOIT, f"evaluate.py accepted a submission {what}; it must exit non-zero", run
                )
        probes = {
            "sample_submission": task.config.sample_submission.removeprefix(f"{WORKSPACE}/"),
            "constant": files["constant"].name,
        }
        for name, rel in probes.items():
            failure = _trivial_probe(task, sandbox, name, rel, baseline, timeout, seen)
            if failure is not None:
                return failure
        failure = _blind_evaluator(task, sandbox, baseline, files["constant"], seen)
        return failure or _blanked_probe(task, sandbox, baseline, timeout, seen)


def _blind_evaluator(
    task: Task, sandbox: Sandbox, baseline: float, constant: Path, seen: dict
) -> Failure | None:
    """An evaluator whose score does not depend on the predictions gives every valid submission the
    same score: the baseline's, the sample's and the constant probe's all equal although the constant
    probe predicts differently from the baseline."""
    import pandas as pd

    scores = [seen.get("sample_submission"), seen.get("constant")]
    if not all(isinstance(v, float) and same_score(v, baseline) for v in scores):
        return None
    with tempfile.TemporaryDirectory(prefix="stsc-probes-") as tmp:
        sandbox.get("submission.csv", Path(tmp) / "baseline.csv")
        try:
            ours = pd.read_csv(Path(tmp) / "baseline.csv", dtype=str, keep_default_na=False)
            probe = pd.read_csv(constant, dtype=str, keep_default_na=False)
            id_column = submission_id_column(task, list(probe.columns))
            joined = ours.merge(probe, on=id_column, suffixes=("", "_probe"))
            columns = [c for c in probe.columns if c != id_column and c in ours.columns]
            differ = any((joined[c] != joined[f"{c}_probe"]).any() for c in columns)
        except (ValueError, KeyError, UnicodeDecodeError):
            return None  # the submissions cannot be compared: no evidence either way
    if not differ:
        return None
    return Failure(
        Step.EXPLOIT,
        f"evaluate.py gives the baseline's submission, the sample submission and a constant prediction "
        f"the same {task.meta.metric}={baseline}: its score does not depend on the predictions",
    )


BLANKED_STEP = 4  # the blanked probe keeps the labels in every 4th scored row, in label order


def _label_columns(predictions: list[str], labels: list[str]) -> dict[str, str]:
    """Which label column of ``private/answers.csv`` each prediction column of a submission
    predicts: the one of the same name, or, with one prediction and one label column, that one."""
    paired = {c: c for c in predictions if c in labels}
    if not paired and len(predictions) == 1 and len(labels) == 1:
        paired = {predictions[0]: labels[0]}
    return paired


def _blanked_submissions(task: Task, submission: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], int]:
    """From the baseline's ``submission``: ``labels``, the labels of ``private/answers.csv`` in the
    prediction columns they pair with (``_label_columns``), and ``blanked``, those labels in every
    ``BLANKED_STEP``-th scored row (of the submit split) in label order and blank prediction cells in
    every other row. Also returns how many rows keep their labels (0: no label column pairs with a
    prediction column, or the submission's ids are not the answers': nothing to probe)."""
    import pandas as pd

    id_column = submission_id_column(task, list(submission.columns))
    columns = [c for c in submission.columns if c != id_column]
    truth = pd.read_csv(task.private / ANSWERS, dtype=str, keep_default_na=False)
    truth_id = task.id_column if task.id_column in truth.columns else truth.columns[0]
    truth.index = truth[truth_id].map(id_key)
    truth = truth[~truth.index.duplicated()]
    pairs = _label_columns(columns, [c for c in truth.columns if c != truth_id])
    keys = submission[id_column].map(id_key)
    if not pairs or not keys.isin(truth.index).all():
        return {}, 0
    scored = pd.Series(True, index=submission.index)
    if (task.private / PUBLIC_IDS).is_file():
        public = pd.read_csv(task.private / PUBLIC_IDS, dtype=str, keep_default_na=False)
        scored &= ~keys.isin(set(public[public.columns[0]].map(id_key)))
    labels = submission.copy()
    for column, answer in pairs.items():
        labels[column] = truth[answer].reindex(keys).to_numpy()
    first = labels.loc[scored, next(iter(pairs))]
    numbers = pd.to_numeric(first, errors="coerce")
    order = (numbers if numbers.notna().all() else first).sort_values(kind="stable").index
    kept = order[::BLANKED_STEP]
    blanked = labels.copy()
    blanked.loc[~blanked.index.isin(kept), columns] = ""
    return {"blanked": blanked, "labels": labels}, len(kept)


def _probe_run(
    task: Task, sandbox: Sandbox, rel: str, timeout: float, seen: dict
) -> tuple[ExecResult, float | None]:
    """evaluate.py on the probe file ``rel``: the run and its score (None when refused or unparsed),
    recorded in ``seen`` under the probe's name."""
    run = run_evaluation(sandbox, task, rel, timeout)
    try:
        value = parse_metrics(run, task.meta.metric, strict=False)[task.meta.metric] if run.ok else None
    except EvaluationError:
        value = None
    seen[rel.removeprefix("probe_").removesuffix(".csv")] = "rejected" if value is None else value
    return run, value


def _probe_score(task: Task, sandbox: Sandbox, rel: str, timeout: float, seen: dict) -> float | None:
    """The finite score evaluate.py gives the probe file ``rel``, or None (refused, no score)."""
    _, value = _probe_run(task, sandbox, rel, timeout, seen)
    return value if value is not None and math.isfinite(value) else None


def _worse(task: Task, a: float, b: float) -> bool:
    """Score ``a`` is worse than ``b`` beyond floating-point noise, in the task's direction."""
    return task.meta.is_better(b, a) and not same_score(a, b)


def _blanked_probe(
    task: Task, sandbox: Sandbox, baseline: float, timeout: float, seen: dict
) -> Failure | None:
    """The baseline's submission with the true labels in a quarter of the scored rows, spread over
    the labels, and blank predictions in all other rows (an agent sure of some rows would submit
    those alone). An evaluator that drops blank predictions and scores the rest scores only rows
    predicted perfectly: as well as the submission with the labels in every row, whatever the
    metric. A sound one refuses it, or scores a blank as some prediction (a wrong one, or a fallback
    of its own) and so below the labels. No evidence when the labels do not score better than the
    baseline (a score blind to the predictions) or no prediction column pairs with a label column."""
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="stsc-probes-") as tmp:
        sandbox.get("submission.csv", Path(tmp) / "baseline.csv")
        try:
            submission = pd.read_csv(Path(tmp) / "baseline.csv", dtype=str, keep_default_na=False)
            frames, kept = _blanked_submissions(task, submission)
        except (ValueError, KeyError, UnicodeDecodeError, OSError):
            return None  # unreadable submissions or answers fail other steps: no evidence here
        for name, frame in frames.items():
            frame.to_csv(Path(tmp) / f"probe_{name}.csv", index=False)
            sandbox.put(Path(tmp) / f"probe_{name}.csv", f"probe_{name}.csv")
    blank = _probe_score(task, sandbox, "probe_blanked.csv", timeout, seen) if kept else None
    if blank is None:
        return None
    labels = _probe_score(task, sandbox, "probe_labels.csv", timeout, seen)
    if labels is None or not _worse(task, baseline, labels) or _worse(task, blank, labels):
        return None
    metric = task.meta.metric
    return Failure(
        Step.EXPLOIT,
        f"evaluate.py scored the baseline's submission with the true labels in {kept} of the scored "
        f"rows and blank predictions in all others {metric}={blank}, no worse than the true labels in "
        f"every row ({metric}={labels}): it drops blank predictions and scores only the rest, so a "
        "submission could leave out every row it is unsure of; it must exit non-zero on a blank or "
        "missing prediction (or score it as wrong)",
    )


def reordered_probe(
    task: Task, sandbox: Sandbox, baseline: float, timeout: float, seen: dict
) -> Failure | None:
    """The baseline's submission with its rows in reverse order must score exactly the baseline's
    score: an evaluator that pairs predictions with labels by position, not by id, scores a
    correct submission in another order as wrong (run before the public-split gate, which such an
    evaluator would fail with a misleading message)."""
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="stsc-probes-") as tmp:
        sandbox.get("submission.csv", Path(tmp) / "baseline_submission.csv")
        try:
            submission = pd.read_csv(Path(tmp) / "baseline_submission.csv")
        except (ValueError, UnicodeDecodeError) as e:
            return Failure(Step.BASELINE, f"the baseline's submission.csv is not a readable CSV file: {e}")
        submission.iloc[::-1].to_csv(Path(tmp) / "probe_reordered.csv", index=False)
        sandbox.put(Path(tmp) / "probe_reordered.csv", "probe_reordered.csv")
    run, value = _probe_run(task, sandbox, "probe_reordered.csv", timeout, seen)
    if value is None or not same_score(value, baseline):
        got = "was rejected" if value is None else f"scored {task.meta.metric}={value}"
        return command_failure(
            Step.EXPLOIT,
            f"the baseline's submission with its rows in reverse order {got}, not the baseline's {baseline}; "
            "evaluate.py must match predictions to labels by the id column, not by row position",
            run,
        )
    return None


def _trivial_probe(
    task: Task, sandbox: Sandbox, name: str, rel: str, baseline: float, timeout: float, seen: dict
) -> Failure | None:
    run = run_evaluation(sandbox, task, rel, timeout)
    if name == "sample_submission" and not run.ok:
        return command_failure(
            Step.EVALUATE,
            "evaluate.py rejects sample_submission.csv; the sample must be a valid submission",
            run,
        )
    try:
        seen[name] = (
            parse_metrics(run, task.meta.metric, strict=False)[task.meta.metric] if run.ok else "rejected"
        )
    except EvaluationError as e:
        seen[name] = f"unparsed: {e}"
    value = seen[name]
    if isinstance(value, float) and task.meta.is_better(value, baseline):
        return Failure(
            Step.EXPLOIT,
            f"the {name} probe scores {task.meta.metric}={value}, better than the baseline's {baseline}; "
            "a trivial submission must not beat the baseline",
        )
    return None
