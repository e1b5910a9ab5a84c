"""A scripted OpenAI-compatible chat server on 127.0.0.1, and the ``openai_server`` pytest fixture.

The server is real HTTP (stdlib ``ThreadingHTTPServer``, one thread per request), so any client —
litellm, the ``openai`` SDK, ``curl`` — talks to it exactly as to vLLM or the OpenAI API. It serves

- ``POST /v1/chat/completions``: non-streaming JSON, or server-sent events when ``"stream": true``
  (with a final usage chunk when ``stream_options.include_usage`` is set);
- ``GET /v1/models``: one model, ``FakeOpenAIServer.model``.

Replies come from a script: ``push()`` queues replies (plain text, or ``Reply`` for an HTTP error,
a delay or explicit token counts) consumed one per request, in order. When the queue is empty the
``responder`` callable (messages -> text) answers; without one the server echoes the last user
message as ``"echo: <content>"``. ``latency_s`` is added to every request, and requests are served
concurrently, so N calls with latency L finish in about L, not N*L.

Every request is recorded on arrival (before any delay) in ``requests``; ``max_in_flight`` is the
largest number of requests the server was handling at once. Token usage counts whitespace-separated
words: prompt = the words of every message content, completion = the words of the reply text.

Use it as a fixture (the plugin is registered in ``tests/conftest.py``)::

    def test_something(openai_server):
        openai_server.push("hello", Reply(status=429))
        cfg = LLMConfig(model="openai/fake-model", api_base=openai_server.base_url)

or standalone: ``with FakeOpenAIServer() as server: ...``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Responder = Callable[[list[dict[str, Any]]], str]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    ``status`` other than 200 sends an OpenAI-style error (``body`` overrides the JSON error
    object; a ``str`` body is sent as is); a ``body`` with status 200 is sent instead of the
    completion (a malformed success). ``delay_s`` is slept before answering (on top of the
    server's ``latency_s``). Token counts default to word counts. ``finish_reason`` ``"length"``
    says the answer hit the output limit.
    """

    text: str = ""
    status: int = 200
    body: dict[str, Any] | str | None = None
    delay_s: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    finish_reason: str = "stop"


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server received it. Header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    @property
    def params(self) -> dict[str, Any]:
        """Every body field except ``messages`` (model, temperature, max_tokens, stream, ...)."""
        return {k: v for k, v in self.body.items() if k != "messages"}

    @property
    def api_key(self) -> str | None:
        """The bearer token of the Authorization header (or ``x-api-key``), if any."""
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[len("bearer ") :]
        return self.headers.get("x-api-key")


def count_words(text: str) -> int:
    return len(text.split())


def _content_text(content: Any) -> str:
    if isinstance(content, list):  # multimodal content parts
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def echo_responder(messages: list[dict[str, Any]]) -> str:
    """Default answer: ``"echo: "`` + the content of the last user message."""
    users = [m for m in messages if m.get("role") == "user"]
    return "echo: " + (_content_text(users[-1].get("content")) if users else "")


