"""What litellm's providers need and how their failures are judged: keys, loopback, error classes."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
from enum import Enum
from typing import Any
from urllib.parse import urlparse

from stsc.config import LLMConfig
from stsc.errors import ConfigError, MissingAPIKeyError

# Provider prefix -> the environment variable litellm reads its key from.
PROVIDER_KEY_ENV: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "text-completion-openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "groq": "GROQ_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "fireworks_ai": "FIREWORKS_AI_API_KEY",
    "xai": "XAI_API_KEY",
    "cohere": "COHERE_API_KEY",
    "perplexity": "PERPLEXITYAI_API_KEY",
    "deepinfra": "DEEPINFRA_API_KEY",
    "cerebras": "CEREBRAS_API_KEY",
    "azure": "AZURE_API_KEY",
}
# Sent to loopback servers that ignore authentication (the OpenAI SDK refuses an empty key).
LOOPBACK_PLACEHOLDER_KEY = "no-key"


class Failure(Enum):
    """How a provider error is handled."""

    RETRY = "retry"  # rate limit, timeout, 5xx, connection error
    CONTEXT = "context"  # the prompt exceeds the context window
    REFUSED = "refused"  # a content-policy refusal of this conversation
    REJECTED = "rejected"  # the provider refuses the caller: bad key, no permission, unknown model, no quota
    FATAL = "fatal"  # any other request error (a bad request, ...): not retried, may be this call's own


def load_litellm() -> Any:
    """Import litellm (seconds, so only when a call needs it) with its help banners off.

    Prices come from the map shipped in the pinned litellm release unless
    ``LITELLM_LOCAL_MODEL_COST_MAP`` is set otherwise: the same prices on every run and machine,
    and no download (retried for seconds offline) at import."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True  # otherwise litellm prints a banner on stdout for every error
    return litellm


_REGISTERED_PRICES: dict[str, tuple[float, float]] = {}


def register_prices(model: str, input_cost_per_token: float, output_cost_per_token: float) -> None:
    """Enter configured prices in litellm's model map (once per model and prices).

    litellm prices every response itself. A model missing from its map sends each call through a
    search of the map's generalisation rules (about 1 ms of CPU per call); registered, it is one
    lookup. For a model the map knows, only the prices change (to the configured ones, which stsc
    uses for its own accounting anyway). Cached prompt tokens are priced as input, as stsc counts.
    """
    prices = (input_cost_per_token, output_cost_per_token)
    if _REGISTERED_PRICES.get(model) == prices:
        return
    entry: dict[str, Any] = {
        "input_cost_per_token": input_cost_per_token,
        "output_cost_per_token": output_cost_per_token,
        "cache_creation_input_token_cost": input_cost_per_token,
        "cache_read_input_token_cost": input_cost_per_token,
        "mode": "chat",
    }
    if "/" in model:
        entry["litellm_provider"] = model.split("/", 1)[0]
    load_litellm().register_model({model: entry})
    _REGISTERED_PRICES[model] = prices


@functools.lru_cache(maxsize=64)
def is_loopback_url(url: str | None) -> bool:
    """True for ``http://localhost...``, ``127.x.x.x`` and ``[::1]`` URLs."""
    host = urlparse(url).hostname if url else None
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def provider_of(model: str) -> str:
    """The litellm provider of ``model``; raises ConfigError when litellm cannot tell."""
    if "/" in model:
        return model.split("/", 1)[0]
    try:
        return str(load_litellm().get_llm_provider(model)[1])
    except Exception as exc:  # litellm raises its BadRequestError for unknown names
        raise ConfigError(
            f"llm.model={model!r} names no provider; write it as '<provider>/<model>', "
            f"e.g. 'openai/{model}', 'anthropic/{model}' or 'hosted_vllm/{model}'"
        ) from exc


