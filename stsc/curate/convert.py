"""From one run folder to the messages of one SFT example (no tokenizer involved).

Views (``curate.history_view``):

- ``full``: the ``.traj`` ``history`` verbatim: system prompt, task, and every response followed by
  its whole observation.
- ``processed``: what the model saw. The history is cut after the teacher's last response and passed
  through the episode's own history processor (``stsc.agent.history.process_history`` with
  ``agent.history``), so the example is exactly the prompt of the teacher's last call followed by
  the response it gave: the task and the last ``n`` observations verbatim, older observations as
  ``Old output omitted (K lines)``, and every response in full. One example per trajectory: each
  earlier response is trained in the context of that final view, which shows less of the older
  observations than the teacher had when it wrote them (never more).

In both views every assistant message is a response the teacher produced (the accepted one of its
step; format-error retries are not in the history), demonstrations (``is_demo``) are left out
because they are not the teacher's output, and messages after the last response (the final
observation) are left out because nothing is learned from them. ``curate.include_system`` keeps or
removes the system prompt; ``curate.thinking: strip`` removes ``<think>`` blocks from responses
(with ``keep`` they stay in the content, where the student's chat template renders them; a response
with several blocks, or one not at its start, gets its reasoning merged into one opening block, the
form every reasoning template renders without loss: ``normalise_thinking``).

``curate.examples: step`` (``build_step_examples``) makes one example per response instead: the
view the model had when it wrote that response (the processor applied to the history up to it),
then the response, which alone is trained (``{"loss": "last"}`` in the row).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stsc.agent.history import process_history
from stsc.agent.parser import split_thinking
from stsc.config import CurateConfig, HistoryConfig
from stsc.curate.records import DropReason, TaskInfo
from stsc.errors import ModelOutputError, UnusableTrajectoryError
from stsc.synth.task import is_better

RESULT_FILE = "stsc.json"  # written last by the episode writer: its presence marks a finished run
RESULTS_FILE = "results.json"
ROLES = ("system", "user", "assistant")

Message = dict[str, str]


@dataclass(frozen=True)
class RunRecord:
    """The parts of a run folder curation uses."""

    history: list[dict[str, Any]]
    actions: list[str]
    scores: list[float]  # priority-metric values of the scored submissions, in order
    baseline: float | None  # from the task's meta.json, else results.json


def _read_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnusableTrajectoryError(DropReason.UNREADABLE_RUN, f"{path}: {e}") from e
    if not isinstance(data, dict):
        raise UnusableTrajectoryError(DropReason.UNREADABLE_RUN, f"{path} does not hold a JSON object")
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _history(traj: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    history = traj.get("history")
    if not isinstance(history, list) or not all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in history
    ):
        raise UnusableTrajectoryError(
            DropReason.UNREADABLE_RUN, f"{path}: 'history' is not a list of chat messages"
        )
    try:
        for m in history:
            m["content"].encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate from a \udXXX escape: not text any tokenizer takes
        raise UnusableTrajectoryError(DropReason.UNREADABLE_RUN, f"{path}: {e}") from e
    return history


def _actions(traj: dict[str, Any], path: Path) -> list[str]:
    steps = traj.get("trajectory")
    if not isinstance(steps, list) or not all(
        isinstance(s, dict) and isinstance(s.get("action"), str) for s in steps
    ):
        raise UnusableTrajectoryError(
            DropReason.UNREADABLE_RUN, f"{path}: 'trajectory' is not a list of steps with actions"
        )
    return [s["action"] for s in steps]


def read_run(run_dir: Path, task: TaskInfo) -> RunRecord:
    """Read ``<task>.traj`` and ``results.json``; raises ``UnusableTrajectoryError`` (unfinished, unreadable)."""
    traj_path = run_dir / f"{task.task_id}.traj"
    if not (run_dir / RESULT_FILE).is_file() or not traj_path.is_file():
        raise UnusableTrajectoryError(DropReason.UNFINISHED_RUN, str(run_dir))
    traj = _read_object(traj_path)
    results = _read_object(run_dir / RESULTS_FILE) if (run_dir / RESULTS_FILE).is_file() else {}
    entries = results.get("agent") or []
    if not isinstance(entries, list):
        raise UnusableTrajectoryError(
            DropReason.UNREADABLE_RUN, f"{run_dir / RESULTS_FILE}: 'agent' is not a list"
        )
    scores = [
        v for v in (_number(e.get(task.metric)) for e in entries if isinstance(e, dict)) if v is not None
    ]
    baseline = task.baseline_score
    if baseline is None and isinstance(results.get("baseline"), dict):
        baseline = _number(results["baseline"].get(task.metric))
    return RunRecord(_history(traj, traj_path), _actions(traj, traj_path), scores, baseline)


def best_score(record: RunRecord, task: TaskInfo) -> float | None:
    """The best scored value in the task's direction (None when nothing was scored)."""
    best = None
    for value in record.scores:
        if best is None or is_better(value, best, task.higher_is_better):
            best = value
    return best


