"""Rule-based policies that act through the interface exactly as a model would.

Their responses use the agent format (DISCUSSION + one fenced command), so their episodes are
ordinary trajectories. They are stateless: every decision is derived from the messages (the task,
the latest observation and the notes their own earlier discussions wrote down, which the history
processor always keeps).

``ScriptedPolicy`` works like a careful junior researcher: it lists the workspace, runs and
validates the baseline (a reference score, and a submission in place from the start), reads the
baseline and the data, then for each of ``attempts`` stronger
scikit-learn models (chosen by the task type it read from the files) creates a script, writes it
with ``edit``, runs it and validates it; finally it restores the best submission and submits.
``SubmitBaselinePolicy`` runs the baseline and submits it.
"""

from __future__ import annotations

import json
import re

from stsc.agent.parser import parse_response
from stsc.agent.policies import PolicyReply
from stsc.agent.policies.solutions import ModelChoice, choices_for, solution_script
from stsc.errors import ModelOutputError

_REGRESSION = re.compile(
    r"Regressor\b|\bLinearRegression\b|\bRidge\b|\bLasso\b|\bSVR\b|mean_squared_error|mean_absolute_error|r2_score"
)
_CLASSIFICATION = re.compile(r"Classifier\b|\bLogisticRegression\b|\bSVC\b|accuracy_score|f1_score|roc_auc")
_DESCRIPTION_REGRESSION = re.compile(
    r"\b(regression|rmse|mse|mae|r2|r\^2|mean squared|mean absolute)\b", re.I
)
_DESCRIPTION_CLASSIFICATION = re.compile(r"\b(classif\w*|accuracy|f1|auc|precision|recall)\b", re.I)
_DECLARED = re.compile(r"task.type\W{1,6}(classification|regression)\b", re.I)
_TASK_TYPE_NOTE = re.compile(r"Task type: (\w+)\.")
_RESULT_NOTE = re.compile(r"^Result of (\S+): (.+)$", re.M)
_SCORE = re.compile(r"^Evaluation Score: (\{.*\})$", re.M)
_BASELINE = re.compile(r"^Baseline Score: (\{.*\})$", re.M)
_REMAINING = re.compile(r"Remaining Steps: (\d+)\)")
_RUN = re.compile(r"^rm -f submission\.csv && python (\S+)\.py$")
_RESTORE_NOTE = "I restore the best submission"
_LOWER_IS_BETTER = re.compile(r"loss|error|rmse|mse|mae|mape|time|perplexity", re.I)


def _reply(discussion: str, command: str) -> PolicyReply:
    return PolicyReply(text=f"DISCUSSION\n{discussion.strip()}\n\n```\n{command}\n```")


def _task_type(description: str, baseline_code: str) -> str:
    """``classification``/``regression`` from the baseline's code (a declared task type, then the
    estimators and metrics it uses), else from the description's wording; ``auto`` when unclear."""
    declared = _DECLARED.search(baseline_code)
    if declared:
        return declared.group(1).lower()
    code_reg, code_cls = len(_REGRESSION.findall(baseline_code)), len(_CLASSIFICATION.findall(baseline_code))
    if code_reg != code_cls:
        return "regression" if code_reg > code_cls else "classification"
    text_reg = len(_DESCRIPTION_REGRESSION.findall(description))
    text_cls = len(_DESCRIPTION_CLASSIFICATION.findall(description))
    if text_reg != text_cls:
        return "regression" if text_reg > text_cls else "classification"
    return "auto"


class _Transcript:
    """What a stateless policy knows: its earlier actions and notes, and the latest observation."""

    def __init__(self, messages: list[dict[str, str]]):
        users = [m["content"] for m in messages if m["role"] == "user"]
        self.task = users[0] if users else ""
        self.observation = users[-1] if len(users) > 1 else ""
        self.actions: list[str] = []
        self.thoughts: list[str] = []
        for m in messages:
            if m["role"] != "assistant":
                continue
            try:
                parsed = parse_response(m["content"])
            except ModelOutputError:
                continue
            self.actions.append(parsed.action)
            self.thoughts.append(parsed.thought)
        self.notes = "\n".join(self.thoughts)
        found = _REMAINING.findall(self.observation or self.task)
        self.remaining = int(found[-1]) if found else 1_000_000

    @property
    def last_action(self) -> str:
        return self.actions[-1] if self.actions else ""

    def last_run(self) -> str | None:
        """Stem of the last script run with the ``rm -f submission.csv && python`` pattern."""
        for action in reversed(self.actions):
            match = _RUN.match(action)
            if match:
                return match.group(1)
        return None


