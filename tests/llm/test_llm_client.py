"""LLMClient against a real litellm client and the loopback OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from stsc.config import LLMConfig
from stsc.errors import (
    BudgetExceededError,
    ConfigError,
    ContentRefusedError,
    ContextLimitError,
    LLMError,
    MissingAPIKeyError,
    RequestRejectedError,
)
from stsc.llm import LOOPBACK_PLACEHOLDER_KEY, CallEvent, Completion, LLMClient, Usage
from stsc.llm.cache import DB_NAME, ResponseCache
from stsc.prompts import render
from tests.fakes.openai_server import FakeOpenAIServer, Reply, context_length_error

USER = [{"role": "user", "content": "say hello please"}]  # 3 words = 3 prompt tokens on the fake


def test_a_completion_returns_text_tokens_and_the_configured_price(make_client, openai_server):
    openai_server.push("hello there world")
    client = make_client()

    result = client.complete(USER)

    assert result.text == "hello there world"
    assert (result.prompt_tokens, result.completion_tokens) == (3, 3)
    assert result.cost_usd == pytest.approx(3 * 1e-3 + 3 * 2e-3)
    assert not result.cached and result.model == "openai/fake-model" and result.latency_s > 0
    assert result.finish_reason == "stop"
    usage = client.usage
    assert (usage.calls, usage.prompt_tokens, usage.completion_tokens) == (1, 3, 3)
    assert usage.cost_usd == pytest.approx(0.009)
    (request,) = openai_server.chat_requests
    assert request.messages == USER
    assert request.params["model"] == "fake-model"
    assert request.params["temperature"] == 0.0 and request.params["max_tokens"] == 64
    assert not {"input_cost_per_token", "output_cost_per_token"} & request.params.keys(), "prices stay local"


def test_usage_accumulates_over_calls_and_exports_metrics(make_client, openai_server):
    openai_server.push("a b", "c")
    client = make_client()
    client.complete(USER)
    client.complete([{"role": "user", "content": "other prompt"}])

    metrics = client.usage.as_metrics()

    assert metrics["llm_calls"] == 2.0
    assert metrics["llm_prompt_tokens"] == 5.0 and metrics["llm_completion_tokens"] == 3.0
    total = Usage().add(client.usage).add(client.usage)
    assert total.calls == 4 and total.cost_usd == pytest.approx(2 * client.usage.cost_usd)
    assert dataclasses.asdict(total) == total.as_dict()  # serialisable by the store's JSON writers


def test_rate_limit_is_retried_then_succeeds(make_client, openai_server):
    openai_server.push(Reply(status=429), "finally")
    client = make_client()

    assert client.complete(USER).text == "finally"
    assert len(openai_server.chat_requests) == 2
    assert client.usage.retries == 1 and client.usage.failures == 0


def test_server_errors_are_retried(make_client, openai_server):
    openai_server.push(Reply(status=500), Reply(status=503), "recovered")
    client = make_client()

    assert client.complete(USER).text == "recovered"
    assert len(openai_server.chat_requests) == 3
    assert client.usage.retries == 2


def test_retry_after_header_sets_the_minimum_wait(make_client, openai_server):
    openai_server.push(Reply(status=429, headers={"Retry-After": "0.4"}), "ok")
    client = make_client()

    start = time.monotonic()
    client.complete(USER)

    assert time.monotonic() - start >= 0.4


def _http_date_in(seconds: float) -> str:
    from email.utils import formatdate

    return formatdate(time.time() + seconds, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "wait_s"),
    [
        (lambda: {"retry-after-ms": "600"}, 0.6),  # OpenAI and Azure send milliseconds
        (lambda: {"Retry-After": _http_date_in(2.5)}, 1.5),  # RFC 9110 allows an HTTP date
    ],
    ids=["milliseconds", "http-date"],
)
def test_retry_after_in_milliseconds_or_as_a_date_sets_the_minimum_wait(
    make_client, openai_server, headers, wait_s
):
    openai_server.push(Reply(status=429, headers=headers()), "ok")
    client = make_client()

    start = time.monotonic()
    assert client.complete(USER).text == "ok"

    assert time.monotonic() - start >= wait_s


def test_bad_request_is_not_retried(make_client, openai_server):
    openai_server.push(Reply(status=400), "never sent")
    client = make_client()

    with pytest.raises(LLMError, match="BadRequestError") as error:  # maybe this call's own: not the stage's
        client.complete(USER)
    assert not isinstance(error.value, RequestRejectedError)
    assert len(openai_server.chat_requests) == 1
    assert client.usage.failures == 1 and client.usage.retries == 0


def test_authentication_error_is_not_retried(make_client, openai_server):
    openai_server.push(Reply(status=401), "never sent")
    client = make_client()

    with pytest.raises(RequestRejectedError, match="AuthenticationError"):
        client.complete(USER)
    assert len(openai_server.chat_requests) == 1


def test_an_exhausted_quota_is_not_waited_for(make_client, openai_server):
    quota = {"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                       "type": "insufficient_quota", "code": "insufficient_quota"}}  # fmt: skip
    openai_server.push(Reply(status=429, body=quota), "never sent")
    client = make_client(max_retries=3)

    with pytest.raises(RequestRejectedError, match="quota"):
        client.complete(USER)
    assert len(openai_server.chat_requests) == 1 and client.usage.retries == 0


def test_a_content_refusal_is_its_own_error_and_not_retried(make_client, openai_server):
    refusal = {"error": {"message": "Your request was rejected as a result of our safety system.",
                         "type": "invalid_request_error", "code": "content_policy_violation"}}  # fmt: skip
    openai_server.push(Reply(status=400, body=refusal), "never sent")
    client = make_client(max_retries=3)

    with pytest.raises(ContentRefusedError):
        client.complete(USER)
    assert len(openai_server.chat_requests) == 1


def test_a_moderation_403_ends_only_the_conversation(make_client, openai_server):
    flagged = {"error": {"message": "Your chosen model requires moderation and your input was flagged",
                         "code": 403}}  # fmt: skip
    openai_server.push(Reply(status=403, body=flagged), "never sent")
    with pytest.raises(ContentRefusedError):
        make_client().complete(USER)
    assert len(openai_server.chat_requests) == 1


def test_no_credit_left_stops_at_once(make_client, openai_server):
    openai_server.push(Reply(status=402, body={"error": {"message": "Insufficient credits"}}), "never sent")
    with pytest.raises(RequestRejectedError, match="Insufficient credits"):
        make_client(max_retries=3).complete(USER)
    assert len(openai_server.chat_requests) == 1


def test_parameters_the_model_refuses_stop_at_once_naming_them():
    client = LLMClient(
        LLMConfig(model="openai/gpt-5", top_p=0.95, extra={"mock_response": "ok"}, max_retries=3)
    )
    with pytest.raises(RequestRejectedError, match="top_p"):
        client.complete(USER)
    assert client.usage.retries == 0


def test_a_success_without_choices_is_billed_and_retried(make_client, openai_server):
    empty = {"id": "x", "object": "chat.completion", "created": 0, "model": "fake-model", "choices": [],
             "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}  # fmt: skip
    openai_server.push(Reply(body=empty), "second time lucky")
    client = make_client()
    answer = client.complete(USER)
    assert answer.text == "second time lucky"
    assert len(openai_server.chat_requests) == 2 and client.usage.retries == 1
    assert client.usage.prompt_tokens >= 5 and client.usage.cost_usd > 5e-3 + 7 * 2e-3 - 1e-12
    # the answer carries what its unanswered attempt cost, counted once in the usage
    answered = answer.prompt_tokens * 1e-3 + answer.completion_tokens * 2e-3
    assert answer.cost_usd == pytest.approx(answered + 5e-3 + 7 * 2e-3) == client.usage.cost_usd

    openai_server.push(*[Reply(body=empty)] * 2)
    with pytest.raises(LLMError) as failed:
        make_client(max_retries=1).complete([{"role": "user", "content": "again"}])
    assert failed.value.cost_usd == pytest.approx(2 * (5e-3 + 7 * 2e-3))


def test_a_billed_attempt_stays_in_the_usage_when_the_call_is_cancelled(make_client, openai_server):
    empty = {"id": "x", "object": "chat.completion", "created": 0, "model": "fake-model", "choices": [],
             "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}  # fmt: skip
    openai_server.push(Reply(body=empty), Reply(text="too late", delay_s=30))
    client = make_client(backoff_s=0.0)

    async def cancelled() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.acomplete(USER), 2.0)

    asyncio.run(cancelled())
    assert len(openai_server.chat_requests) == 2
    assert client.usage.cost_usd == pytest.approx(5e-3 + 7 * 2e-3)


def test_a_lone_surrogate_in_a_reply_is_replaced_so_the_conversation_goes_on(
    make_client, openai_server, tmp_path
):
    openai_server.push("bad \udc80 byte", "next")
    client = make_client(cache_dir=tmp_path / "cache")
    reply = client.complete(USER).text
    assert reply == "bad \ufffd byte"  # sendable back to the model, storable as UTF-8
    history = [*USER, {"role": "assistant", "content": reply}, {"role": "user", "content": "go on"}]
    assert client.complete(history).text == "next"
    again = make_client(cache_dir=tmp_path / "cache")
    assert again.complete(USER).text == reply and again.complete(history).cached
    assert len(openai_server.chat_requests) == 2


def test_two_servers_serving_one_model_name_never_share_cached_answers(make_client, openai_server, tmp_path):
    with FakeOpenAIServer(responder=lambda _: "from server B") as other:
        openai_server.push("from server A")
        a = make_client(cache_dir=tmp_path / "cache")
        b = make_client(cache_dir=tmp_path / "cache", api_base=other.base_url)
        assert a.complete(USER).text == "from server A"
        assert b.complete(USER).text == "from server B" and len(other.chat_requests) == 1
    assert a.complete(USER).cached  # each still hits its own entries


def test_a_secret_in_llm_extra_reaches_the_provider_only(make_client, openai_server, tmp_path):
    secret = "sk-live-SECRET-99999"
    events: list[CallEvent] = []
    client = make_client(cache_dir=tmp_path / "cache", extra={"api_key": secret, "extra_headers": {"Authorization": f"Bearer {secret}"}},
                         client_kwargs={"on_call": events.append})  # fmt: skip
    client.complete(USER)
    assert openai_server.chat_requests[0].api_key == secret
    assert events and secret not in json.dumps(events[0].params)
    assert all(secret.encode() not in f.read_bytes() for f in (tmp_path / "cache").iterdir())


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("hosted_vllm/fake-model", lambda k: {"api_key": k}),
        ("openai/fake-model", lambda k: {"extra_headers": {"Authorization": f"Bearer {k}"}}),
    ],
    ids=["api_key", "authorization-header"],
)
def test_a_secret_in_llm_extra_echoed_by_a_provider_error_is_redacted(
    make_client, openai_server, model, extra
):
    secret = "sk-live-SECRET-99999"
    echoed = {"error": {"message": f"Incorrect API key provided: {secret}", "type": "invalid_request_error"}}
    openai_server.push(Reply(status=401, body=echoed))
    events: list[CallEvent] = []
    client = make_client(model=model, extra=extra(secret), client_kwargs={"on_call": events.append})

    with pytest.raises(RequestRejectedError) as failure:
        client.complete(USER)

    assert openai_server.chat_requests[0].api_key == secret
    assert secret not in str(failure.value) and "***" in str(failure.value)
    assert failure.value.__cause__ is None
    assert events and secret not in (events[0].error or "")


def test_a_local_server_never_gets_the_real_provider_key(make_client, openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-REAL-KEY-12345")
    make_client().complete(USER)
    assert openai_server.chat_requests[0].api_key == LOOPBACK_PLACEHOLDER_KEY


def test_context_window_overflow_raises_context_limit_error_without_retry(make_client, openai_server):
    openai_server.push(context_length_error(4096), "never sent")
    client = make_client()

    with pytest.raises(ContextLimitError, match="maximum context length"):
        client.complete(USER)
    assert len(openai_server.chat_requests) == 1


def test_timeout_is_retried(make_client, openai_server):
    openai_server.push(Reply(text="too late", delay_s=2.0), "in time")
    client = make_client(timeout_s=0.3)

    start = time.monotonic()
    result = client.complete(USER)

    assert result.text == "in time"
    assert len(openai_server.chat_requests) == 2
    assert time.monotonic() - start < 1.5


def test_connection_errors_are_retried(make_client, openai_server):
    closed = FakeOpenAIServer().start()
    dead_url = closed.base_url
    closed.stop()
    client = make_client(api_base=dead_url, max_retries=2)

    with pytest.raises(LLMError, match="after 3 attempts"):
        client.complete(USER)
    assert client.usage.retries == 2 and client.usage.failures == 1


def test_retries_stop_after_max_retries(make_client, openai_server):
    openai_server.push(*[Reply(status=500)] * 5)
    client = make_client(max_retries=2)

    with pytest.raises(LLMError, match="after 3 attempts"):
        client.complete(USER)
    assert len(openai_server.chat_requests) == 3
    assert client.usage.failures == 1 and client.usage.calls == 0


def test_spent_budget_stops_new_calls_before_sending(make_client, openai_server):
    client = make_client(client_kwargs={"budget_usd": 0.005})
    client.complete(USER)  # costs $0.009 on the fake's word counts

    with pytest.raises(BudgetExceededError, match="budget"):
        client.complete([{"role": "user", "content": "one more"}])
    assert len(openai_server.chat_requests) == 1
    assert client.usage.failures == 0


def test_the_configured_cap_holds_under_a_larger_stage_budget(make_client, openai_server):
    client = make_client(budget_usd=0.005, client_kwargs={"budget_usd": 100.0})  # llm.budget_usd is lower
    client.complete(USER)

    with pytest.raises(BudgetExceededError, match=r"budget \$0\.0050"):
        client.complete([{"role": "user", "content": "one more"}])
    assert len(openai_server.chat_requests) == 1
    assert make_client(budget_usd=5.0, client_kwargs={"budget_usd": 0.5}).budget_usd == 0.5


def test_a_shared_usage_is_one_budget_for_several_clients(make_client, openai_server):
    shared = Usage()
    first = make_client(client_kwargs={"usage": shared, "budget_usd": 0.005})
    second = make_client(client_kwargs={"usage": shared, "budget_usd": 0.005})
    first.complete(USER)

    with pytest.raises(BudgetExceededError):
        second.complete([{"role": "user", "content": "different"}])
    assert shared.calls == 1 and len(openai_server.chat_requests) == 1


def test_identical_rerun_is_served_from_cache_at_no_cost(make_client, openai_server, tmp_path):
    openai_server.push("cached answer")
    make_client(cache_dir=tmp_path / "cache").complete(USER)
    rerun = make_client(cache_dir=tmp_path / "cache", client_kwargs={"budget_usd": 0.0})

    result = rerun.complete(USER)

    assert result.text == "cached answer" and result.cached and result.cost_usd == 0.0
    assert (result.prompt_tokens, result.completion_tokens) == (3, 2)
    assert len(openai_server.chat_requests) == 1
    assert (rerun.usage.calls, rerun.usage.cached_calls, rerun.usage.cost_usd) == (1, 1, 0.0)
    assert rerun.usage.prompt_tokens == 0


def test_cache_key_covers_sampling_parameters_and_salt(make_client, openai_server, tmp_path):
    client = make_client(cache_dir=tmp_path / "cache")
    client.complete(USER)
    client.complete(USER, temperature=0.7)
    client.complete(USER, cache_salt="run-1")
    client.complete(USER, cache_salt="run-1")

    assert len(openai_server.chat_requests) == 3
    assert openai_server.chat_requests[1].params["temperature"] == 0.7
    assert len(_rows(tmp_path / "cache")) == 3


def test_transport_options_do_not_change_the_cache_key(make_client, openai_server, tmp_path):
    make_client(cache_dir=tmp_path / "cache").complete(USER)
    rerun = make_client(cache_dir=tmp_path / "cache", timeout_s=9.0, max_retries=0)

    assert rerun.complete(USER).cached
    assert len(openai_server.chat_requests) == 1


def test_an_unreadable_cache_entry_is_a_miss_and_is_rewritten(make_client, openai_server, tmp_path):
    client = make_client(cache_dir=tmp_path / "cache")
    client.complete(USER)
    with sqlite3.connect(tmp_path / "cache" / DB_NAME) as db:
        db.execute("""UPDATE responses SET record = '{"text": "trunc'""")

    again = make_client(cache_dir=tmp_path / "cache").complete(USER)

    assert not again.cached and len(openai_server.chat_requests) == 2
    ((_, record),) = _rows(tmp_path / "cache").items()
    assert json.loads(record)["text"] == again.text


def test_a_corrupt_cache_database_costs_misses_not_calls(make_client, openai_server, tmp_path, caplog):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / DB_NAME).write_bytes(b"not a database" * 100)
    client = make_client(cache_dir=tmp_path / "cache")

    with caplog.at_level(logging.WARNING, logger="stsc.llm.cache"):
        first, second = client.complete(USER), client.complete(USER)

    assert not first.cached and not second.cached and len(openai_server.chat_requests) == 2
    assert sum("not cached" in r.getMessage() for r in caplog.records) == 1  # said once, not per call


def test_entries_of_the_one_file_per_answer_layout_are_still_served(make_client, openai_server, tmp_path):
    client = make_client(cache_dir=tmp_path / "cache")
    cache = client.cache
    assert cache is not None
    key = cache.key(USER, client._params({}))
    legacy = cache.legacy_path(key)
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"text": "old answer", "prompt_tokens": 3, "completion_tokens": 2}))

    result = client.complete(USER)

    assert result.cached and result.text == "old answer" and not openai_server.chat_requests


def test_threads_share_the_cache_without_losing_entries(tmp_path):
    cache = ResponseCache(tmp_path / "cache", "openai/fake-model")
    answer = Completion(
        text="a", prompt_tokens=1, completion_tokens=1, cost_usd=0.0, cached=False, model="m", latency_s=0.0
    )

    def write(worker: int) -> list[str]:
        misses = []
        for i in range(50):
            cache.put(f"{worker}-{i}", answer, {})
            if cache.get(f"{worker}-{i}") is None:
                misses.append(f"{worker}-{i}")
        return misses

    with ThreadPoolExecutor(max_workers=8) as pool:  # a worker's exception re-raises from map
        misses = [key for keys in pool.map(write, range(8)) for key in keys]

    assert misses == []
    assert ResponseCache(tmp_path / "cache", "openai/fake-model").count() == 8 * 50


def test_cache_disabled_in_config_always_sends(make_client, openai_server, tmp_path):
    client = make_client(cache=False, cache_dir=tmp_path / "cache")
    client.complete(USER)
    client.complete(USER)

    assert len(openai_server.chat_requests) == 2
    assert not (tmp_path / "cache").exists()


def test_missing_provider_key_fails_before_any_request(make_client, openai_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = make_client(api_base="https://api.example.invalid/v1")

    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        client.check_credentials()
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        client.complete(USER)
    assert openai_server.requests == []


def test_missing_named_key_env_fails_even_for_a_local_server(make_client, openai_server, monkeypatch):
    monkeypatch.delenv("STSC_TEST_ABSENT_KEY", raising=False)
    client = make_client(api_key_env="STSC_TEST_ABSENT_KEY")

    with pytest.raises(MissingAPIKeyError, match="STSC_TEST_ABSENT_KEY"):
        client.complete(USER)
    assert openai_server.requests == []


def test_model_without_provider_is_a_config_error(make_client):
    with pytest.raises(ConfigError, match="openai/no-such-model-anywhere"):
        make_client(model="no-such-model-anywhere").check_credentials()


def test_local_server_without_key_gets_a_placeholder(make_client, openai_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    make_client().complete(USER)

    assert openai_server.chat_requests[0].api_key == LOOPBACK_PLACEHOLDER_KEY


def test_hosted_vllm_provider_reaches_the_server(make_client, openai_server):
    openai_server.push("from vllm")

    assert make_client(model="hosted_vllm/fake-model").complete(USER).text == "from vllm"
    assert openai_server.chat_requests[0].params["model"] == "fake-model"


def test_api_key_reaches_the_server_but_no_log_cache_file_or_error(
    make_client, openai_server, monkeypatch, caplog, tmp_path
):
    secret = "sk-test-7f3a9c1e5b2d4f60"
    monkeypatch.setenv("STSC_TEST_KEY", secret)
    openai_server.push(
        Reply(status=500, body={"error": {"message": f"upstream failed for key {secret}"}}),
        "fine",
        Reply(status=401, body={"error": {"message": f"Incorrect API key provided: {secret}"}}),
    )
    client = make_client(api_key_env="STSC_TEST_KEY", cache_dir=tmp_path / "cache")
    # litellm's logger has its own level: open it too, so its debug records are checked as well
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="LiteLLM"):
        client.complete(USER)
        with pytest.raises(LLMError) as failure:
            client.complete([{"role": "user", "content": "again"}])

    assert {r.api_key for r in openai_server.chat_requests} == {secret}
    assert any("retry" in r.getMessage() for r in caplog.records)
    assert any(r.name.startswith("LiteLLM") for r in caplog.records)
    assert all(secret not in r.getMessage() for r in caplog.records)
    assert secret not in str(failure.value) and "***" in str(failure.value)
    assert failure.value.__cause__ is None
    files = list((tmp_path / "cache").iterdir())
    assert _rows(tmp_path / "cache") and all(secret.encode() not in f.read_bytes() for f in files)
    assert all(secret not in record for record in _rows(tmp_path / "cache").values())


def test_concurrency_limit_holds_for_async_callers(make_client, openai_server):
    openai_server.latency_s = 0.2
    client = make_client(concurrency=3)

    async def many() -> list[str]:
        calls = [client.acomplete([{"role": "user", "content": f"q{i}"}]) for i in range(9)]
        return [c.text for c in await asyncio.gather(*calls)]

    texts = asyncio.run(many())

    assert texts == [f"echo: q{i}" for i in range(9)]
    assert openai_server.max_in_flight == 3


def test_concurrency_limit_holds_across_threads(make_client, openai_server):
    openai_server.latency_s = 0.15
    client = make_client(concurrency=2)

    with ThreadPoolExecutor(max_workers=6) as pool:
        texts = list(
            pool.map(lambda i: client.complete([{"role": "user", "content": f"t{i}"}]).text, range(6))
        )

    assert texts == [f"echo: t{i}" for i in range(6)]
    assert openai_server.max_in_flight == 2


def test_unknown_price_counts_zero_and_warns_once(make_client, openai_server, caplog):
    # a name no other test prices: configured prices enter litellm's map for the whole process
    client = make_client(model="openai/unpriced-model", input_cost_per_token=None, output_cost_per_token=None)

    with caplog.at_level(logging.WARNING, logger="stsc.llm"):
        first = client.complete(USER)
        client.complete([{"role": "user", "content": "second"}])

    assert first.cost_usd == 0.0 and client.usage.calls == 2
    warnings = [r for r in caplog.records if "no price known" in r.getMessage()]
    assert len(warnings) == 1 and "input_cost_per_token" in warnings[0].getMessage()


def test_litellm_price_map_is_used_for_known_models(make_client, openai_server):
    client = make_client(model="openai/gpt-4o", input_cost_per_token=None, output_cost_per_token=None)

    result = client.complete(USER)

    assert result.cost_usd > 0.0 and client.usage.cost_usd == pytest.approx(result.cost_usd)


def test_mock_response_passthrough_needs_no_server_and_no_key(llm_config, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = dataclasses.replace(
        llm_config, model="openai/gpt-4o", api_base=None, extra={"mock_response": "mocked reply"}
    )
    with LLMClient(cfg) as client:
        client.check_credentials()
        result = client.complete(USER)

    assert result.text == "mocked reply" and result.completion_tokens > 0


def test_overrides_reach_the_server_and_client_options_are_reserved(make_client, openai_server):
    client = make_client(extra={"stop": ["END"]})
    client.complete(USER, max_tokens=7, top_p=None)

    params = openai_server.chat_requests[0].params
    assert params["max_tokens"] == 7 and params["stop"] == ["END"] and "top_p" not in params
    with pytest.raises(TypeError, match="api_key"):
        client.complete(USER, api_key="x")


def test_on_call_hook_sees_prompt_meta_cache_hits_and_failures(make_client, openai_server, tmp_path: Path):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "ask.j2").write_text("Question: {{ q }}")
    prompt = render("ask", tmp_path / "prompts", q="why?")
    events: list[CallEvent] = []
    openai_server.push("because", Reply(status=400))
    client = make_client(cache_dir=tmp_path / "cache", client_kwargs={"on_call": events.append})
    messages = [{"role": "user", "content": prompt.text}]

    client.complete(messages, meta=prompt.meta)
    client.complete(messages, meta=prompt.meta)
    with pytest.raises(LLMError):
        client.complete(USER)

    assert [e.meta.get("prompt") for e in events] == ["ask", "ask", None]
    assert events[0].meta["prompt_sha256"] == prompt.sha256
    assert [e.completion.cached if e.completion else None for e in events] == [False, True, None]
    assert events[2].error and events[2].attempts == 1


def test_a_failing_hook_does_not_fail_the_call(make_client, openai_server, caplog):
    def broken(event: CallEvent) -> None:
        raise RuntimeError("tracer down")

    client = make_client(client_kwargs={"on_call": broken})

    with caplog.at_level(logging.WARNING, logger="stsc.llm"):
        assert client.complete(USER).text.startswith("echo:")
    assert any("on_call hook" in r.getMessage() for r in caplog.records)


def test_complete_works_inside_a_running_event_loop(make_client, openai_server):
    client = make_client()

    async def inside() -> str:
        return client.complete(USER).text

    assert asyncio.run(inside()) == "echo: say hello please"


def test_importing_stsc_llm_does_not_import_litellm():
    import subprocess
    import sys

    code = "import sys, stsc.llm, stsc.prompts; print('litellm' in sys.modules, 'jinja2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def _rows(folder: Path) -> dict[str, str]:
    """key -> JSON record of every cached answer under ``folder``."""
    with closing(sqlite3.connect(folder / DB_NAME)) as db:
        return dict(db.execute("SELECT key, record FROM responses"))


def test_litellm_prices_come_from_its_shipped_map_without_a_download() -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    code = (
        "import os; from stsc.llm.providers import load_litellm; m = load_litellm(); "
        "print(os.environ['LITELLM_LOCAL_MODEL_COST_MAP'], 'openai/gpt-5' in m.model_cost or 'gpt-5' in m.model_cost)"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True"]
    assert "model cost map" not in done.stderr  # no fetch attempted (offline it warns and retries)
