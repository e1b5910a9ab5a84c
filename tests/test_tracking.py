"""Secret detection and redaction rules."""

from __future__ import annotations

import pytest

from stsc.tracking import REDACTED, flatten, looks_secret, redact_mapping


@pytest.mark.parametrize(
    "name",
    [
        "OPENAI_API_KEY",
        "HF_TOKEN",
        "db.password",
        "key",
        "aws_secret_access_key",
        "MY_PROVIDER_API_KEY",
        "credentials",
        "auth_key",
    ],
)
def test_secret_names_are_recognised(name: str) -> None:
    assert looks_secret(name)


@pytest.mark.parametrize(
    "name", ["content_key", "max_tokens", "api_key_env", "token_env", "prompt_tokens", "monkey"]
)
def test_ordinary_names_are_not_secrets(name: str) -> None:
    assert not looks_secret(name)


def test_redaction_covers_secret_keys_and_secret_values() -> None:
    cfg = {"llm": {"api_key": "abc", "api_key_env": "OPENAI_API_KEY", "note": "uses sk-live-123456"}}
    out = redact_mapping(cfg, secrets=["sk-live-123456"])
    assert out == {"llm": {"api_key": REDACTED, "api_key_env": "OPENAI_API_KEY", "note": f"uses {REDACTED}"}}


def test_flatten_caps_values_and_joins_keys() -> None:
    flat = flatten({"a": {"b": 1, "c": [1, 2]}, "long": "x" * 7000, "empty": {}})
    assert (
        flat["a.b"] == "1" and flat["a.c"] == "[1, 2]" and len(flat["long"]) == 6000 and flat["empty"] == "{}"
    )