class ScriptedPolicy:
    def __init__(self, name: str = "scripted", attempts: int = 3):
        self.name = name
        self.attempts = max(0, attempts)

    async def act(self, messages: list[dict[str, str]], *, seed: int) -> PolicyReply:
        return self.decide(_Transcript(messages))

    def decide(self, t: _Transcript) -> PolicyReply:
        if t.thoughts and _RESTORE_NOTE in t.thoughts[-1]:
            return _reply("The best submission is back in place, so I submit it.", "submit")
        note = self._result_note(t)
        if t.remaining <= 1:
            return _reply(f"{note}Only one step is left, so I submit the current submission.", "submit")
        if t.remaining <= 2 and t.actions:
            return self._finish(t, note)
        plan = self._plan(t)
        step = len(t.actions)
        if step < len(plan):
            discussion, command = plan[step]
            return _reply(f"{note}{discussion}", command)
        return self._finish(t, note)

    def _plan(self, t: _Transcript) -> list[tuple[str, str]]:
        steps = [
            ("First I look at the files in the workspace and the data folder.", "ls -la && ls -la data"),
            (
                "I run the baseline as it is to get a first submission file.",
                "rm -f submission.csv && python baseline.py",
            ),
            ("I validate the baseline submission to get a reference score.", "validate"),
            (
                "Next I read the baseline to see how it loads the data and which model it trains.",
                'open "baseline.py"',
            ),
        ]
        if len(t.actions) < len(steps):
            return steps
        match = _TASK_TYPE_NOTE.search(t.notes)
        task_type = match.group(1) if match else _task_type(t.task, t.observation)
        kind = "not clear yet" if task_type == "auto" else f"a {task_type} problem"
        steps.append(
            (
                f"Task type: {task_type}. From the description and the baseline this is {kind}. I check the "
                "columns of the data and the expected submission layout.",
                "head -n 5 data/train.csv && head -n 3 sample_submission.csv",
            )
        )
        for choice in choices_for(task_type)[: self.attempts]:
            steps += self._variant_steps(choice, task_type)
        return steps

    @staticmethod
    def _variant_steps(choice: ModelChoice, task_type: str) -> list[tuple[str, str]]:
        script = f"model_{choice.key}.py"
        return [
            (
                f"I will try {choice.title}, which often beats a simple baseline on tabular data. I create "
                f"a new script {script} for it.",
                f"create {script}",
            ),
            (
                "I write the training script: it infers the target and feature types from the files, "
                "reports a validation score, refits on train plus validation and writes submission.csv.",
                f"edit 1:1\n{solution_script(choice, task_type).rstrip()}\nend_of_edit",
            ),
            (
                f"I run {script} to train the model and write a new submission.",
                f"rm -f submission.csv && python {script}",
            ),
            ("I validate the new submission.", "validate"),
        ]

    @staticmethod
    def _result_note(t: _Transcript) -> str:
        """A line recording the score the latest ``validate`` gave to the latest script."""
        if t.last_action != "validate":
            return ""
        ran = t.last_run() or "baseline"
        score = _SCORE.search(t.observation)
        return f"Result of {ran}: {score.group(1) if score else 'failed'}\n"

    def _finish(self, t: _Transcript, note: str) -> PolicyReply:
        results = dict(_RESULT_NOTE.findall(f"{t.notes}\n{note}"))
        best = _best(results, f"{t.notes}\n{t.observation}")
        if best is None or (best == t.last_run() and t.last_action == "validate"):
            summary = "Nothing beat the current submission." if best is None else f"The best model is {best}."
            return _reply(f"{note}{summary} I submit the current submission.", "submit")
        return _reply(
            f"{note}The best model is {best}. {_RESTORE_NOTE} by running it again before submitting.",
            f"rm -f submission.csv && python {best}.py",
        )


def _best(results: dict[str, str], text: str) -> str | None:
    """The script stem with the best recorded score, judged on the baseline's first metric."""
    baseline = _BASELINE.search(text)
    scored: list[tuple[str, float]] = []
    metric = next(iter(json.loads(baseline.group(1))), None) if baseline else None
    for stem, value in results.items():
        if value == "failed":
            continue
        metrics = json.loads(value)
        key = metric if metric in metrics else next(iter(metrics), None)
        if key is not None and isinstance(metrics[key], (int, float)):
            scored.append((stem, float(metrics[key])))
            metric = key
    if not scored:
        return None
    sign = -1.0 if metric and _LOWER_IS_BETTER.search(metric) else 1.0
    best = scored[0]
    for stem, value in scored[1:]:  # ties go to the later script: its submission is already in place
        if sign * value >= sign * best[1]:
            best = (stem, value)
    return best[0]


class SubmitBaselinePolicy:
    """Runs the baseline, then submits its submission file."""

    def __init__(self, name: str = "submit_baseline"):
        self.name = name

    async def act(self, messages: list[dict[str, str]], *, seed: int) -> PolicyReply:
        step = sum(1 for m in messages if m["role"] == "assistant")
        if step == 0:
            return _reply("I run the baseline to produce its submission file.", "python baseline.py")
        return _reply("The baseline has written its submission; I submit it.", "submit")
