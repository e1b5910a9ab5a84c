"""The loopback OpenAI-compatible server every model-calling test relies on."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest

from tests.fakes.openai_server import FakeOpenAIServer, Reply


def _post(server: FakeOpenAIServer, body: dict, key: str = "k") -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{server.base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_fixture_starts_with_an_empty_script_and_record(openai_server: FakeOpenAIServer):
    assert openai_server.requests == [] and openai_server.pending == 0
    assert openai_server.base_url.startswith("http://127.0.0.1:")


def test_script_replies_in_order_then_falls_back_to_the_responder(openai_server: FakeOpenAIServer):
    openai_server.push("first", Reply(status=429, body={"error": {"message": "slow down"}}))
    openai_server.responder = lambda messages: f"{len(messages)} messages"
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

    assert _post(openai_server, body)[1]["choices"][0]["message"]["content"] == "first"
    assert _post(openai_server, body) == (429, {"error": {"message": "slow down"}})
    status, answer = _post(openai_server, body, key="sk-abc")

    assert status == 200 and answer["choices"][0]["message"]["content"] == "1 messages"
    assert answer["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert openai_server.chat_requests[-1].api_key == "sk-abc"
    assert openai_server.chat_requests[-1].params == {"model": "m"}


def test_explicit_token_counts_override_word_counts(openai_server: FakeOpenAIServer):
    openai_server.push(Reply(text="x", prompt_tokens=100, completion_tokens=7))
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

    usage = _post(openai_server, body)[1]["usage"]
    assert usage == {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107}  # words: 1 and 1


def test_models_endpoint_lists_the_model(openai_server: FakeOpenAIServer):
    with urllib.request.urlopen(f"{openai_server.base_url}/models", timeout=5) as response:
        listing = json.loads(response.read())

    assert [m["id"] for m in listing["data"]] == ["fake-model"]


def test_streaming_through_litellm_reassembles_text_and_usage(openai_server: FakeOpenAIServer):
    import litellm

    openai_server.push("streamed  reply with words")
    stream = litellm.completion(
        model="openai/fake-model",
        messages=[{"role": "user", "content": "stream please"}],
        api_base=openai_server.base_url,
        api_key="k",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    built = litellm.stream_chunk_builder(chunks)

    assert len(chunks) > 2
    assert built.choices[0].message.content == "streamed  reply with words"
    assert built.usage.completion_tokens == 4 and built.usage.prompt_tokens == 2
    assert openai_server.chat_requests[0].params["stream"] is True


@pytest.mark.parametrize("n_calls", [64])
def test_calls_with_fixed_latency_are_served_concurrently(openai_server: FakeOpenAIServer, n_calls: int):
    import litellm

    openai_server.latency_s = 0.5

    async def burst() -> list[str]:
        calls = [
            litellm.acompletion(
                model="openai/fake-model",
                messages=[{"role": "user", "content": f"n{i}"}],
                api_base=openai_server.base_url,
                api_key="k",
                max_retries=0,
            )
            for i in range(n_calls)
        ]
        return [r.choices[0].message.content for r in await asyncio.gather(*calls)]

    start = time.monotonic()
    texts = asyncio.run(burst())
    elapsed = time.monotonic() - start

    assert texts == [f"echo: n{i}" for i in range(n_calls)]
    assert openai_server.max_in_flight >= n_calls // 2
    assert elapsed < 0.5 * n_calls / 8  # serial service would take 32 s


def test_reset_forgets_script_and_records(openai_server: FakeOpenAIServer):
    openai_server.push("a", "b")
    _post(openai_server, {"model": "m", "messages": []})
    openai_server.reset()

    assert openai_server.pending == 0 and openai_server.requests == [] and openai_server.max_in_flight == 0
