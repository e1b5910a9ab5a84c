"""Fixtures of the model-call room: clients pointed at the loopback OpenAI-compatible server
(``openai_server``, registered in ``tests/conftest.py``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stsc.config import LLMConfig
from stsc.llm import LLMClient
from tests.fakes.openai_server import FakeOpenAIServer

MakeClient = Callable[..., LLMClient]


@pytest.fixture
def llm_config(openai_server: FakeOpenAIServer) -> LLMConfig:
    """A config for the fake server: fast retries, known prices, no real key needed."""
    return LLMConfig(
        model="openai/fake-model",
        api_base=openai_server.base_url,
        temperature=0.0,
        max_tokens=64,
        timeout_s=5.0,
        max_retries=3,
        backoff_s=0.01,
        concurrency=4,
        input_cost_per_token=1e-3,
        output_cost_per_token=2e-3,
        cache=True,
    )


@pytest.fixture
def make_client(llm_config: LLMConfig) -> Iterator[MakeClient]:
    """``make_client(cache_dir=..., client_kwargs={...}, **config_changes)`` -> LLMClient, closed after."""
    clients: list[LLMClient] = []

    def make(*, cache_dir: Path | None = None, client_kwargs: dict[str, Any] | None = None, **changes: Any):
        client = LLMClient(
            dataclasses.replace(llm_config, **changes), cache_dir=cache_dir, **(client_kwargs or {})
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