def resolve_api_key(cfg: LLMConfig) -> str | None:
    """The key to pass for ``cfg``; None lets litellm find credentials itself.

    ``cfg.api_key_env`` names a variable that must be set. Otherwise providers listed in
    ``PROVIDER_KEY_ENV`` need their standard variable, except behind a loopback ``api_base``: a
    local server gets ``LOOPBACK_PLACEHOLDER_KEY``, never the real key (set ``llm.api_key_env`` for
    a local proxy that needs one). Other providers (``hosted_vllm``,
    ``ollama``, cloud credential chains) and litellm's mock mode need nothing here.
    Raises MissingAPIKeyError naming the variable to export; ConfigError for a provider-less model.
    """
    if "mock_response" in cfg.extra:
        return None
    if cfg.api_key_env:
        value = os.environ.get(cfg.api_key_env)
        if not value:
            raise MissingAPIKeyError(
                f"model {cfg.model!r} reads its API key from env var {cfg.api_key_env} "
                f"(llm.api_key_env), which is not set; export {cfg.api_key_env}=<key>"
            )
        return value
    env = PROVIDER_KEY_ENV.get(provider_of(cfg.model))
    if env is None:
        return None
    if is_loopback_url(cfg.api_base):  # a local server never gets the provider's real key
        return LOOPBACK_PLACEHOLDER_KEY
    value = os.environ.get(env)
    if value:
        return value
    raise MissingAPIKeyError(
        f"model {cfg.model!r} needs an API key in env var {env}, which is not set; export "
        f"{env}=<key>, or set llm.api_key_env to the variable holding it"
    )


class EmptyReplyError(Exception):
    """A successful response without any choice (a provider glitch): retried like a 5xx. It was
    billed: ``cost_usd``."""

    def __init__(self, message: str, cost_usd: float):
        super().__init__(message)
        self.cost_usd = cost_usd


def classify_failure(exc: BaseException) -> Failure | None:
    """How to handle a provider error; None for anything that is not one (to be re-raised)."""
    if isinstance(exc, asyncio.TimeoutError | EmptyReplyError):
        return Failure.RETRY
    import openai

    if not isinstance(exc, openai.OpenAIError):
        return None
    litellm = load_litellm()
    if isinstance(exc, litellm.ContextWindowExceededError):
        return Failure.CONTEXT
    if isinstance(exc, litellm.ContentPolicyViolationError) or _content_refusal(exc):
        return Failure.REFUSED
    if "insufficient_quota" in _error_text(exc) or "exceeded your current quota" in str(exc):
        return Failure.REJECTED  # a 429 that waiting does not cure
    if isinstance(exc, litellm.UnsupportedParamsError):
        return Failure.REJECTED  # the config's parameters, refused for every call alike
    if isinstance(exc, openai.APIConnectionError | litellm.RateLimitError | litellm.InternalServerError):
        return Failure.RETRY  # openai.APIConnectionError covers timeouts
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and (status >= 500 or status in (408, 409, 429)):
        return Failure.RETRY
    if status in (401, 402, 403, 404):  # the same for every call of this config (402: no credit left)
        return Failure.REJECTED
    return Failure.FATAL


_REFUSAL_MARKERS = (
    "content_policy",
    "content policy",
    "safety system",
    "usage policy",
    "content management policy",
    "requires moderation",  # OpenRouter's 403 for a flagged input
    "input was flagged",
)


def _content_refusal(exc: BaseException) -> bool:
    """A 400 (or a moderation 403) that refuses the conversation's content (litellm maps only some
    providers' wording): that episode ends, the stage goes on."""
    if getattr(exc, "status_code", None) not in (400, 403):
        return False
    text = _error_text(exc).lower()
    return any(marker in text for marker in _REFUSAL_MARKERS)


def _error_text(exc: BaseException) -> str:
    """The error's message with the provider's error code and type (from the response body)."""
    body = getattr(exc, "body", None)
    body = body.get("error", body) if isinstance(body, dict) else None
    fields = [str(body.get(k) or "") for k in ("code", "type")] if isinstance(body, dict) else []
    return " ".join([*fields, str(exc)])


def retry_after_s(exc: BaseException) -> float:
    """The wait an HTTP error response asks for, or 0.0: ``retry-after-ms`` (OpenAI, Azure), else
    ``Retry-After`` in seconds or as an HTTP date."""
    import email.utils
    import time

    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        return max(0.0, float(headers.get("retry-after-ms")) / 1000)
    except (TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value or 0))
    except (TypeError, ValueError):
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(str(value)).timestamp() - time.time())
    except (TypeError, ValueError):  # neither seconds nor a date
        return 0.0


def secret_values(cfg: LLMConfig, api_key: str | None) -> list[str]:
    """The secrets a provider's error message may echo: ``api_key`` and the values of
    secret-named options in ``cfg.extra`` (``api_key``, an ``Authorization`` header and its token)."""
    from stsc.tracking import config_secret_values

    found = [api_key] if api_key else []
    for value in config_secret_values(cfg.extra):
        found.extend([value, *value.split()[-1:]])
    return found


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    return text.replace(secret, "***") if secret and len(secret) >= 4 else text