class FakeOpenAIServer:
    """Scripted OpenAI-compatible server; see the module docstring for the contract."""

    def __init__(
        self, *, responder: Responder | None = None, latency_s: float = 0.0, model: str = "fake-model"
    ) -> None:
        self.responder = responder
        self.latency_s = latency_s
        self.model = model
        self._lock = threading.Lock()
        self._script: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        handler = type("_Handler", (_Handler,), {"fake": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler, bind_and_activate=False)
        httpd.daemon_threads = True
        httpd.request_queue_size = 256  # many clients connect at once in throughput tests
        httpd.server_bind()
        httpd.server_activate()
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
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

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``: the ``api_base`` clients use."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- script and records ------------------------------------------------------------------------

    def push(self, *replies: str | Reply) -> None:
        """Queue replies, consumed one per chat request in order."""
        with self._lock:
            self._script.extend(Reply(text=r) if isinstance(r, str) else r for r in replies)

    @property
    def pending(self) -> int:
        """Scripted replies not consumed yet."""
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (a copy), chat and model listing alike."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    def reset(self) -> None:
        """Forget the script, the records and the in-flight maximum."""
        with self._lock:
            self._script.clear()
            self._requests.clear()
            self._max_in_flight = self._in_flight

    # -- used by the handler -----------------------------------------------------------------------

    def _enter(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _next_reply(self, messages: list[dict[str, Any]]) -> Reply:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return Reply(text=(self.responder or echo_responder)(messages))


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAIServer  # set on the per-server subclass
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK of the headers (~40 ms on Linux) and every call would cost that much extra.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence per-request logging on stderr."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._record({})
        try:
            if self.path.rstrip("/").endswith("/models"):
                models = {"object": "list", "data": [{"id": self.fake.model, "object": "model"}]}
                self._send_json(200, models)
            else:
                self._send_json(404, _error_body(404, f"no route GET {self.path}"))
        finally:
            self._leave()

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        self._record(body)
        try:
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send_json(404, _error_body(404, f"no route POST {self.path}"))
                return
            messages = list(body.get("messages", []))
            reply = self.fake._next_reply(messages)
            time.sleep(self.fake.latency_s + reply.delay_s)
            self._answer(body, messages, reply)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout fired); nothing left to answer
        finally:
            self._leave()

    def _record(self, body: dict[str, Any]) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._in_flight = True
        self.fake._enter(RecordedRequest(self.command, self.path, headers, body, time.monotonic()))

    def _leave(self) -> None:
        """End the request's in-flight span; called before the first response byte is written, so
        a client cannot start its next request while this one still counts as in flight."""
        if getattr(self, "_in_flight", False):
            self._in_flight = False
            self.fake._leave()

    def _answer(self, body: dict[str, Any], messages: list[dict[str, Any]], reply: Reply) -> None:
        if reply.status != 200 or reply.body is not None:
            error = reply.body if reply.body is not None else _error_body(reply.status)
            self._send_json(reply.status, error, reply.headers)
            return
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = sum(count_words(_content_text(m.get("content"))) for m in messages)
        completion = reply.completion_tokens
        if completion is None:
            completion = count_words(reply.text)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        model = str(body.get("model") or self.fake.model)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._send_stream(model, reply, usage if include_usage else None)
        else:
            self._send_json(
                200, _completion_body(model, reply.text, usage, reply.finish_reason), reply.headers
            )

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self._leave()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, model: str, reply: Reply, usage: dict[str, int] | None) -> None:
        self._leave()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chunk_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        pieces = _split_keep_spaces(reply.text) or [""]
        for i, piece in enumerate(pieces):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            self._send_event(_chunk(chunk_id, model, [{"index": 0, "delta": delta, "finish_reason": None}]))
        self._send_event(_chunk(chunk_id, model, [{"index": 0, "delta": {}, "finish_reason": "stop"}]))
        if usage is not None:
            self._send_event({**_chunk(chunk_id, model, []), "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _send_event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
        self.wfile.flush()


def _split_keep_spaces(text: str) -> list[str]:
    """Word-sized stream pieces whose concatenation is exactly ``text``."""
    return [piece for piece in re.split(r"(?<=\s)(?=\S)", text) if piece]


def _chunk(chunk_id: str, model: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }


def _completion_body(
    model: str, text: str, usage: dict[str, int], finish_reason: str = "stop"
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
        ],
        "usage": usage,
    }


def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
    return {
        "error": {
            "message": message or f"scripted {status} {phrase}",
            "type": _ERROR_TYPES.get(status, "server_error" if status >= 500 else "api_error"),
            "code": status,
        }
    }


def context_length_error(limit: int = 4096) -> Reply:
    """A 400 reply in the shape OpenAI and vLLM use when the prompt exceeds the context window."""
    message = (
        f"This model's maximum context length is {limit} tokens. However, your messages resulted in "
        f"{limit + 1} tokens. Please reduce the length of the messages."
    )
    body = {"error": {"message": message, "type": "invalid_request_error", "code": "context_length_exceeded"}}
    return Reply(status=400, body=body)


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A started ``FakeOpenAIServer`` with an empty script, stopped after the test."""
    with FakeOpenAIServer() as server:
        yield server
