"""Scoring a workspace's submission with the task's own, unedited evaluation script.

The agent can edit or delete the workspace copy of ``evaluate.py``, so every score (validate,
submit, auto-submission) runs the pristine script from the task folder instead: it is staged, with
the task's private files, in a host folder that the sandbox mounts at ``sandbox.private_path`` for
this one command. The command runs in the workspace, so relative paths (``data/``, the submission)
resolve as they do for the agent. Output parsing follows MLGym's CSV contract: the whole stdout is
one JSON object. ``STSC_SCORE_SPLIT`` tells the evaluator which test rows to score (``validate``:
the public rows; ``submit``: the others); evaluators without a public split ignore it.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from stsc.agent.task import TaskSpec
from stsc.sandbox.base import SCORE_SPLIT_ENV, Sandbox

log = logging.getLogger(__name__)

_EXISTS_TIMEOUT_S = 30.0
_OUTSIDE_WORKSPACE = 3
# $1: the submission, $2: the workspace. Exit 3 (printing the target) when the path, links
# resolved, leaves the workspace; else test -f.
_SUBMISSION_CHECK = (
    'target=$(realpath -m -- "$1") && workspace=$(realpath -m -- "$2") || exit 1\n'
    'case "$target" in "$workspace"/*) test -f "$target" ;; *) printf %s "$target"; exit 3 ;; esac'
)
_SHOWN_OUTPUT_CHARS = 2000


class ScoreStatus(StrEnum):
    OK = "ok"
    SUBMISSION_NOT_FOUND = "submission_not_found"
    EVALUATION_FORMAT_ERROR = "evaluation_format_error"


@dataclass(frozen=True)
class ScoreOutcome:
    """One scoring attempt. ``metrics`` is set only when ``status`` is OK; ``detail`` explains a
    failure in words the agent can act on."""

    status: ScoreStatus
    metrics: dict[str, Any] | None = None
    detail: str = ""


def parse_metrics(output: str) -> dict[str, Any]:
    """The metrics dict of an evaluation's stdout; raises ``ValueError`` unless the whole output
    is one JSON object."""
    text = output.strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"the output is not one JSON object ({e.msg})") from e
    if not isinstance(value, dict):
        raise ValueError(f"the output is JSON but a {type(value).__name__}, not an object")
    return value


def _stage_private(task: TaskSpec, dest: Path) -> str:
    """Copy the private files and the pristine evaluator into ``dest``; returns the script name."""
    if task.private_dir is not None:  # links stay links: the host never reads what they point to
        shutil.copytree(task.private_dir, dest, symlinks=True, dirs_exist_ok=True)
    name = Path(task.evaluation_path).name
    shutil.copy2(task.pristine_evaluator, dest / name)
    return name


def _clip(text: str) -> str:
    text = text.strip()
    if len(text) <= _SHOWN_OUTPUT_CHARS:
        return text
    return "...\n" + text[-_SHOWN_OUTPUT_CHARS:]


def score_workspace(sandbox: Sandbox, task: TaskSpec, timeout: float, split: str = "submit") -> ScoreOutcome:
    """Score the workspace's submission file on the ``split`` rows (``validate`` or ``submit``).
    Raises ``SandboxError`` only on infrastructure failure; a missing submission or unusable
    output is an outcome."""
    # A file inside the workspace, links resolved: a link leaving it could point at the private
    # folder, which the evaluation mounts (and the agent's own sandbox does not).
    check = sandbox.exec(
        ["bash", "-c", _SUBMISSION_CHECK, "check", task.submission_file, sandbox.workspace],
        timeout=_EXISTS_TIMEOUT_S,
        cwd=sandbox.workspace,
    )
    if check.exit_code == _OUTSIDE_WORKSPACE:
        return ScoreOutcome(
            ScoreStatus.SUBMISSION_NOT_FOUND,
            detail=f"{task.submission_file} links to {check.stdout.strip()}, outside the workspace "
            f"{sandbox.workspace}; the submission must be a file inside it.",
        )
    if not check.ok:
        return ScoreOutcome(
            ScoreStatus.SUBMISSION_NOT_FOUND,
            detail=f"No submission file found at {sandbox.workspace}/{task.submission_file}.",
        )
    with tempfile.TemporaryDirectory(prefix="stsc-private-") as tmp:
        script = _stage_private(task, Path(tmp))
        command = ["python", f"{sandbox.private_path}/{script}", "--submission_file", task.submission_file]
        result = sandbox.evaluate(command, Path(tmp), timeout, env={SCORE_SPLIT_ENV: split})
    if result.timed_out:
        return ScoreOutcome(
            ScoreStatus.EVALUATION_FORMAT_ERROR,
            detail=f"The evaluation did not finish within {timeout:.0f} s.",
        )
    if result.exit_code != 0:
        return ScoreOutcome(
            ScoreStatus.EVALUATION_FORMAT_ERROR,
            detail=f"The evaluation failed (exit code {result.exit_code}):\n{_clip(result.output)}",
        )
    try:
        metrics = parse_metrics(result.stdout)
    except ValueError as e:
        return ScoreOutcome(
            ScoreStatus.EVALUATION_FORMAT_ERROR,
            detail=f"The evaluation output could not be read: {e}. Output:\n{_clip(result.output)}",
        )
    log.debug("scored %s: %s", task.task_id, metrics)
    return ScoreOutcome(ScoreStatus.OK, metrics=metrics)
