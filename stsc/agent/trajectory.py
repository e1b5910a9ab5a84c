"""The run folder of one episode, in MLGym's layout (reference/mlgym.md §4), plus stsc's record.

``<run_dir>/<task_id>.traj``: ``environment``, ``trajectory`` (one entry per executed step),
``history`` (the full chat with metadata) and ``info`` (model stats, exit status, submission,
scores); rewritten after every step, atomically at the end. ``results.json``: ``{"agent": [...], "baseline":
{...}}``. ``stsc.json``: the ``EpisodeResult``, written last; its presence marks the run finished.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from stsc.agent.task import TaskSpec
from stsc.errors import ConfigError
from stsc.store import atomic_write_bytes, atomic_write_json, overwrite_bytes, read_json, to_jsonable

SCHEMA_VERSION = 1
ENVIRONMENT = "stsc"
AGENT = "primary"  # MLGym's name of the acting agent in history entries
RESULT_FILE = "stsc.json"
RESULTS_FILE = "results.json"


def safe_model_id(model: str) -> str:
    """A model id usable as one path component ("org/name" -> "org--name")."""
    return model.replace("/", "--")


def usable_model_id(model_id: str) -> bool:
    """Whether a folder-safe model id can start a run folder name that parses back: non-empty,
    without ``__`` and not ending in ``_``."""
    return bool(model_id) and "__" not in model_id and not model_id.endswith("_")


def run_folder_name(
    model: str, task_id: str, agent: str, temperature: float, top_p: float, cost_limit_usd: float, run: int
) -> str:
    """``<model>__<taskId>__<agent>__t-<temp>__p-<top_p>__c-<cost>__install-0_run_<k>``.

    The name parses back (``stsc.evaluation.runs.parse_run_folder_name``: the model ends at the
    first ``__``, the agent is the last part before ``__t-``, the task id is what lies between, so
    it may hold ``_`` and ``__`` anywhere). Raises ``ConfigError`` for a model or agent name that
    would make it ambiguous."""
    model_id = safe_model_id(model)
    if not usable_model_id(model_id):
        raise ConfigError(
            f"model name {model!r} cannot name run folders: it must be non-empty, contain no '__' and not "
            "end with '_' (rename it: teacher.name / teacher.llm.model, or the eval.models entry)"
        )
    if not agent or "__" in agent or agent.startswith("_"):
        raise ConfigError(
            f"agent name {agent!r} cannot name run folders: it must be non-empty, contain no '__' and not "
            "start with '_' (agent.name)"
        )
    return (
        f"{model_id}__{task_id}__{agent}__t-{temperature:.2f}__p-{top_p:.2f}"
        f"__c-{cost_limit_usd:.2f}__install-0_run_{run}"
    )


@dataclass
class ModelStats:
    """MLGym's ``info.model_stats`` for one episode (``total_cost`` equals ``task_cost``)."""

    total_cost: float = 0.0
    task_cost: float = 0.0
    tokens_sent: int = 0
    tokens_received: int = 0
    api_calls: int = 0

    def add(self, prompt_tokens: int, completion_tokens: int, cost_usd: float) -> None:
        self.total_cost += cost_usd
        self.task_cost += cost_usd
        self.tokens_sent += prompt_tokens
        self.tokens_received += completion_tokens
        self.api_calls += 1


@dataclass(frozen=True)
class EpisodeResult:
    """stsc's record of one finished episode (``stsc.json``)."""

    task_id: str
    policy: str
    seed: int
    label: str
    config_key: str
    agent: str
    exit_status: str
    steps: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    api_calls: int
    metric: str | None
    higher_is_better: bool
    scores: list[dict[str, Any]] = field(default_factory=list)
    best_score: float | None = None
    last_score: float | None = None
    baseline_score: float | None = None
    run_dir: str = ""
    prompts: dict[str, str] = field(default_factory=dict)  # template name -> sha256 of its first render
    schema_version: int = SCHEMA_VERSION

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def submitted(self) -> bool:
        return self.exit_status == "submitted"

    @classmethod
    def read(cls, run_dir: Path) -> EpisodeResult:
        data = read_json(Path(run_dir) / RESULT_FILE)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def best_and_last(task: TaskSpec, scores: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """Best priority-metric value over ``scores`` (in the task's direction) and that of the last."""
    values = [v for v in (task.metric_value(s) for s in scores) if v is not None]
    best = None
    for v in values:
        if best is None or task.better(v, best):
            best = v
    last = task.metric_value(scores[-1]) if scores else None
    return best, last


def traj_path(run_dir: Path, task_id: str) -> Path:
    return Path(run_dir) / f"{task_id}.traj"


def write_traj(
    run_dir: Path,
    task_id: str,
    trajectory: list[dict[str, Any]],
    history: list[dict[str, Any]],
    info: dict[str, Any],
) -> None:
    """A finished episode's ``.traj``, written atomically and durably."""
    TrajWriter(traj_path(run_dir, task_id)).final(trajectory, history, info)


class TrajWriter:
    """The ``.traj`` of one episode: ``snapshot`` after every step, ``final`` at the end.

    Steps and messages are only ever appended, so each is encoded once, the first time it is
    written, and a rewrite joins the encoded pieces: re-encoding the whole episode every step would
    cost time quadratic in its length. Snapshots are rewritten in place (``overwrite_bytes``; a
    crash mid-write can tear one, but an unfinished run is never read); the final version is
    written atomically and durably. Both are compact JSON with MLGym's fields.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._steps: list[str] = []
        self._messages: list[str] = []

    def snapshot(
        self, trajectory: list[dict[str, Any]], history: list[dict[str, Any]], info: dict[str, Any]
    ) -> None:
        overwrite_bytes(self.path, self._encode(trajectory, history, info))

    def final(
        self, trajectory: list[dict[str, Any]], history: list[dict[str, Any]], info: dict[str, Any]
    ) -> None:
        atomic_write_bytes(self.path, self._encode(trajectory, history, info))

    def _encode(
        self, trajectory: list[dict[str, Any]], history: list[dict[str, Any]], info: dict[str, Any]
    ) -> bytes:
        _encode_new(self._steps, trajectory)
        _encode_new(self._messages, history)
        text = (
            f'{{"environment": {json.dumps(ENVIRONMENT)}, "trajectory": [{", ".join(self._steps)}], '
            f'"history": [{", ".join(self._messages)}], "info": {json.dumps(to_jsonable(info))}}}\n'
        )
        return text.encode("utf-8")


def _encode_new(encoded: list[str], items: list[dict[str, Any]]) -> None:
    if len(items) < len(encoded):  # not an append-only list after all: start over
        encoded.clear()
    encoded.extend(json.dumps(to_jsonable(item)) for item in items[len(encoded) :])


def write_results(
    run_dir: Path, scores: list[dict[str, Any]], baseline: dict[str, Any], final: bool = True
) -> None:
    """``final``: atomic and durable; otherwise rewritten in place (see ``overwrite_bytes``)."""
    path, content = Path(run_dir) / RESULTS_FILE, {"agent": scores, "baseline": baseline}
    if final:
        atomic_write_json(path, content)
    else:
        overwrite_bytes(path, (json.dumps(to_jsonable(content), indent=2) + "\n").encode("utf-8"))


def write_result(run_dir: Path, result: EpisodeResult) -> None:
    atomic_write_json(Path(run_dir) / RESULT_FILE, {**to_jsonable(result), "tokens": result.tokens})


def state_string(state: dict[str, str]) -> str:
    """The ``state`` of a trajectory entry: a JSON string, as MLGym writes it."""
    return json.dumps(state)
