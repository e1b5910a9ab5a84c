"""Content-addressed response cache: one JSON file per answer, ``<dir>/<key[:2]>/<key>.json``.

The key is the sha256 of the model string, the messages, the sampling parameters and an optional
salt; transport options (timeout, retries) are not part of it and neither is the API key, which
never reaches this module. Entries are written atomically (temp file, fsync, rename), so
concurrent writers and killed processes leave either a whole entry or none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from stsc.llm.records import Completion
from stsc.store import atomic_write_text

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# Options that change how a request travels, not what the model answers.
TRANSPORT_PARAMS = frozenset({"timeout", "max_retries", "metadata", "drop_params"})


class ResponseCache:
    """Answers of one model, cached under ``root``."""

    def __init__(self, root: Path, model: str) -> None:
        self.root = Path(root)
        self.model = model

    def key(self, messages: list[dict[str, Any]], params: dict[str, Any], salt: str | None = None) -> str:
        payload = {"model": self.model, "messages": messages, "params": _semantic(params), "salt": salt}
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Completion | None:
        """The cached answer (``cached=True``, cost 0.0), or None. Unreadable entries are misses."""
        path = self.path(key)
        start = time.monotonic()
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
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
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable cache entry %s: %r", path, exc)
            return None

    def put(self, key: str, completion: Completion, params: dict[str, Any]) -> None:
        record = {
            "schema_version": SCHEMA_VERSION,
            "key": key,
            "model": self.model,
            "params": _semantic(params),
            "text": completion.text,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "cost_usd": completion.cost_usd,
            "finish_reason": completion.finish_reason,
            "reasoning": completion.reasoning,
        }
        # a cache: a lost write is a miss, so skip the fsyncs that would stall the event loop
        atomic_write_text(self.path(key), json.dumps(record, ensure_ascii=False, default=str), durable=False)


def _semantic(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in TRANSPORT_PARAMS}
