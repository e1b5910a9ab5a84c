"""The agent-computer interface: executes one action in the sandbox and returns what the agent sees.

An action is either one of the special commands of ``stsc.agent.tools`` (dispatched to a small
handler) or plain bash, run in the sandbox's persistent shell with the short command timeout, or
the task's training timeout when it runs python/torchrun/accelerate/deepspeed. ``validate``,
``submit`` and ``autosubmit`` score the workspace with the task's pristine evaluator
(``stsc.agent.scoring``) and keep every successful metrics dict in ``scores``, in order.

Contract: ``execute`` never raises for anything the agent did (misuse, failing or timed-out
commands are observations); it raises ``SandboxError`` only when the sandbox itself fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from stsc.agent import guards
from stsc.agent.editor import FileEditor, UsageError, split_args
from stsc.agent.scoring import ScoreOutcome, ScoreStatus, score_workspace
from stsc.agent.task import TaskSpec
from stsc.agent.tools import TOOLS_BY_NAME, Tool
from stsc.config import AgentConfig
from stsc.sandbox.base import ExecResult, Sandbox

NO_FILE = "n/a"


@dataclass(frozen=True)
class Observation:
    """The result of one action. ``done`` ends the episode with ``exit_status``."""

    text: str
    done: bool = False
    exit_status: str | None = None


def _clip(text: str, limit: int) -> str:
    if limit <= 0 or len(text) <= limit:
        return text
    half = limit // 2
    return (
        f"{text[:half]}\n[... {len(text) - 2 * half} characters of output omitted; print less, for "
        f"example with head, tail or grep ...]\n{text[-half:]}"
    )


class AgentComputerInterface:
    """One episode's view of one sandbox: a persistent shell, the file editor and the scorer."""

    def __init__(self, sandbox: Sandbox, task: TaskSpec, cfg: AgentConfig):
        self.sandbox = sandbox
        self.task = task
        self.cfg = cfg
        self.shell = sandbox.shell()
        self.editor = FileEditor(sandbox, lambda: self.shell.cwd, cfg.window, cfg.command_timeout_s)
        self.training_timeout_s = cfg.training_timeout_s or task.training_timeout_s
        self.scores: list[dict] = []
        self.submission: str | None = None
        self._handlers: dict[str, Callable[[list[str], list[str]], str | Observation]] = {
            "open": lambda a, _: self.editor.open(a),
            "goto": lambda a, _: self.editor.goto(a),
            "scroll_down": lambda a, _: self.editor.scroll(+1),
            "scroll_up": lambda a, _: self.editor.scroll(-1),
            "create": lambda a, _: self.editor.create(a),
            "search_dir": lambda a, _: self.editor.search_dir(a),
            "search_file": lambda a, _: self.editor.search_file(a),
            "find_file": lambda a, _: self.editor.find_file(a),
            "edit": self.editor.edit,
            "insert": self.editor.insert,
            "validate": lambda a, _: self.validate(),
            "submit": lambda a, _: self.submit(),
        }
        assert set(self._handlers) == set(TOOLS_BY_NAME)

    @property
    def state(self) -> dict[str, str]:
        """The MLGym state of the interface: open file and working directory."""
        return {"open_file": self.editor.open_file or NO_FILE, "working_dir": self.shell.cwd}

    def refusal(self, action: str) -> str | None:
        """Why ``action`` is refused before running (an interactive program), or None."""
        words = action.split(maxsplit=1)
        if words and words[0] in TOOLS_BY_NAME:
            return None
        return guards.refusal(action, self.cfg.blocked_commands)

    def execute(self, action: str) -> Observation:
        first, _, rest = action.strip("\n").partition("\n")
        name, _, argtext = first.strip().partition(" ")
        tool = TOOLS_BY_NAME.get(name)
        if tool is None:
            return Observation(self._bash(action))
        try:
            body = self._body(tool, rest)
            args = split_args(argtext)
            if args and tool.signature == tool.name:
                raise UsageError(f"`{tool.name}` takes no arguments. Usage: {tool.signature}")
            result = self._handlers[name](args, body)
        except UsageError as e:
            result = str(e)
        if isinstance(result, Observation):
            return result
        return Observation(_clip(result, self.cfg.observation_limit_chars))

    @staticmethod
    def _body(tool: Tool, rest: str) -> list[str]:
        lines = rest.split("\n") if rest else []
        while lines and not lines[-1].strip():
            lines.pop()
        if tool.end_marker is None:
            if lines:
                raise UsageError(
                    f"`{tool.name}` takes no lines after it. Send one command per response. "
                    f"Usage: {tool.signature}"
                )
            return []
        if not lines or lines[-1].strip() != tool.end_marker:
            raise UsageError(
                f"`{tool.name}` must end with a line `{tool.end_marker}`. Usage:\n{tool.signature}"
            )
        return lines[:-1]

    def _bash(self, action: str) -> str:
        timeout = (
            self.training_timeout_s if guards.is_training_command(action) else self.cfg.command_timeout_s
        )
        result: ExecResult = self.shell.run(action, timeout)
        text = result.output
        if result.timed_out:
            text = (
                f"{text.rstrip()}\n\nEXECUTION TIMED OUT: the command ran longer than {timeout:.0f} seconds "
                "and was stopped; all of its processes were killed. Make it faster (less data, fewer "
                "epochs, a smaller model) and run it again."
            ).lstrip()
        elif not text.strip():
            if result.exit_code == 0:
                text = "Your command ran successfully and did not produce any output."
            else:
                text = f"Your command exited with status {result.exit_code} and did not produce any output."
        return _clip(text, self.cfg.observation_limit_chars)

    # -- scoring -----------------------------------------------------------------------------------

    def _score(self, split: str = "submit") -> ScoreOutcome:
        outcome = score_workspace(self.sandbox, self.task, self.training_timeout_s, split)
        if outcome.status is ScoreStatus.OK and split == "submit":
            assert outcome.metrics is not None
            self.scores.append(outcome.metrics)
            self.submission = f"{self.sandbox.workspace}/{self.task.submission_file}"
        return outcome

    def validate(self) -> Observation:
        """Score the current submission. With a public split the agent sees the score on the public
        test rows only; the score on the other rows is recorded (results.json) but not shown."""
        if self.task.public_split:
            outcome = score_workspace(self.sandbox, self.task, self.training_timeout_s, "validate")
            if outcome.status is ScoreStatus.OK:
                self._score("submit")
            baseline = self.task.public_baseline_scores or self.task.baseline_scores
            note = "Scores are on the public test rows; the final score of `submit` uses the other rows.\n"
        else:
            outcome, baseline, note = self._score("submit"), self.task.baseline_scores, ""
        if outcome.status is ScoreStatus.OK:
            return Observation(
                f"Your code produced a valid submission file ({self.sandbox.workspace}/{self.task.submission_file}).\n"
                f"{note}"
                f"Baseline Score: {json.dumps(baseline)}\n"
                f"Evaluation Score: {json.dumps(outcome.metrics)}"
            )
        if outcome.status is ScoreStatus.SUBMISSION_NOT_FOUND:
            return Observation(
                f"{outcome.detail} Write the submission file described in the task (for example by "
                "running your training script) before you validate."
            )
        return Observation(f"Your submission could not be evaluated. {outcome.detail}")

    def submit(self) -> Observation:
        status, outcome = self._final("submit")
        if outcome.status is ScoreStatus.OK:
            text = f"Submission scored: {json.dumps(outcome.metrics)}"
        else:
            text = f"{status}: {outcome.detail}"
        return Observation(text, done=True, exit_status=status)

    def autosubmit(self, reason: str) -> str:
        """Score the workspace as the final submission; returns the MLGym exit status."""
        return self._final(reason)[0]

    def _final(self, reason: str) -> tuple[str, ScoreOutcome]:
        outcome = self._score()
        if outcome.status is ScoreStatus.OK:
            status = "submitted" if reason == "submit" else f"autosubmission ({reason})"
        else:
            status = f"{outcome.status.value} ({reason})"
        return status, outcome

    def close(self) -> None:
        self.shell.close()
