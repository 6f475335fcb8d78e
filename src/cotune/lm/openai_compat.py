"""`OpenAICompatible`: any server that speaks OpenAI's ``POST /chat/completions``.

vLLM, llama.cpp server, Ollama, OpenAI itself and cotune's own server (`cotune.lm.server`) all answer
the same request shape, so one backend covers them. Requests of a batch go out concurrently (at most
``max_concurrency`` in flight per LM, shared with its adapter copies) and come back in order. Connection
errors, timeouts, 429 and 5xx are retried with exponential backoff and jitter; other 4xx fail at once.

LoRA adapters are served by name (vLLM ``--lora-modules sql=/path/to/adapter``): ``adapter="sql"`` sends
``"model": "sql"`` in the request, which is how those servers pick the adapter.

Example:
    >>> lm = OpenAICompatible("smollm2-135m", base_url="http://127.0.0.1:8000/v1", cache=False)
    >>> lm.with_adapter("sql").spec()
    {'backend': 'openai', 'model': 'smollm2-135m', 'base_url': 'http://127.0.0.1:8000/v1', 'adapter': 'sql'}
"""

from __future__ import annotations

import email.utils
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from cotune.errors import ConfigError, LMConnectionError, LMError
from cotune.lm.base import LM, Completion, GenerationConfig, Messages, truncate_at_stop
from cotune.lm.cache import RequestCache, request_key

# A server's Retry-After is honoured, but never more than this: a misconfigured proxy asking for an
# hour would otherwise hang an evaluation silently.
MAX_RETRY_AFTER_S = 120.0


class _Pool:
    """The HTTP client and the in-flight limit, shared by an LM and its `with_adapter` copies.

    The client is (re)opened on first use, so `close()` followed by another call still works.
    """

    def __init__(self, timeout: float, max_concurrency: int, headers: dict[str, str]):
        self.timeout, self.headers = timeout, headers
        self.max_concurrency = max_concurrency
        # The semaphore keeps requests from queueing inside httpx's pool, where a wait would count
        # against the pool timeout and surface as a spurious PoolTimeout.
        self.slots = threading.BoundedSemaphore(max_concurrency)
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None or self._client.is_closed:
                limits = httpx.Limits(
                    max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
                )
                self._client = httpx.Client(timeout=self.timeout, limits=limits, headers=self.headers)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __del__(self) -> None:
        # An LM dropped without close() must not leak its sockets.
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()


