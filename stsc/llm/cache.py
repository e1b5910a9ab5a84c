"""Content-addressed response cache: one SQLite table per cache folder, ``<dir>/responses.sqlite3``.

The key is the sha256 of the model string, the messages, the sampling parameters and an optional
salt; transport options (timeout, retries) are not part of it and neither is the API key, which
never reaches this module. Each answer is one row (its JSON record), written in its own
transaction, so concurrent writers (threads, or processes sharing a store) and killed processes
leave either a whole entry or none. The database runs in WAL mode without per-write fsync: a
power loss may lose the newest answers (a cache miss, never a torn entry). One row costs a few
tens of microseconds; a file per answer cost a file creation, which on some filesystems takes
most of a millisecond of CPU, once per agent step.

Entries of the earlier layout (one JSON file per answer, ``<dir>/<key[:2]>/<key>.json``) are still
read. An unreadable database or entry is a miss, logged once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from stsc.llm.records import Completion, public_params

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DB_NAME = "responses.sqlite3"
# Options that change how a request travels, not what the model answers.
TRANSPORT_PARAMS = frozenset({"timeout", "max_retries", "metadata", "drop_params"})
_BUSY_TIMEOUT_MS = 60_000  # other writers hold the lock for microseconds; wait long before failing
_SCHEMA = "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, record TEXT NOT NULL, created REAL)"


class ResponseCache:
    """Answers of one model, cached under ``root``. Safe to share between threads."""

    def __init__(self, root: Path, model: str, api_base: str | None = None) -> None:
        self.root = Path(root)
        self.model = model
        self.api_base = api_base  # another server is another model, even under the same name
        self.db_path = self.root / DB_NAME
        self._local = threading.local()
        self._warned = False
        self._legacy: bool | None = None  # whether entries of the earlier layout are here

    def key(self, messages: list[dict[str, Any]], params: dict[str, Any], salt: str | None = None) -> str:
        payload = {"model": self.model, "messages": messages, "params": _semantic(params), "salt": salt}
        if self.api_base:
            payload["api_base"] = self.api_base
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def legacy_path(self, key: str) -> Path:
        """Where the earlier one-file-per-answer layout kept ``key``."""
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Completion | None:
        """The cached answer (``cached=True``, cost 0.0), or None. Unreadable entries are misses."""
        start = time.monotonic()
        text = self._select(key)
        if text is None:
            text = self._read_legacy(key)
        if text is None:
            return None
        try:
            record = json.loads(text)
            return Completion(
                text=record["text"],
                prompt_tokens=int(record["prompt_tokens"]),
                completion_tokens=int(record["completion_tokens"]),
                cost_usd=0.0,
                cached=True,
                model=self.model,
                latency_s=time.monotonic() - start,
                finish_reason=record.get("finish_reason"),
                reasoning=record.get("reasoning"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable cache entry %s in %s: %r", key, self.db_path, exc)
            return None

    def put(self, key: str, completion: Completion, params: dict[str, Any]) -> None:
        """Store an answer (replacing any entry under ``key``). A failing write is logged, not raised."""
        record = {
            "schema_version": SCHEMA_VERSION,
            "key": key,
            "model": self.model,
            "params": public_params(_semantic(params)),
            "text": completion.text,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "cost_usd": completion.cost_usd,
            "finish_reason": completion.finish_reason,
            "reasoning": completion.reasoning,
        }
        text = json.dumps(record, ensure_ascii=False, default=str)
        try:
            db = self._connection(create=True)
            assert db is not None
            db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", (key, text, time.time()))
        except (OSError, sqlite3.Error) as exc:
            self._warn(f"cannot write the response cache {self.db_path}: {exc!r}")

    def count(self) -> int:
        """Entries in the database (the earlier one-file layout is not counted)."""
        db = self._connection(create=False)
        return 0 if db is None else int(db.execute("SELECT count(*) FROM responses").fetchone()[0])

    # -- internals ---------------------------------------------------------------------------------

    def _select(self, key: str) -> str | None:
        try:
            db = self._connection(create=False)
            if db is None:
                return None
            row = db.execute("SELECT record FROM responses WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            self._warn(f"cannot read the response cache {self.db_path}: {exc!r}")
            return None
        return None if row is None else str(row[0])

    def _read_legacy(self, key: str) -> str | None:
        if self._legacy is None:  # looked up once: a miss would otherwise cost a failed open
            self._legacy = self.root.is_dir() and any(
                p.is_dir() and len(p.name) == 2 for p in self.root.iterdir()
            )
        if not self._legacy:
            return None
        try:
            return self.legacy_path(key).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("ignoring unreadable cache entry %s: %r", self.legacy_path(key), exc)
            return None

    def _connection(self, *, create: bool) -> sqlite3.Connection | None:
        """This thread's connection (one per thread and process); None when there is no database
        yet and ``create`` is False."""
        db, pid = getattr(self._local, "db", None), getattr(self._local, "pid", None)
        if db is not None and pid == os.getpid():
            return db
        if not create and not self.db_path.exists():
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.db_path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute(_SCHEMA)
        self._local.db, self._local.pid = db, os.getpid()
        return db

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("%s; answers are not cached", message)


def _semantic(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in TRANSPORT_PARAMS}
