"""A fake Hugging Face Hub API on 127.0.0.1, and the ``hub_server`` / ``hub_api`` pytest fixtures.

Real HTTP (stdlib ``ThreadingHTTPServer``), so the real ``huggingface_hub.HfApi(endpoint=...)``
talks to it exactly as to the Hub (huggingface_hub 2.x uses httpx2, which HTTP mocking libraries do
not see). It serves the subset of the API that dataset verification uses:

- ``GET /api/datasets?search=<s>&limit=<n>``: the datasets whose id contains ``s`` (case-insensitive),
  most downloaded first, as compact list entries; pages of ``page_size`` linked by a
  ``Link: <...>; rel="next"`` header, like the Hub.
- ``GET /api/datasets/<org>/<name>`` (and ``.../revision/<rev>``): the dataset's JSON object; a
  missing id answers 404 with ``X-Error-Code: RepoNotFound``; a ``disabled`` dataset answers 403
  "Access to this resource is disabled."; ids in ``failing`` answer 500.
- ``GET /api/agent-harnesses``: an empty registry (the client fetches it once a day).

Datasets are the Hub's own JSON objects (``id`` required; ``sha``, ``tags``, ``cardData``,
``siblings``, ``gated``, ``private``, ``downloads``... optional). ``requests`` records every path
and query served.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import pytest

HUB_DATA = Path(__file__).resolve().parents[1] / "data" / "hub" / "datasets"
_LIST_FIELDS = (
    "id",
    "author",
    "sha",
    "downloads",
    "likes",
    "tags",
    "gated",
    "private",
    "disabled",
    "lastModified",
)


def load_hub_datasets(folder: Path = HUB_DATA) -> list[dict[str, Any]]:
    """The Hub JSON objects stored one per file in ``folder`` (sorted by file name)."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]


class FakeHubServer:
    """Serves ``datasets`` (Hub JSON objects) over the Hub API; see the module docstring."""

    def __init__(self, datasets: Iterable[dict[str, Any]] = (), page_size: int = 50):
        self.datasets: dict[str, dict[str, Any]] = {d["id"]: d for d in datasets}
        self.page_size = page_size
        self.failing: set[str] = set()
        self._requests: list[tuple[str, dict[str, list[str]]]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeHubServer:
        handler = type("_Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeHubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the ``endpoint`` for ``HfApi``."""
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def requests(self) -> list[tuple[str, dict[str, list[str]]]]:
        """(path, query) of every request served so far."""
        with self._lock:
            return list(self._requests)

    def paths(self, prefix: str = "/api/datasets") -> list[str]:
        return [p for p, _ in self.requests if p.startswith(prefix)]

    def _record(self, path: str, query: dict[str, list[str]]) -> None:
        with self._lock:
            self._requests.append((path, query))

    def search(self, text: str) -> list[dict[str, Any]]:
        hits = [d for d in self.datasets.values() if text.lower() in d["id"].lower()]
        hits.sort(key=lambda d: (-(d.get("downloads") or 0), d["id"]))
        return [{k: d[k] for k in _LIST_FIELDS if k in d} for d in hits]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHubServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        url = urlparse(self.path)
        query = parse_qs(url.query)
        self.fake._record(url.path, query)
        if url.path == "/api/agent-harnesses":
            return self._json(200, {"standardEnvVars": [], "harnesses": {}})
        if url.path == "/api/datasets":
            return self._list(query)
        if url.path.startswith("/api/datasets/"):
            parts = url.path.removeprefix("/api/datasets/").split("/")
            return self._info("/".join(parts[:2]) if len(parts) >= 2 and parts[1] != "revision" else parts[0])
        return self._json(404, {"error": f"no route {url.path}"})

    def _list(self, query: dict[str, list[str]]) -> None:
        text = " ".join(query.get("search", [""]))
        hits = self.fake.search(text)
        if "limit" in query:
            hits = hits[: int(query["limit"][0])]
        start = int(query.get("cursor", ["0"])[0])
        page = hits[start : start + self.fake.page_size]
        headers = {}
        if start + self.fake.page_size < len(hits):
            nxt = {**{k: v[0] for k, v in query.items()}, "cursor": str(start + self.fake.page_size)}
            headers["Link"] = f'<{self.fake.url}/api/datasets?{urlencode(nxt)}>; rel="next"'
        self._json(200, page, headers)

    def _info(self, repo_id: str) -> None:
        if repo_id in self.fake.failing:
            return self._json(500, {"error": "Internal Error"})
        data = self.fake.datasets.get(repo_id)
        if data is None:
            return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        if data.get("disabled"):
            message = "Access to this resource is disabled."
            return self._json(403, {"error": message}, {"X-Error-Message": message})
        self._json(200, data)

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def hub_server() -> Iterator[FakeHubServer]:
    """A running fake Hub serving the datasets of ``tests/data/hub/datasets``."""
    with FakeHubServer(load_hub_datasets()) as server:
        yield server


@pytest.fixture
def hub_online(hub_server: FakeHubServer, monkeypatch: pytest.MonkeyPatch) -> FakeHubServer:
    """``hub_server`` with huggingface_hub's offline switch lifted for this test only, and its
    default endpoint (used for background lookups) pointed at the fake."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub_server.url)
    return hub_server
