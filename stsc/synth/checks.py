"""Running a task and judging it: data build, baseline, evaluation and the acceptance gates.

``check_task(folder, cfg, factory)`` runs a task folder in sandboxes and returns a ``CheckResult``
whose ``failure`` is None when every enabled gate of ``ValidateConfig`` passes:

- ``gate_json_output``: evaluate.py prints exactly one line, a JSON object with the priority metric,
  and nothing on stderr;
- ``gate_baseline_finite``: the baseline's score is a finite number;
- ``gate_beatable``: the baseline is not already at the metric's optimum (``meta.metric_bounds``);
- ``gate_exploit_probes``: evaluate.py refuses to score without ``$STSC_PRIVATE_DIR`` and refuses a
  submission missing rows or repeating ids (even with the right row count); the baseline's
  submission with its rows reversed scores exactly the baseline's score (labels matched by id, not
  position); the sample submission and a constant prediction do not beat the baseline, nor do all
  three score the same when the constant prediction differs from the baseline's (a score blind to
  the predictions); the baseline's submission with blank predictions in most rows (all but those
  closest to the labels) is refused, or scores below the baseline's submission, or no better than
  with a constant or a wrong prediction in the blank cells (blank predictions are not dropped from
  the score). Ids are read from the task's id column, the first column of ``private/answers.csv``;
- ``gate_no_leak``: no workspace file reveals the held-out labels (checked on file contents);
- ``gate_runtime``: baseline plus evaluation finish within the task's ``training_timeout``;
- ``gate_public_split`` (tasks with a public split): evaluate.py scores only the public test rows
  for ``validate`` and only the others for ``submit``: a submission equal to the baseline's on the
  public ids and to the sample submission elsewhere must get the baseline's public score and the
  sample's final score.

For a task built by ``build/prepare.py`` with ``meta.public_fraction`` above 0, ``build_data`` draws
that share of the test ids (seeded by the task id) into ``private/public_ids.csv`` after prepare.py ran.

A failing command is a ``Failure`` (what step failed, the message, exit code, output tails and the
workspace listing: what a person or the fixing model needs). Sandbox infrastructure errors
(``SandboxError``) propagate.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from stsc.config import ValidateConfig
from stsc.errors import EvaluationError, TaskFormatError
from stsc.sandbox.base import SCORE_SPLIT_ENV, ExecResult, Sandbox, SandboxFactory
from stsc.store import atomic_write_text, read_json
from stsc.synth.leaks import find_label_leaks, id_key
from stsc.synth.task import BUILD, META_FILE, PRIVATE, WORKSPACE, Task, check_task_folder, load_task
from stsc.synth.template import ANSWERS, PUBLIC_IDS, public_count

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

TAIL_CHARS = 3000
PREPARE_OUTPUTS = (f"{WORKSPACE}/data", f"{WORKSPACE}/sample_submission.csv", PRIVATE)
LISTING_CMD = "find . -maxdepth 3 -not -path '*/.*' -not -path '*/__pycache__*' | sort | head -n 200"


class Step(StrEnum):
    """Where a task failed; also its drop reason in the validate funnel."""

    SHAPE = "shape"
    PREPARE = "prepare"
    BASELINE = "baseline"
    EVALUATE = "evaluate"
    JSON_OUTPUT = "gate:json_output"
    BASELINE_FINITE = "gate:baseline_finite"
    BEATABLE = "gate:beatable"
    EXPLOIT = "gate:exploit_probes"
    NO_LEAK = "gate:no_leak"
    RUNTIME = "gate:runtime"
    PUBLIC_SPLIT = "gate:public_split"


@dataclass(frozen=True)
class Failure:
    step: Step
    message: str
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    listing: str = ""

    def report(self) -> str:
        """Plain-text account for logs and for the fixing model."""
        parts = [f"step: {self.step.value}", f"problem: {self.message}"]
        if self.exit_code is not None:
            parts.append(f"exit code: {self.exit_code}")
        for name, text in (
            ("stdout (tail)", self.stdout),
            ("stderr (tail)", self.stderr),
            ("files", self.listing),
        ):
            if text.strip():
                parts.append(f"{name}:\n{text.rstrip()}")
        return "\n".join(parts)


@dataclass
class CheckResult:
    failure: Failure | None
    metrics: dict[str, float] = field(default_factory=dict)  # the baseline's evaluation output
    public_metrics: dict[str, float] = field(default_factory=dict)  # the same on the public rows
    baseline_score: float | None = None
    runtime_s: float = 0.0
    probes: dict[str, float | str] = field(default_factory=dict)


def tail(text: str, n: int = TAIL_CHARS) -> str:
    return text if len(text) <= n else "[...]\n" + text[-n:]


def _failure(step: Step, message: str, result: ExecResult | None = None, listing: str = "") -> Failure:
    if result is None:
        return Failure(step, message, listing=listing)
    return Failure(step, message, result.exit_code, tail(result.stdout), tail(result.stderr), listing)


def parse_metrics(result: ExecResult, metric: str, strict: bool = True) -> dict[str, float]:
    """The metric dict printed by evaluate.py. ``strict``: stdout is exactly one JSON object line
    and stderr is empty (MLGym parses the whole output); otherwise the first line starting with
    ``{`` is used. Raises ``EvaluationError`` saying what was expected."""
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if strict:
        if len(lines) != 1 or result.stderr.strip():
            raise EvaluationError(
                f"evaluate.py must print exactly one line (a JSON object) and nothing on stderr; "
                f"got {len(lines)} stdout line(s) and {len(result.stderr.strip())} characters on stderr"
            )
        candidates = lines
    else:
        candidates = [line for line in lines if line.lstrip().startswith("{")][:1]
    try:
        data = json.loads(candidates[0]) if candidates else None
    except json.JSONDecodeError as e:
        raise EvaluationError(f"evaluate.py output is not JSON ({e}): {candidates[0][:200]!r}") from e
    if not isinstance(data, dict):
        raise EvaluationError(
            f"evaluate.py must print a JSON object like {{{metric!r}: 0.5}}; got {lines[:1]!r}"
        )
    value = data.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EvaluationError(f"evaluate.py output {data!r} has no numeric value for the metric {metric!r}")
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)}


# -- running ------------------------------------------------------------------------------------------


def _listing(sandbox: Sandbox) -> str:
    return tail(sandbox.exec(LISTING_CMD, timeout=30).stdout, 4000)


def build_data(folder: Path, factory: SandboxFactory, timeout: float, label: str) -> Failure | None:
    """Run ``build/prepare.py`` in a sandbox over ``build/`` and copy what it wrote (workspace data,
    sample submission, private labels) into ``folder``, replacing earlier outputs."""
    with factory.start(folder / BUILD, label) as sandbox:
        result = sandbox.exec("python prepare.py", timeout=timeout)
        if not result.ok:
            why = "timed out" if result.timed_out else "failed"
            return _failure(Step.PREPARE, f"`python prepare.py` {why}", result, _listing(sandbox))
        missing = [p for p in PREPARE_OUTPUTS if not sandbox.exec(f"test -e {p}", timeout=30).ok]
        if missing:
            return _failure(Step.PREPARE, f"prepare.py did not write {missing}", result, _listing(sandbox))
        for rel in PREPARE_OUTPUTS:
            target = folder / rel
            if target.is_dir():
                shutil.rmtree(target)
            target.unlink(missing_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            sandbox.get(rel, target)
    odd = _not_regular(folder, PREPARE_OUTPUTS)
    if odd:
        for path in odd:  # never read by the host: a link may point at any host file
            path.unlink()
        names = [str(p.relative_to(folder)) for p in odd[:5]]
        return Failure(
            Step.PREPARE,
            f"prepare.py wrote symbolic links or special files {names}; write regular files only",
        )
    return _draw_public_ids(folder)


def _not_regular(folder: Path, outputs: tuple[str, ...]) -> list[Path]:
    """Symlinks and special files (pipes, sockets, devices) among ``outputs`` under ``folder``."""
    found = []
    for rel in outputs:
        top = folder / rel
        paths = [top, *top.rglob("*")] if top.is_dir() and not top.is_symlink() else [top]
        for path in paths:
            if path.is_symlink() or (path.exists() and not (path.is_file() or path.is_dir())):
                found.append(path)
    return found


def _draw_public_ids(folder: Path) -> Failure | None:
    """Write ``private/public_ids.csv`` for a task whose meta asks for a public fraction."""
    meta = read_json(folder / META_FILE) if (folder / META_FILE).is_file() else {}
    fraction = float(meta.get("public_fraction") or 0.0)
    if fraction <= 0:
        return None
    answers = folder / PRIVATE / ANSWERS
    try:
        with answers.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        return Failure(Step.PREPARE, f"cannot read {PRIVATE}/{ANSWERS} written by prepare.py: {e}")
    if not rows or not rows[0]:
        return Failure(
            Step.PREPARE, f"{PRIVATE}/{ANSWERS} is empty; it needs a header and one row per test id"
        )
    ids = [row[0] for row in rows[1:] if row]
    n = public_count(len(ids), fraction)
    if n == 0:
        return Failure(
            Step.PREPARE,
            f"{PRIVATE}/{ANSWERS} has {len(ids)} test rows, too few to split {fraction:.0%} of them off as public rows",
        )
    public = set(random.Random(f"public:{meta.get('task_id', folder.name)}").sample(ids, n))
    lines = [rows[0][0], *(i for i in ids if i in public)]
    atomic_write_text(folder / PRIVATE / PUBLIC_IDS, "\n".join(_csv_cell(v) for v in lines) + "\n")
    return None


def _same_score(a: float, b: float) -> bool:
    """Equal up to floating-point noise: what two evaluations of equivalent submissions must give."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _csv_cell(value: str) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([value])
    return out.getvalue()


def _evaluate(
    sandbox: Sandbox, task: Task, submission: str, timeout: float, split: str = "submit"
) -> ExecResult:
    return sandbox.evaluate(
        f"python {task.config.evaluation_paths[0]} --submission_file {submission}",
        task.private,
        timeout,
        env={SCORE_SPLIT_ENV: split},
    )


def check_task(folder: Path, cfg: ValidateConfig, factory: SandboxFactory, label: str) -> CheckResult:
    """Build (if needed), shape-check, run and gate the task in ``folder`` (see module doc)."""
    folder = Path(folder)
    if (folder / BUILD / "prepare.py").is_file():
        failure = build_data(folder, factory, cfg.timeout_s, label)
        if failure is not None:
            return CheckResult(failure)
    problems = check_task_folder(folder, require_data=True, require_score=False)
    if problems:
        return CheckResult(
            Failure(Step.SHAPE, "the task folder breaks the task contract: " + "; ".join(problems))
        )
    try:
        task = load_task(folder)
    except TaskFormatError as e:
        return CheckResult(Failure(Step.SHAPE, str(e)))
    if cfg.gate_no_leak:
        leaks = find_label_leaks(task.workspace, task.private)
        if leaks:
            return CheckResult(
                Failure(Step.NO_LEAK, "the workspace reveals test labels: " + "; ".join(leaks[:5]))
            )
    with factory.start(task.workspace, label) as sandbox:
        return _run_gates(task, sandbox, cfg)


def _run_gates(task: Task, sandbox: Sandbox, cfg: ValidateConfig) -> CheckResult:
    timeout = cfg.timeout_s
    baseline = sandbox.exec(f"python {task.config.baseline_paths[0]}", timeout=timeout)
    if not baseline.ok:
        why = "timed out" if baseline.timed_out else "failed"
        return CheckResult(
            _failure(
                Step.BASELINE, f"`python {task.config.baseline_paths[0]}` {why}", baseline, _listing(sandbox)
            )
        )
    if not sandbox.exec("test -f submission.csv", timeout=30).ok:
        return CheckResult(
            _failure(Step.BASELINE, "the baseline did not write submission.csv", baseline, _listing(sandbox))
        )
    scored = _evaluate(sandbox, task, "submission.csv", timeout)
    if not scored.ok:
        return CheckResult(
            _failure(
                Step.EVALUATE,
                "evaluate.py failed on the baseline's submission.csv",
                scored,
                _listing(sandbox),
            )
        )
    try:
        metrics = parse_metrics(scored, task.meta.metric, strict=cfg.gate_json_output)
    except EvaluationError as e:
        return CheckResult(_failure(Step.JSON_OUTPUT, str(e), scored))
    score = metrics[task.meta.metric]
    result = CheckResult(
        None, metrics, baseline_score=score, runtime_s=baseline.duration_s + scored.duration_s
    )
    if cfg.gate_exploit_probes and math.isfinite(score):
        result.failure = _reordered_probe(task, sandbox, score, timeout, result.probes)
        if result.failure is not None:
            return result
    if task.meta.public_split:
        public = _evaluate(sandbox, task, "submission.csv", timeout, split="validate")
        why = f"evaluate.py failed on the public rows ({SCORE_SPLIT_ENV}=validate)"
        if not public.ok:
            return CheckResult(_failure(Step.EVALUATE, f"{why}: exit code {public.exit_code}", public))
        try:
            result.public_metrics = parse_metrics(public, task.meta.metric, strict=cfg.gate_json_output)
        except EvaluationError as e:
            return CheckResult(_failure(Step.EVALUATE, f"{why}: {e}", public))
        if cfg.gate_public_split:
            result.failure = _split_honoured(task, sandbox, result, timeout)
            if result.failure is not None:
                return result
    if cfg.gate_baseline_finite and not math.isfinite(score):
        result.failure = Failure(
            Step.BASELINE_FINITE, f"the baseline scores {task.meta.metric}={score}, not a finite number"
        )
    elif cfg.gate_beatable and task.meta.at_optimum(score):
        result.failure = Failure(
            Step.BEATABLE,
            f"the baseline already reaches the optimum of {task.meta.metric} ({score}, bounds "
            f"{task.meta.metric_bounds}); the task leaves nothing to improve",
        )
    elif cfg.gate_exploit_probes:
        result.failure = _exploit_probes(task, sandbox, score, timeout, result.probes)
    if result.failure is None and cfg.gate_runtime and result.runtime_s > task.config.training_timeout:
        result.failure = Failure(
            Step.RUNTIME,
            f"baseline plus evaluation took {result.runtime_s:.1f}s, over training_timeout={task.config.training_timeout}s",
        )
    return result


def _split_honoured(task: Task, sandbox: Sandbox, result: CheckResult, timeout: float) -> Failure | None:
    """``gate_public_split``: score a submission that is the baseline's on the public ids and the
    sample submission's elsewhere; validate must give the baseline's public score, submit the
    sample's final score."""
    import pandas as pd

    metric = task.meta.metric
    with tempfile.TemporaryDirectory(prefix="stsc-split-") as tmp:
        baseline_csv = Path(tmp) / "baseline.csv"
        sandbox.get("submission.csv", baseline_csv)
        try:
            public = pd.read_csv(task.private / PUBLIC_IDS, dtype=str, keep_default_na=False)
            id_column = str(public.columns[0])
            baseline = pd.read_csv(baseline_csv, dtype=str, keep_default_na=False)
            sample = pd.read_csv(task.path / task.config.sample_submission, dtype=str, keep_default_na=False)
            if id_column not in baseline.columns or id_column not in sample.columns:
                raise ValueError(f"the id column {id_column!r} of {PUBLIC_IDS} is not in the submissions")
            listed = {id_key(v) for v in public[id_column]}
            chosen = baseline[baseline[id_column].map(id_key).isin(listed)]
            if chosen.empty:
                raise ValueError(
                    f"the baseline's submission.csv has none of the ids in {PRIVATE}/{PUBLIC_IDS}"
                )
            mixed = pd.concat([chosen, sample[~sample[id_column].map(id_key).isin(listed)]])
        except (ValueError, KeyError, IndexError, UnicodeDecodeError) as e:
            return Failure(Step.PUBLIC_SPLIT, f"cannot build the public-split probe: {e}")
        mixed.to_csv(Path(tmp) / "probe_split.csv", index=False)
        sandbox.put(Path(tmp) / "probe_split.csv", "probe_split.csv")
    sample_rel = task.config.sample_submission.removeprefix(f"{WORKSPACE}/")
    scores: dict[tuple[str, str], float] = {}
    for split, rel in [
        ("validate", "probe_split.csv"),
        ("submit", "probe_split.csv"),
        ("submit", sample_rel),
    ]:
        run = _evaluate(sandbox, task, rel, timeout, split=split)
        try:
            scores[split, rel] = parse_metrics(run, metric, strict=False)[metric]
        except EvaluationError as e:
            return _failure(
                Step.PUBLIC_SPLIT, f"evaluate.py failed on {rel} with {SCORE_SPLIT_ENV}={split}: {e}", run
            )
    expected = [
        ("validate", result.public_metrics[metric], "the baseline's score on the public rows", "listed ids"),
        ("submit", scores["submit", sample_rel], "the sample submission's final score", "ids not listed"),
    ]
    for split, want, what, rows in expected:
        got = scores[split, "probe_split.csv"]
        if not _same_score(got, want):
            return Failure(
                Step.PUBLIC_SPLIT,
                f"evaluate.py does not honour the public split: with {SCORE_SPLIT_ENV}={split}, a submission "
                f"equal to the baseline's on the ids in {PRIVATE}/{PUBLIC_IDS} and to the sample submission "
                f"elsewhere scored {metric}={got}, not {want} ({what}); {split} must score only the {rows}",
            )
    return None


def submission_id_column(task: Task, columns: list[str]) -> str:
    """Which of a submission's ``columns`` holds the ids: the task's id column (the first column of
    ``private/answers.csv``, where the task contract declares it) when the submission has it, else
    the submission's first column."""
    try:
        with (task.private / ANSWERS).open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        header = []
    return header[0] if header and header[0] in columns else str(columns[0])


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


def _exploit_probes(
    task: Task, sandbox: Sandbox, baseline: float, timeout: float, seen: dict
) -> Failure | None:
    """Refusals first (no labels, missing rows), then trivial submissions against the baseline."""
    unprivileged = sandbox.exec(
        f"python {task.config.evaluation_paths[0]} --submission_file submission.csv", timeout=timeout
    )
    if unprivileged.ok:
        return _failure(
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
            run = _evaluate(sandbox, task, files[name].name, timeout)
            if run.ok:
                return _failure(
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
        return failure or _blanked_probe(task, sandbox, baseline, files["constant"], timeout, seen)


def _blind_evaluator(
    task: Task, sandbox: Sandbox, baseline: float, constant: Path, seen: dict
) -> Failure | None:
    """An evaluator whose score does not depend on the predictions gives every valid submission the
    same score: the baseline's, the sample's and the constant probe's all equal although the constant
    probe predicts differently from the baseline."""
    import pandas as pd

    scores = [seen.get("sample_submission"), seen.get("constant")]
    if not all(isinstance(v, float) and _same_score(v, baseline) for v in scores):
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


BLANKED_KEPT = 0.25  # share of the scored rows whose predictions the blanked probe keeps


def _row_errors(task: Task, submission: pd.DataFrame, id_column: str, columns: list[str]) -> np.ndarray:
    """How far each row's predictions are from its labels in ``private/answers.csv``: per prediction
    column the answers also hold, 0/1 for a wrong class (or text), else the absolute error over the
    labels' standard deviation; summed over those columns (all 0 when there are none) and infinite
    for an id the answers lack or a prediction that is not a number where the label is one."""
    import numpy as np
    import pandas as pd

    truth = pd.read_csv(task.private / ANSWERS, dtype=str, keep_default_na=False)
    truth.index = truth[truth.columns[0]].map(id_key)
    truth = truth[~truth.index.duplicated()]
    keys = submission[id_column].map(id_key)
    errors = np.where(keys.isin(truth.index), 0.0, np.inf)
    for column in (c for c in columns if c in truth.columns[1:]):
        got = submission[column].reset_index(drop=True)
        numbers = pd.to_numeric(truth[column], errors="coerce")
        if numbers.notna().all():
            scale = float(numbers.std()) if numbers.std() > 0 else 1.0
            want = numbers.reindex(keys).reset_index(drop=True)
            miss = ((pd.to_numeric(got, errors="coerce") - want).abs() / scale).fillna(np.inf)
        else:
            miss = got.map(id_key) != truth[column].reindex(keys).reset_index(drop=True).map(id_key)
        errors = errors + miss.to_numpy(dtype=float)
    return errors


def _junk(values: pd.Series) -> str:
    """A prediction unlike every label: far below the range of ``values`` when they are numbers
    (class codes included), else text none of them is."""
    import pandas as pd

    numbers = pd.to_numeric(values, errors="coerce")
    if len(numbers) and numbers.notna().all() and math.isfinite(float(numbers.abs().max())):
        return f"{-1000.0 * (1.0 + float(numbers.abs().max())):.0f}"
    return "no-such-label"


def _blanked_submissions(
    task: Task, submission: pd.DataFrame, constant: pd.DataFrame
) -> tuple[dict[str, pd.DataFrame], int]:
    """From the baseline's ``submission``: the ``BLANKED_KEPT`` share of the scored rows (those of
    the submit split) whose predictions are closest to the labels keep them; every other row gets
    blank prediction cells (``blanked``), the ``constant`` probe's predictions
    (``blanked_constant``) or a prediction unlike every label (``blanked_junk``). Also returns how
    many rows keep their predictions (0: nothing to blank)."""
    import pandas as pd

    id_column = submission_id_column(task, list(submission.columns))
    columns = [c for c in submission.columns if c != id_column]
    keys = submission[id_column].map(id_key)
    scored = pd.Series(bool(columns), index=submission.index)
    if (task.private / PUBLIC_IDS).is_file():
        public = pd.read_csv(task.private / PUBLIC_IDS, dtype=str, keep_default_na=False)
        scored &= ~keys.isin(set(public[public.columns[0]].map(id_key)))
    errors = pd.Series(_row_errors(task, submission, id_column, columns), index=submission.index)
    kept = errors[scored].sort_values(kind="stable").index[: math.ceil(BLANKED_KEPT * int(scored.sum()))]
    others = ~submission.index.isin(kept)
    frames = {name: submission.copy() for name in ("blanked", "blanked_constant", "blanked_junk")}
    for column in columns:
        frames["blanked"].loc[others, column] = ""
        frames["blanked_junk"].loc[others, column] = _junk(submission[column])
        if column in constant.columns and len(constant):
            frames["blanked_constant"].loc[others, column] = constant[column].iloc[0]
    return frames, len(kept)


def _probe_score(task: Task, sandbox: Sandbox, rel: str, timeout: float, seen: dict) -> float | None:
    """The finite score evaluate.py gives the probe file ``rel``, or None (refused, no score)."""
    run = _evaluate(sandbox, task, rel, timeout)
    try:
        value = parse_metrics(run, task.meta.metric, strict=False)[task.meta.metric] if run.ok else None
    except EvaluationError:
        value = None
    seen[rel.removeprefix("probe_").removesuffix(".csv")] = "rejected" if value is None else value
    return value if value is not None and math.isfinite(value) else None


def _worse(task: Task, a: float, b: float) -> bool:
    """Score ``a`` is worse than ``b`` beyond floating-point noise, in the task's direction."""
    return task.meta.is_better(b, a) and not _same_score(a, b)


def _blanked_probe(
    task: Task, sandbox: Sandbox, baseline: float, constant: Path, timeout: float, seen: dict
) -> Failure | None:
    """The baseline's submission with blank predictions in all rows but the quarter of the scored
    rows closest to the labels (what an agent sure of some rows would keep). An evaluator that
    drops blank predictions and scores the rest gives it at least the baseline's score, and more
    than the same rows with a constant prediction or one unlike every label in the blank cells. A
    sound one refuses it, scores it worse than the baseline, or scores a blank no better than one of
    those: like a prediction of its own (a fallback) or like a wrong one. Macro-averaged scores can
    rise when wrong predictions become blanks, hence the comparisons."""
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="stsc-probes-") as tmp:
        sandbox.get("submission.csv", Path(tmp) / "baseline.csv")
        try:
            submission = pd.read_csv(Path(tmp) / "baseline.csv", dtype=str, keep_default_na=False)
            probe = pd.read_csv(constant, dtype=str, keep_default_na=False)
            frames, kept = _blanked_submissions(task, submission, probe)
        except (ValueError, KeyError, UnicodeDecodeError, OSError):
            return None  # unreadable submissions or answers fail other steps: no evidence here
        for name, frame in frames.items():
            frame.to_csv(Path(tmp) / f"probe_{name}.csv", index=False)
            sandbox.put(Path(tmp) / f"probe_{name}.csv", f"probe_{name}.csv")
    blank = _probe_score(task, sandbox, "probe_blanked.csv", timeout, seen) if kept else None
    if blank is None or _worse(task, blank, baseline):
        return None
    filled = {
        what: _probe_score(task, sandbox, f"probe_blanked_{name}.csv", timeout, seen)
        for name, what in (("constant", "a constant prediction"), ("junk", "a prediction unlike every label"))
    }
    scored = {what: value for what, value in filled.items() if value is not None}
    if not scored or not all(_worse(task, value, blank) for value in scored.values()):
        return None
    metric = task.meta.metric
    others = " and ".join(f"{metric}={value} with {what}" for what, value in scored.items())
    return Failure(
        Step.EXPLOIT,
        f"evaluate.py scored the baseline's submission with blank predictions in all but {kept} of the "
        f"scored rows {metric}={blank}, no worse than the full submission's {baseline} and better than "
        f"{others} in the blank cells: it drops blank predictions and scores only the rest, so a "
        "submission could leave out every row it is unsure of; it must exit non-zero on a blank or "
        "missing prediction (or score it as wrong)",
    )


def _reordered_probe(
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
    run = _evaluate(sandbox, task, "probe_reordered.csv", timeout)
    try:
        value = parse_metrics(run, task.meta.metric, strict=False)[task.meta.metric] if run.ok else None
    except EvaluationError:
        value = None
    seen["reordered"] = "rejected" if value is None else value
    if value is None or not _same_score(value, baseline):
        got = "was rejected" if value is None else f"scored {task.meta.metric}={value}"
        return _failure(
            Step.EXPLOIT,
            f"the baseline's submission with its rows in reverse order {got}, not the baseline's {baseline}; "
            "evaluate.py must match predictions to labels by the id column, not by row position",
            run,
        )
    return None


def _trivial_probe(
    task: Task, sandbox: Sandbox, name: str, rel: str, baseline: float, timeout: float, seen: dict
) -> Failure | None:
    run = _evaluate(sandbox, task, rel, timeout)
    if name == "sample_submission" and not run.ok:
        return _failure(
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
