"""Run-folder layout and crash-safe writes.

Every stage writes into its own keyed folder ``<store>/<stage>/<key>/``. Items are written atomically
(temp file, fsync, rename) so a killed run never leaves a half-written item; ``completed_items`` tells
a resumed stage what is already done. A stage folder is complete once ``_SUCCESS.json`` exists.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from stsc.errors import TaskFormatError

SUCCESS_FILE = "_SUCCESS.json"
REPORT_FILE = "report.json"
SCHEMA_VERSION = 1


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a file's data, or a folder's entries) to disk; a path that cannot be opened
    is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    ``durable=False`` skips the fsyncs: still atomic for readers, but a power loss may lose the
    write. For files rewritten every step whose last version is made durable anyway."""
    path = Path(path)
    try:  # the folder usually exists: skip the mkdir syscalls (this runs once per agent step)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give files the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(path.parent)


def overwrite_bytes(path: Path, data: bytes) -> None:
    """Rewrite ``path`` in place (created when missing): no temp file, no rename, no fsync.

    Far cheaper than ``atomic_write_bytes`` where creating a file is expensive, but a reader (or a
    crash) during the write sees a torn file. For snapshots rewritten every step whose final
    version is written atomically, and that nothing reads before that final write."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        # cut the tail afterwards instead of O_TRUNC first: a snapshot mostly grows, and freeing
        # then reallocating every block of the file is what truncating first would cost
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses and paths to plain JSON values."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in asdict(obj).items()}
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_json(path: Path, obj: Any, durable: bool = True) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n", durable)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_yaml(path: Path, what: str = "") -> dict[str, Any]:
    """The mapping in the yaml file ``path``; ``TaskFormatError`` (naming ``what`` and the path)
    when it cannot be read, does not parse or holds something else."""
    import yaml

    name = f"{what} {path}" if what else str(path)
    try:
        # the C loader where libyaml is there: task files are read once per episode
        data = yaml.load(
            path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )
    except (OSError, yaml.YAMLError) as e:
        raise TaskFormatError(f"cannot read {name}: {e}") from e
    if not isinstance(data, dict):
        raise TaskFormatError(f"{name} must hold a mapping, found {type(data).__name__}")
    return data


class JsonlJournal:
    """Append-only JSONL file; each ``append`` is one flushed, fsynced line.

    A crash can at worst leave a torn last line, which ``read`` ignores (and ``append`` repairs by
    starting on a fresh line), so no complete record is ever lost or duplicated.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: Any) -> None:
        line = json.dumps(to_jsonable(record), sort_keys=False)
        assert "\n" not in line
        with open(self.path, "ab+") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write(line.encode("utf-8") + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        return list(iter_jsonl(self.path))


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Complete JSON lines of ``path`` (a torn trailing line is skipped)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                # a line torn by a crash, then closed by the next append: never a complete record
                logging.getLogger(__name__).warning("skipping a torn line in %s", path)


def write_jsonl(path: Path, records: Iterable[Any]) -> int:
    """Atomically write a whole JSONL file; returns the number of rows."""
    lines = [json.dumps(to_jsonable(r)) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def completed_items(folder: Path, suffix: str = ".json") -> set[str]:
    """Names (without ``suffix``) of finished per-item files in ``folder``; temp files are ignored."""
    folder = Path(folder)
    if not folder.exists():
        return set()
    return {
        p.name[: -len(suffix)] if suffix else p.name
        for p in folder.iterdir()
        if p.name.endswith(suffix) and not p.name.startswith(".")
    }


@dataclass
class StageReport:
    """What a stage did: the funnel (items in/out, drops by reason), usage, cost and wall time."""

    stage: str
    items_in: int = 0
    items_out: int = 0
    drops: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def add_in(self, n: int = 1) -> None:
        self.items_in += n

    def add_out(self, n: int = 1) -> None:
        self.items_out += n

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[str(reason)] += n

    def add_usage(self, prompt_tokens: int = 0, completion_tokens: int = 0, cost_usd: float = 0.0) -> None:
        self.prompt_tokens += int(prompt_tokens)
        self.completion_tokens += int(completion_tokens)
        self.cost_usd += float(cost_usd)

    def as_metrics(self) -> dict[str, float]:
        out = {
            "items_in": float(self.items_in),
            "items_out": float(self.items_out),
            "items_dropped": float(sum(self.drops.values())),
            "prompt_tokens": float(self.prompt_tokens),
            "completion_tokens": float(self.completion_tokens),
            "cost_usd": float(self.cost_usd),
            "wall_s": float(self.wall_s),
        }
        out.update({f"drop.{k}": float(v) for k, v in sorted(self.drops.items())})
        out.update({k: float(v) for k, v in self.metrics.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        d = to_jsonable(self)
        d["drops"] = dict(sorted(self.drops.items()))
        d["schema_version"] = SCHEMA_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageReport:
        d = {k: v for k, v in d.items() if k != "schema_version"}
        d["drops"] = Counter(d.get("drops", {}))
        return cls(**d)


@dataclass
class StageContext:
    """Everything a stage function gets besides the config.

    ``out_dir`` is the stage's own keyed folder (it exists; may hold items of an interrupted run);
    ``inputs`` maps each upstream stage name to its completed folder; ``store`` is the store root, for
    caches shared across stages (``store / "llm_cache"``, ``store / "catalog"``); ``tables`` collects
    row tables the tracker logs (``log_table``); ``artifacts`` lists extra files to log.
    """

    name: str
    key: str
    out_dir: Path
    inputs: dict[str, Path]
    store: Path
    seed: int
    report: StageReport
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    tracker: Any = None  # stsc.tracking.StageTracker or None; for live metrics (training curves)
    started: float = field(default_factory=time.time)

    def input(self, stage: str) -> Path:
        """Folder of upstream ``stage``; raises ``StageError`` when it was not run or declared."""
        from stsc.errors import StageError

        if stage not in self.inputs:
            raise StageError(
                f"stage '{self.name}' needs the output of '{stage}', which is not among its inputs "
                f"{sorted(self.inputs)}"
            )
        return self.inputs[stage]

    def log_table(self, name: str, rows: list[dict[str, Any]]) -> None:
        self.tables[name] = rows

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Stream a metric to the stage's tracking run (no-op without tracking)."""
        if self.tracker is not None:
            self.tracker.log_metrics({key: value}, step=step)
