"""Running a task and judging it: data build, baseline, evaluation and the acceptance gates.

``check_task(folder, cfg, factory)`` runs a task folder in sandboxes and returns a ``CheckResult``
whose ``failure`` is None when every enabled gate of ``ValidateConfig`` passes:

- ``gate_json_output``: evaluate.py prints exactly one line, a JSON object with the priority metric,
  and nothing on stderr;
- ``gate_baseline_finite``: the baseline's score is a finite number;
- ``gate_beatable``: the baseline is not already at the metric's optimum (``meta.metric_bounds``);
- ``gate_exploit_probes``: evaluate.py is not fooled by the submissions of ``stsc.synth.probes``
  (no labels, missing or repeated ids, reversed rows, trivial predictions, blank predictions);
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

from stsc.config import ValidateConfig
from stsc.errors import EvaluationError, TaskFormatError
from stsc.sandbox.base import SCORE_SPLIT_ENV, ExecResult, Sandbox, SandboxFactory
from stsc.store import atomic_write_text, read_json
from stsc.synth.leaks import find_label_leaks, id_key
from stsc.synth.task import BUILD, META_FILE, PRIVATE, WORKSPACE, Task, check_task_folder, load_task
from stsc.synth.template import ANSWERS, PUBLIC_IDS, public_count

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


def command_failure(step: Step, message: str, result: ExecResult | None = None, listing: str = "") -> Failure:
    """A ``Failure`` carrying the exit code and output tails of the command ``result`` (if any)."""
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
            return command_failure(Step.PREPARE, f"`python prepare.py` {why}", result, _listing(sandbox))
        missing = [p for p in PREPARE_OUTPUTS if not sandbox.exec(f"test -e {p}", timeout=30).ok]
        if missing:
            return command_failure(
                Step.PREPARE, f"prepare.py did not write {missing}", result, _listing(sandbox)
            )
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


def same_score(a: float, b: float) -> bool:
    """Equal up to floating-point noise: what two evaluations of equivalent submissions must give."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _csv_cell(value: str) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([value])
    return out.getvalue()


def run_evaluation(
    sandbox: Sandbox, task: Task, submission: str, timeout: float, split: str = "submit"
) -> ExecResult:
    """evaluate.py on the workspace file ``submission``, with the private labels, scoring ``split``."""
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
        leaks = find_label_leaks(task.workspace, task.private, id_column=task.id_column)
        if leaks:
            return CheckResult(
                Failure(Step.NO_LEAK, "the workspace reveals test labels: " + "; ".join(leaks[:5]))
            )
    with factory.start(task.workspace, label) as sandbox:
        return _run_gates(task, sandbox, cfg)


def _run_gates(task: Task, sandbox: Sandbox, cfg: ValidateConfig) -> CheckResult:
    from stsc.synth.probes import exploit_probes, reordered_probe  # they use this module's helpers

    timeout = cfg.timeout_s
    baseline = sandbox.exec(f"python {task.config.baseline_paths[0]}", timeout=timeout)
    if not baseline.ok:
        why = "timed out" if baseline.timed_out else "failed"
        return CheckResult(
            command_failure(
                Step.BASELINE, f"`python {task.config.baseline_paths[0]}` {why}", baseline, _listing(sandbox)
            )
        )
    if not sandbox.exec("test -f submission.csv", timeout=30).ok:
        return CheckResult(
            command_failure(
                Step.BASELINE, "the baseline did not write submission.csv", baseline, _listing(sandbox)
            )
        )
    scored = run_evaluation(sandbox, task, "submission.csv", timeout)
    if not scored.ok:
        return CheckResult(
            command_failure(
                Step.EVALUATE,
                "evaluate.py failed on the baseline's submission.csv",
                scored,
                _listing(sandbox),
            )
        )
    try:
        metrics = parse_metrics(scored, task.meta.metric, strict=cfg.gate_json_output)
    except EvaluationError as e:
        return CheckResult(command_failure(Step.JSON_OUTPUT, str(e), scored))
    score = metrics[task.meta.metric]
    result = CheckResult(
        None, metrics, baseline_score=score, runtime_s=baseline.duration_s + scored.duration_s
    )
    if cfg.gate_exploit_probes and math.isfinite(score):
        result.failure = reordered_probe(task, sandbox, score, timeout, result.probes)
        if result.failure is not None:
            return result
    if task.meta.public_split:
        public = run_evaluation(sandbox, task, "submission.csv", timeout, split="validate")
        why = f"evaluate.py failed on the public rows ({SCORE_SPLIT_ENV}=validate)"
        if not public.ok:
            return CheckResult(command_failure(Step.EVALUATE, f"{why}: exit code {public.exit_code}", public))
        try:
            result.public_metrics = parse_metrics(public, task.meta.metric, strict=cfg.gate_json_output)
        except EvaluationError as e:
            return CheckResult(command_failure(Step.EVALUATE, f"{why}: {e}", public))
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
        result.failure = exploit_probes(task, sandbox, score, timeout, result.probes)
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
        run = run_evaluation(sandbox, task, rel, timeout, split=split)
        try:
            scores[split, rel] = parse_metrics(run, metric, strict=False)[metric]
        except EvaluationError as e:
            return command_failure(
                Step.PUBLIC_SPLIT, f"evaluate.py failed on {rel} with {SCORE_SPLIT_ENV}={split}: {e}", run
            )
    expected = [
        ("validate", result.public_metrics[metric], "the baseline's score on the public rows", "listed ids"),
        ("submit", scores["submit", sample_rel], "the sample submission's final score", "ids not listed"),
    ]
    for split, want, what, rows in expected:
        got = scores[split, "probe_split.csv"]
        if not same_score(got, want):
            return Failure(
                Step.PUBLIC_SPLIT,
                f"evaluate.py does not honour the public split: with {SCORE_SPLIT_ENV}={split}, a submission "
                f"equal to the baseline's on the ids in {PRIVATE}/{PUBLIC_IDS} and to the sample submission "
                f"elsewhere scored {metric}={got}, not {want} ({what}); {split} must score only the {rows}",
            )
    return None
