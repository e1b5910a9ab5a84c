"""One client for every model call: litellm behind retries, limits, accounting, a budget and a cache.

``LLMClient(cfg).complete(messages)`` (or ``await client.acomplete(messages)``) sends one chat
completion to any litellm provider string (``openai/...``, ``anthropic/...``, ``hosted_vllm/...``
with ``api_base``, ...) and returns a ``Completion``. Around that call the client

- retries rate limits (429), timeouts, 5xx and connection errors with exponential backoff and
  jitter, waiting at least a server's ``Retry-After``; a bad request, authentication or not-found
  error fails at once with ``LLMError``, an exceeded context window with ``ContextLimitError``;
- keeps at most ``cfg.concurrency`` calls in flight (one semaphore per event loop; synchronous
  callers all share the client's background loop, hence one limit across threads);
- counts tokens and USD per call and in ``usage`` (prices: ``cfg.input/output_cost_per_token``
  when set, else litellm's price map, else 0.0 with a one-time warning);
- refuses to send once ``usage.cost_usd`` reaches the budget (``BudgetExceededError``); calls
  already in flight complete and are counted, so spend can pass the budget by at most those;
- answers repeated requests from a content-addressed disk cache, so a rerun costs nothing (cache
  hits are served even when the budget is spent);
- reads the API key from ``cfg.api_key_env`` or the provider's standard variable and passes it
  explicitly; the key is never logged, cached or put in an exception message.

litellm (seconds to import) is imported on the first call, never when this package is imported.
"""

from stsc.llm.client import LLMClient
from stsc.llm.providers import (
    LOOPBACK_PLACEHOLDER_KEY,
    PROVIDER_KEY_ENV,
    is_loopback_url,
    provider_of,
    resolve_api_key,
)
from stsc.llm.records import CallEvent, Completion, OnCall, Usage

__all__ = [
    "LOOPBACK_PLACEHOLDER_KEY",
    "PROVIDER_KEY_ENV",
    "CallEvent",
    "Completion",
    "LLMClient",
    "OnCall",
    "Usage",
    "is_loopback_url",
    "provider_of",
    "resolve_api_key",
]