def check_scores(record: RunRecord, task: TaskInfo, cfg: CurateConfig) -> None:
    """Apply the success filters; raises ``UnusableTrajectoryError`` with the failing filter's reason."""
    best = best_score(record, task)
    if cfg.require_success and best is None:
        raise UnusableTrajectoryError(DropReason.NO_SUCCESS)
    if cfg.require_beats_baseline:
        if record.baseline is None:
            raise UnusableTrajectoryError(DropReason.NO_BASELINE_SCORE)
        if best is None or not is_better(best, record.baseline, task.higher_is_better):
            raise UnusableTrajectoryError(DropReason.BELOW_BASELINE)


def actions_sha256(actions: list[str]) -> str:
    """Identity of an action sequence (the deduplication key within a task)."""
    return hashlib.sha256(json.dumps(actions, ensure_ascii=False).encode("utf-8")).hexdigest()


def strip_thinking(content: str) -> str:
    """``content`` without its ``<think>`` blocks (a response whose think block is malformed is
    returned unchanged: the episode only stores responses that parsed)."""
    try:
        _, rest = split_thinking(content)
    except ModelOutputError:
        return content
    return rest.lstrip()


def normalise_thinking(content: str) -> str:
    """``content`` with all its reasoning in one ``<think>`` block at the start (``curate.thinking:
    keep``). A response whose only think block already opens it (or that has none) is returned
    unchanged; reasoning ended by a lone ``</think>`` gets its opening tag. Chat templates that render reasoning separately (TRL's ``qwen3``: the text before the
    first ``</think>`` as reasoning, the text after the last one as the answer) would otherwise drop
    the text between two think blocks, or before a block that does not open the response, from
    training without a trace; the merged block keeps every word, in order."""
    try:
        thinking, rest = split_thinking(content)
    except ModelOutputError:
        return content
    closes = content.count("</think>")
    if closes == 0 or (closes == 1 and content.lstrip().startswith("<think>")):
        return content
    return f"<think>\n{thinking}\n</think>\n\n{rest.strip()}"


def _teacher_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history without demonstrations and without anything after the last response; raises
    ``UnusableTrajectoryError(NO_ASSISTANT_TURN)`` when the teacher never responded."""
    history = [m for m in history if not m.get("is_demo")]
    last = max((i for i, m in enumerate(history) if m["role"] == "assistant"), default=-1)
    if last < 0:
        raise UnusableTrajectoryError(DropReason.NO_ASSISTANT_TURN)
    return history[: last + 1]


def _processor(cfg: CurateConfig, history_cfg: HistoryConfig) -> HistoryConfig:
    """The agent's history processor (``history_view: processed``) or ``full``."""
    kind = history_cfg.kind if cfg.history_view == "processed" else "full"
    return HistoryConfig(kind=kind, n=history_cfg.n)


def _render(view: list[dict[str, Any]], cfg: CurateConfig) -> list[Message]:
    if not cfg.include_system:
        view = [m for m in view if m["role"] != "system"]
    edit = strip_thinking if cfg.thinking == "strip" else normalise_thinking
    view = [{**m, "content": edit(m["content"])} if m["role"] == "assistant" else m for m in view]
    return [{"role": m["role"], "content": m["content"]} for m in view]


def build_step_examples(
    history: list[dict[str, Any]], cfg: CurateConfig, history_cfg: HistoryConfig
) -> list[list[Message]]:
    """One example per response, each the view the model had at that step plus the response (see
    the module docstring); raises ``UnusableTrajectoryError(NO_ASSISTANT_TURN)`` like
    ``build_messages``."""
    history = _teacher_history(history)
    processor = _processor(cfg, history_cfg)
    examples = []
    for i, message in enumerate(history):
        if message["role"] == "assistant":
            examples.append(_render([*process_history(history[:i], processor), message], cfg))
    return examples


def build_messages(
    history: list[dict[str, Any]], cfg: CurateConfig, history_cfg: HistoryConfig
) -> list[Message]:
    """The example's ``{"role", "content"}`` messages (see the module docstring); raises
    ``UnusableTrajectoryError(NO_ASSISTANT_TURN)`` when the teacher never responded."""
    return _render(process_history(_teacher_history(history), _processor(cfg, history_cfg)), cfg)
