"""``LLMClient``: one chat completion at a time, with retries, limits, accounting, budget and cache."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import random
import re
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stsc.config import LLMConfig
from stsc.errors import (
    BudgetExceededError,
    ContentRefusedError,
    ContextLimitError,
    LLMError,
    RequestRejectedError,
)
from stsc.llm.cache import ResponseCache
from stsc.llm.providers import (
    EmptyReplyError,
    Failure,
    classify_failure,
    load_litellm,
    redact,
    register_prices,
    resolve_api_key,
    retry_after_s,
    secret_values,
)
from stsc.llm.records import CallEvent, Completion, OnCall, Usage, public_params

logger = logging.getLogger(__name__)

# Call options owned by the client; per-call overrides may not set them.
RESERVED_OPTIONS = frozenset(
    {"model", "messages", "api_key", "api_base", "base_url", "stream", "num_retries"}
)
MAX_RETRY_AFTER_S = 120.0  # longest server-requested wait honoured


class LLMClient:
    """Chat completions for one ``LLMConfig`` (see the ``stsc.llm`` docstring for the contract).

    ``cache_dir``: where answers are cached (used when ``cfg.cache``; None disables caching).
    ``budget_usd``: hard cap on ``usage.cost_usd`` (a stage's remaining budget); ``cfg.budget_usd``
    caps it too, whichever is lower (None = no cap).
    ``usage``: accumulator to update; pass one ``Usage`` to several clients to give them one budget.
    ``on_call``: observer called with a ``CallEvent`` after every finished call (tracing); its
    exceptions are logged, never raised.
    """

    def __init__(
        self,
        cfg: LLMConfig,
        *,
        cache_dir: Path | None = None,
        budget_usd: float | None = None,
        usage: Usage | None = None,
        on_call: OnCall | None = None,
    ) -> None:
        self.cfg = cfg
        self.cache = (
            ResponseCache(Path(cache_dir), cfg.model, cfg.api_base)
            if cache_dir is not None and cfg.cache
            else None
        )
        caps = [b for b in (budget_usd, cfg.budget_usd) if b is not None]
        self.budget_usd = min(caps) if caps else None
        self.on_call = on_call
        self._usage = usage if usage is not None else Usage()
        self._lock = threading.Lock()
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._finalizer: weakref.finalize | None = None
        self._price_warned = False

    @property
    def usage(self) -> Usage:
        return self._usage

    def check_credentials(self) -> None:
        """Fail fast, before any work, when the key the model needs is missing.

        Raises MissingAPIKeyError naming the environment variable to set; ConfigError when the
        model string names no provider.
        """
        resolve_api_key(self.cfg)

    # -- calls -------------------------------------------------------------------------------------

    def complete(self, messages: list[dict[str, Any]], **kwargs: Any) -> Completion:
        """Blocking ``acomplete``, callable from any thread.

        Every synchronous call runs on the client's own background loop, so all threads share one
        concurrency limit. Inside async code, prefer ``await acomplete(...)``.
        """
        loop = self._background_loop()
        if threading.current_thread() is self._thread:
            raise RuntimeError("complete() called on the client's own loop; await acomplete() there")
        return asyncio.run_coroutine_threadsafe(self.acomplete(messages, **kwargs), loop).result()

    async def acomplete(
        self,
        messages: list[dict[str, Any]],
        *,
        cache_salt: str | None = None,
        meta: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> Completion:
        """Return the model's answer to ``messages``.

        ``overrides`` replace sampling parameters of the config for this call (``temperature``,
        ``max_tokens``, ``stop``, ...; ``None`` drops a parameter). ``cache_salt`` separates cache
        entries of identical prompts that must be sampled independently (e.g. the index of
        repeated episodes). ``meta`` labels the call for the ``on_call`` hook and the debug log.

        The answer's ``cost_usd`` includes what its failed attempts were billed (replies without
        a choice), as does ``LLMError.cost_usd`` when no attempt answered.

        Raises MissingAPIKeyError, BudgetExceededError (nothing sent), ContextLimitError, LLMError
        (after the retries, or at once for a non-retryable error); TypeError for a reserved option.
        """
        params = self._params(overrides)
        meta = dict(meta or {})
        key = self.cache.key(messages, params, cache_salt) if self.cache else None
        hit = self.cache.get(key) if self.cache and key else None
        if hit is not None:
            self._usage.bump(calls=1, cached_calls=1)
            self._emit(CallEvent(self.cfg.model, messages, public_params(params), meta, hit, None, 0))
            return hit
        api_key = resolve_api_key(self.cfg)
        attempts = [0]
        try:
            completion = await self._call_with_retries(messages, params, api_key, attempts)
        except LLMError as exc:
            budget = isinstance(exc, BudgetExceededError)
            self._usage.bump(failures=int(not budget), cost_usd=exc.cost_usd)
            if not budget:
                self._emit(
                    CallEvent(
                        self.cfg.model, messages, public_params(params), meta, None, str(exc), attempts[0]
                    )
                )
            raise
        self._usage.bump(
            calls=1,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            cost_usd=completion.cost_usd,
        )
        if self.cache and key:
            self.cache.put(key, completion, params)
        logger.debug(
            "%s: %d+%d tokens, $%.6f, %.2fs %s",
            self.cfg.model,
            completion.prompt_tokens,
            completion.completion_tokens,
            completion.cost_usd,
            completion.latency_s,
            meta,
        )
        self._emit(
            CallEvent(self.cfg.model, messages, public_params(params), meta, completion, None, attempts[0])
        )
        return completion

    def _params(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        reserved = sorted(RESERVED_OPTIONS & overrides.keys())
        if reserved:
            raise TypeError(f"LLMClient call options {reserved} are set by the client, not per call")
        cfg = self.cfg
        merged = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}
        merged.update(cfg.extra)
        merged.update(overrides)
        return {k: v for k, v in merged.items() if v is not None}

    async def _call_with_retries(
        self, messages: list[dict[str, Any]], params: dict[str, Any], api_key: str | None, attempts: list[int]
    ) -> Completion:
        billed = 0.0  # by attempts that did not answer
        try:
            while True:
                async with self._semaphore():
                    self._check_budget(billed)
                    attempts[0] += 1
                    try:
                        completion = await self._send(messages, params, api_key)
                        return dataclasses.replace(completion, cost_usd=completion.cost_usd + billed)
                    except EmptyReplyError as exc:
                        billed += exc.cost_usd
                        failure, error = Failure.RETRY, exc
                    except Exception as exc:
                        failure = classify_failure(exc)
                        if failure is None:
                            raise
                        error = exc
                await asyncio.sleep(self._fail_or_wait(failure, error, api_key, attempts[0]))
        except LLMError as exc:
            exc.cost_usd = billed
            raise
        except BaseException:  # cancelled, or an error that is not the provider's
            if billed:  # no LLMError carries it to acomplete: count it here
                self._usage.bump(cost_usd=billed)
            raise

    def _fail_or_wait(self, failure: Failure, error: Exception, api_key: str | None, attempt: int) -> float:
        """Raise the error ``failure`` calls for, or log the retry that follows and return its delay."""
        message = f"{self.cfg.model}: {type(error).__name__}: {error}"
        secrets = secret_values(self.cfg, api_key)
        for secret in secrets:
            message = redact(message, secret)
        cause = None if any(s and s in str(error) for s in secrets) else error
        if failure is Failure.CONTEXT:
            raise ContextLimitError(message) from cause
        if failure is Failure.REFUSED:
            raise ContentRefusedError(message) from cause
        if failure is Failure.REJECTED:
            raise RequestRejectedError(
                f"{message}. The provider rejects the request itself, so no retry is made: check "
                "llm.model, llm.api_base, the API key and llm.extra"
            ) from cause
        if failure is Failure.FATAL or attempt > self.cfg.max_retries:
            tried = f" (after {attempt} attempts)" if attempt > 1 else ""
            raise LLMError(message + tried) from cause
        delay = self._backoff(attempt, error)
        logger.warning("%s; retry %d/%d in %.2fs", message, attempt, self.cfg.max_retries, delay)
        self._usage.bump(retries=1)
        return delay

    async def _send(
        self, messages: list[dict[str, Any]], params: dict[str, Any], api_key: str | None
    ) -> Completion:
        cfg = self.cfg
        kwargs: dict[str, Any] = {"timeout": cfg.timeout_s, "max_retries": 0, **params}
        if cfg.api_base:
            kwargs["api_base"] = cfg.api_base
        if api_key:
            kwargs["api_key"] = api_key
        if cfg.input_cost_per_token is not None or cfg.output_cost_per_token is not None:
            # litellm prices every response itself: give it the prices, and the model a map entry
            kwargs["input_cost_per_token"] = cfg.input_cost_per_token or 0.0
            kwargs["output_cost_per_token"] = cfg.output_cost_per_token or 0.0
            register_prices(cfg.model, kwargs["input_cost_per_token"], kwargs["output_cost_per_token"])
        start = time.monotonic()
        async with asyncio.timeout(cfg.timeout_s):  # no extra task per call, unlike wait_for
            response = await load_litellm().acompletion(
                model=cfg.model, messages=messages, num_retries=0, **kwargs
            )
        latency = time.monotonic() - start
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = self._cost(response, prompt_tokens, completion_tokens)
        if not getattr(response, "choices", None):  # billed all the same; asking again may answer
            self._usage.bump(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
            raise EmptyReplyError(
                f"{cfg.model} answered without a choice ({prompt_tokens}+{completion_tokens} tokens)", cost
            )
        choice = response.choices[0]
        return Completion(
            text=_valid_text(choice.message.content or ""),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost,
            cached=False,
            model=cfg.model,
            latency_s=latency,
            finish_reason=getattr(choice, "finish_reason", None),
            reasoning=_valid_text(getattr(choice.message, "reasoning_content", None) or "") or None,
        )

    def _cost(self, response: Any, prompt_tokens: int, completion_tokens: int) -> float:
        cfg = self.cfg
        if cfg.input_cost_per_token is not None or cfg.output_cost_per_token is not None:
            input_cost = prompt_tokens * (cfg.input_cost_per_token or 0.0)
            return input_cost + completion_tokens * (cfg.output_cost_per_token or 0.0)
        try:
            return float(load_litellm().completion_cost(completion_response=response, model=cfg.model))
        except Exception:  # litellm raises assorted errors for models missing from its price map
            if not self._price_warned:
                self._price_warned = True
                logger.warning(
                    "%s: no price known; counting $0. Set llm.input_cost_per_token and "
                    "llm.output_cost_per_token to account for it",
                    cfg.model,
                )
            return 0.0

    def _check_budget(self, pending_usd: float = 0.0) -> None:
        spent = self._usage.cost_usd + pending_usd
        if self.budget_usd is not None and spent >= self.budget_usd:
            raise BudgetExceededError(
                f"{self.cfg.model}: budget ${self.budget_usd:.4f} spent (${spent:.4f}); no new calls "
                "are sent. Raise llm.budget_usd (or the stage's budget) to continue"
            )

    def _backoff(self, attempt: int, error: BaseException) -> float:
        delay = self.cfg.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
        return max(delay, min(retry_after_s(error), MAX_RETRY_AFTER_S))

    def _emit(self, event: CallEvent) -> None:
        if self.on_call is None:
            return
        try:
            self.on_call(event)
        except Exception:  # an observer must not fail the call it observes
            logger.warning("on_call hook %r failed", self.on_call, exc_info=True)

    # -- event loops -------------------------------------------------------------------------------

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._lock:
            semaphore = self._semaphores.get(loop)
            if semaphore is None:
                semaphore = self._semaphores[loop] = asyncio.Semaphore(max(1, self.cfg.concurrency))
            return semaphore

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="stsc-llm", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
                self._finalizer = weakref.finalize(self, _stop_loop, loop, thread)
            return self._loop

    def close(self) -> None:
        """Stop the background loop used by ``complete`` (call it with no call in flight).

        The client stays usable: a later ``complete`` starts a new loop. Garbage collection of the
        client does the same.
        """
        with self._lock:
            finalizer, self._finalizer = self._finalizer, None
            self._loop = self._thread = None
        if finalizer is not None:
            finalizer()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    if threading.current_thread() is thread:  # collected on its own loop: it cannot wait for itself
        loop.call_soon(loop.stop)
        return
    try:
        asyncio.run_coroutine_threadsafe(_drain(), loop).result(timeout=10)
    except concurrent.futures.TimeoutError:
        logger.warning("background model-call loop did not drain within 10 s; stopping it anyway")
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


async def _drain() -> None:
    """Cancel the loop's other tasks (litellm's logging workers), as ``asyncio.run`` does on exit."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_text(text: str) -> str:
    """``text`` with lone surrogates (a model's broken UTF-16 escapes) replaced by U+FFFD: a
    conversation holding one could be neither stored as UTF-8 nor sent back to any provider."""
    return _LONE_SURROGATE.sub("\ufffd", text)