class OpenAICompatible(LM):
    """A model behind an OpenAI-compatible chat-completions endpoint.

    Args:
        model: the model name the server knows (``--served-model-name`` in vLLM, the tag in Ollama).
        base_url: the API root, ending in ``/v1`` for most servers.
        api_key: sent as a bearer token; defaults to ``$OPENAI_API_KEY`` when set.
        timeout: seconds per attempt (connect, read, write and pool).
        max_retries: retries after the first attempt, for connection errors, timeouts, 429 and 5xx.
        backoff: first retry delay in seconds; doubles each retry, with +-50% jitter.
        max_concurrency: most requests in flight at once (for this LM and its adapter copies).
        adapter: a LoRA adapter *name* registered on the server; requests then use it as ``model``.
        cache: a `RequestCache`, True for the default on-disk cache, or False/None for none.
        config: default generation parameters.

    Raises:
        ConfigError: for a bad argument (empty model, negative timeout, ...).
    """

    backend = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_concurrency: int = 8,
        adapter: str | None = None,
        cache: RequestCache | bool | None = True,
        config: GenerationConfig | None = None,
    ):
        if not model or not isinstance(model, str):
            raise ConfigError(f"model must be a non-empty string, got {model!r}")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {base_url!r}")
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if backoff < 0:
            raise ConfigError(f"backoff must be >= 0 seconds, got {backoff}")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        super().__init__(cache=cache, config=config)
        self._model, self._adapter = model, adapter
        self.base_url = base_url.rstrip("/")
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.max_concurrency = max_concurrency
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._pool = _Pool(timeout, max_concurrency, headers)
        self._rng = random.Random()  # jitter only; never affects results

    @property
    def model(self) -> str:
        return self._model

    @property
    def adapter(self) -> str | None:
        return self._adapter

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def spec(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model, "base_url": self.base_url, "adapter": self.adapter}

    def with_adapter(self, adapter: str | None) -> OpenAICompatible:
        """The same server and settings, with requests sent to the adapter named ``adapter`` (None: the base)."""
        new = object.__new__(OpenAICompatible)
        new.__dict__.update(self.__dict__)
        new._adapter = adapter
        new._meter = type(self._meter)()
        new._rng = random.Random()
        return new

    def close(self) -> None:
        """Close the pooled connections (shared with adapter copies); a later call reopens them."""
        self._pool.close()

    def __enter__(self) -> OpenAICompatible:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cache_key(self, messages: Messages, config: GenerationConfig) -> str:
        # base_url is part of the identity: two servers may serve different weights under one name.
        return request_key(
            backend=self.backend,
            model=self.model,
            adapter=self.adapter_id,
            base_url=self.base_url,
            messages=messages,
            config=config.to_dict(),
        )

    def payload(self, messages: Messages, config: GenerationConfig) -> dict[str, Any]:
        """The JSON body sent for one request."""
        body: dict[str, Any] = {
            "model": self._adapter or self._model,
            "messages": messages,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "max_tokens": config.max_tokens,
        }
        if config.stop:
            body["stop"] = list(config.stop)
        if config.temperature > 0:
            # Distinct rollouts must sample differently, and the same rollout the same way where the
            # server supports seeds.
            body["seed"] = config.rollout_id
        return body

    def _generate(self, batch: Sequence[Messages], config: GenerationConfig) -> list[Completion]:
        if len(batch) == 1:
            return [self._complete(batch[0], config)]
        failed = threading.Event()

        def complete(messages: Messages) -> Completion | None:
            # After one request fails for good the batch fails, so requests not yet sent are skipped
            # instead of each waiting out its own retries. Workers start requests in batch order, so the
            # first exception in order is a real one, never a skip.
            if failed.is_set():
                return None
            try:
                return self._complete(messages, config)
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(min(self.max_concurrency, len(batch)), thread_name_prefix="cotune-openai") as pool:
            futures = [pool.submit(complete, m) for m in batch]
            return [f.result() for f in futures]  # type: ignore[misc]

    def _complete(self, messages: Messages, config: GenerationConfig) -> Completion:
        body = self.payload(messages, config)
        attempts = self.max_retries + 1
        last, retry_after, answered = "", None, False
        for attempt in range(attempts):
            if attempt:
                time.sleep(self._delay(attempt, retry_after))
            retry_after = None
            try:
                with self._pool.slots:
                    t0 = time.perf_counter()
                    response = self._pool.client().post(self.url, json=body)
                    seconds = time.perf_counter() - t0
            except httpx.TransportError as e:  # connect/read errors and every kind of timeout
                answered, last = False, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                continue
            if response.status_code == 429 or response.status_code >= 500:
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                answered, last = True, f"HTTP {response.status_code}: {_error_message(response)}"
                continue
            if response.status_code >= 400:
                raise LMError(
                    f"server at {self.base_url} rejected the request for model {body['model']!r} "
                    f"(HTTP {response.status_code}): {_error_message(response)}"
                )
            return self._parse(response, config, seconds)
        tries = f"{attempts} attempt{'s' * (attempts > 1)}"
        if answered:
            raise LMConnectionError(f"server at {self.base_url} kept failing after {tries}; last answer {last}")
        raise LMConnectionError(f"server at {self.base_url} is not reachable after {tries}: {last}")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        return self.backoff * 2 ** (attempt - 1) * self._rng.uniform(0.5, 1.5)

    def _parse(self, response: httpx.Response, config: GenerationConfig, seconds: float) -> Completion:
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise LMError(
                f"server at {self.base_url} sent a reply that is not a chat completion "
                f"({type(e).__name__}: {e}): {response.text[:200]!r}"
            ) from None
        finish = choice.get("finish_reason") or "stop"
        # Some servers ignore or only partly honour `stop`; cutting again is harmless where they did.
        text, cut = truncate_at_stop(text, config.stop)
        if cut:
            finish = "stop"
        usage = data.get("usage") or {}
        return Completion(
            text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            seconds=seconds,
            finish_reason=finish,
        )

    def __repr__(self) -> str:
        adapter = f", adapter={self.adapter!r}" if self.adapter else ""
        return f"OpenAICompatible({self.model!r}, base_url={self.base_url!r}{adapter})"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or bad.

    Example:
        >>> parse_retry_after("2"), parse_retry_after(None), parse_retry_after("soon")
        (2.0, None, None)
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(response: httpx.Response) -> str:
    """The server's own words: OpenAI's ``{"error": {"message": ...}}``, else a short body excerpt."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str) and error:
        return error  # llama.cpp and Ollama variants
    return response.text.strip()[:300] or response.reason_phrase
