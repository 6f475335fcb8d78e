"""`OpenAICompatible`: any server that speaks OpenAI's ``POST /chat/completions``.

vLLM, llama.cpp server, Ollama, OpenAI itself and cotune's own server (`cotune.serve.server`) all answer
the same request shape, so one backend covers them. Requests of a batch go out concurrently (at most
``max_concurrency`` in flight per LM, shared with its adapter copies) and come back in order. Connection
errors, 429 and 5xx are retried with exponential backoff and jitter; other 4xx fail at once. A read
timeout (the server took the request but is slow to answer) is retried once with twice the time, then
raises `LMTimeoutError`: re-sending a long generation would only pile up copies on the server.

Cached answers are keyed by what the server says it runs under the name (``GET /models``, asked once per
client; see `cotune.lm.remote.served_model`), so a server that swaps models under one name is asked again.

LoRA adapters are served by name (vLLM ``--lora-modules sql=/path/to/adapter``): ``adapter="sql"`` sends
``"model": "sql"`` in the request, which is how those servers pick the adapter.

Example:
    >>> lm = OpenAICompatible("smollm2-135m", base_url="http://127.0.0.1:8000/v1", cache=False)
    >>> lm.with_adapter("sql").spec()
    {'backend': 'openai', 'model': 'smollm2-135m', 'base_url': 'http://127.0.0.1:8000/v1', 'adapter': 'sql'}
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

import httpx

from cotune.errors import ConfigError, LMConnectionError, LMError, LMTimeoutError
from cotune.lm.base import LM, AdapterAddress, GenerationConfig
from cotune.lm.cache import RequestCache, request_key
from cotune.lm.completion import Completion, Messages, truncate_at_stop
from cotune.lm.remote.credentials import ENV_KEY, may_send_env_key, redact_url
from cotune.lm.remote.http_pool import HTTPPool, error_message, parse_retry_after
from cotune.lm.remote.served_model import UNASKED, ServedModel

if TYPE_CHECKING:
    from cotune.lm.remote.runtime_lora import RuntimeLoRA

# A server's Retry-After is honoured, but never more than this: a misconfigured proxy asking for an
# hour would otherwise hang an evaluation silently.
MAX_RETRY_AFTER_S = 120.0


class OpenAICompatible(LM):
    """A model behind an OpenAI-compatible chat-completions endpoint.

    Args:
        model: the model name the server knows (``--served-model-name`` in vLLM, the tag in Ollama).
        base_url: the API root, ending in ``/v1`` for most servers.
        api_key: sent as a bearer token. None: ``$OPENAI_API_KEY`` when set, but only over https or to
            this machine (see `cotune.lm.remote.credentials`); "" sends none.
        timeout: seconds per attempt (connect, read, write and pool).
        max_retries: retries after the first attempt, for connection errors, timeouts, 429 and 5xx.
        backoff: first retry delay in seconds; doubles each retry, with +-50% jitter.
        max_concurrency: most requests in flight at once (for this LM and its adapter copies).
        adapter: a LoRA adapter *name* registered on the server; requests then use it as ``model``.
        cache: a `RequestCache`, True for the default on-disk cache, or False/None for none.
        config: default generation parameters.
        constrained: whether predictors constrain completions on this LM (see `LM`).
        transport: what sends the requests, passed to `httpx.Client` (shared with adapter copies and
            `runtime_lora`); None for the network. ``httpx.MockTransport(handler)`` answers in-process:

            >>> def handler(request):
            ...     reply = {"role": "assistant", "content": "hi"}
            ...     return httpx.Response(200, json={"choices": [{"message": reply}]})
            >>> lm = OpenAICompatible("m", cache=False, transport=httpx.MockTransport(handler))
            >>> lm([{"role": "user", "content": "hello"}]).text
            'hi'

    Raises:
        ConfigError: for a bad argument (empty model, negative timeout, ...).
    """

    backend = "openai"
    structured_output = "json_schema"  # sent as response_format; dropped (once, with a warning) if refused
    runtime_adapters = True  # vLLM's runtime LoRA API, where the server has it on (see `runtime_lora`)
    adapter_address = AdapterAddress.SERVED_NAME  # an adapter is the name the server loaded it under

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
        constrained: bool = True,
        transport: httpx.BaseTransport | None = None,
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
        super().__init__(cache=cache, config=config, constrained=constrained)
        self._model, self._adapter = model, adapter
        # Whether the server takes response_format: None until a request tells (shared by adapter copies).
        self._structured = _Flag()
        # Requests go to the URL as given (credentials in it included); everything written or shown
        # (spec, cache key, errors, repr) sees it redacted.
        self._request_base = base_url.rstrip("/")
        self.base_url = redact_url(self._request_base)
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.max_concurrency = max_concurrency
        key, self._key_withheld = _api_key(api_key, self._request_base)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._pool = HTTPPool(timeout, max_concurrency, headers, transport)
        # What the server runs under this name, for cache keys: asked once (shared by adapter copies).
        self._served = ServedModel(self._pool, self._request_base, self.base_url, model)
        self._rng = random.Random()  # jitter only; never affects results

    @property
    def model(self) -> str:
        return self._model

    @property
    def adapter(self) -> str | None:
        return self._adapter

    @property
    def url(self) -> str:
        return f"{self._request_base}/chat/completions"

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

    def runtime_lora(self) -> RuntimeLoRA:
        """The server's runtime-LoRA endpoints (load an adapter folder under a name), on this LM's connections."""
        from cotune.lm.remote.runtime_lora import RuntimeLoRA

        return RuntimeLoRA(self._pool, self._request_base, self.base_url, timeout=max(self.timeout, 120.0))

    def close(self) -> None:
        """Close the pooled connections (shared with adapter copies); a later call reopens them."""
        self._pool.close()

    def __enter__(self) -> OpenAICompatible:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def served_identity(self) -> dict[str, Any] | None:
        """What the server reports running under this model name (``GET /models``: id, root, ...), asked
        once per client; None when it does not say. See `cotune.lm.remote.served_model`."""
        identity = self._served.identity()
        return None if identity is UNASKED else identity

    def cache_key(self, messages: Messages, config: GenerationConfig) -> str | None:
        # base_url and the served model are part of the identity: two servers may serve different weights
        # under one name, and one server may swap the weights behind a name. A server that does not say
        # what it runs keeps the name-only key; one that cannot be asked now gets no key (not cached).
        served = self._served.identity()
        if served is UNASKED:
            return None
        return request_key(
            backend=self.backend,
            model=self.model,
            adapter=self.adapter_id,
            base_url=self.base_url,
            messages=messages,
            config=config.to_dict(),
            **({} if served is None else {"served": served}),
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
        if config.min_p > 0 and config.temperature > 0:
            body["min_p"] = config.min_p  # vLLM, llama.cpp and SGLang read it; others ignore it
        if config.temperature > 0:
            # Distinct rollouts must sample differently, and the same rollout the same way where the
            # server supports seeds.
            body["seed"] = config.rollout_id
        if config.constraint is not None and self._structured.value is not False:
            schema = json.loads(config.constraint.json_schema)
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "outputs", "schema": schema}}
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

        pool = ThreadPoolExecutor(min(self.max_concurrency, len(batch)), thread_name_prefix="cotune-openai")
        interrupted = False
        try:
            futures = [pool.submit(complete, m) for m in batch]
            pending = set(futures)
            while pending:  # in short waits: a Ctrl-C is seen within one, whatever the lock wait does with it
                _, pending = wait(pending, timeout=0.25)
            return [f.result() for f in futures]  # type: ignore[misc]
        except KeyboardInterrupt:
            # Ctrl-C: do not wait out the requests in flight (up to their read timeouts); they are abandoned
            interrupted = True
            failed.set()
            raise
        finally:
            pool.shutdown(wait=not interrupted, cancel_futures=interrupted)

    def _complete(self, messages: Messages, config: GenerationConfig) -> Completion:
        body = self.payload(messages, config)
        attempts = self.max_retries + 1
        last, retry_after, answered, reached = "", None, False, False
        timeout, read_timeouts = self.timeout, 0
        attempt = -1
        while (attempt := attempt + 1) < attempts:
            if attempt:
                time.sleep(self._delay(attempt, retry_after))
            retry_after = None
            try:
                with self._pool.slots:
                    t0 = time.perf_counter()
                    response = self._pool.client().post(self.url, json=body, timeout=timeout)
                    seconds = time.perf_counter() - t0
            except httpx.ReadTimeout:
                # The server took the request and is still computing it: sending it again would pile up
                # copies there. One more try, with twice the time, then say what happened.
                read_timeouts += 1
                if read_timeouts > 1:
                    raise self._read_timeout_error(body, timeout) from None
                timeout = 2 * self.timeout
                continue
            except httpx.TransportError as e:  # could not connect, connection dropped, write/pool timeouts
                reached = reached or not isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout))
                answered, last = False, self._scrub(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                answered, last = True, f"HTTP {response.status_code}: {self._scrub(error_message(response))}"
                continue
            if response.status_code >= 400:
                # `is not True`, not `is None`: requests refused at the same time all retry without it.
                refused = response.status_code in (400, 422) and self._structured.value is not True
                if "response_format" in body and refused:
                    body = self._without_structured_outputs(body, response)
                    attempt -= 1  # not a failed attempt: the same request again, without response_format
                    continue
                raise LMError(self._rejected_message(body, response))
            if "response_format" in body:
                self._structured.value = True
            completion = self._parse(response, config, seconds)
            completion.unconstrained = config.constraint is not None and "response_format" not in body
            return completion
        tries = f"{attempts} attempt{'s' * (attempts > 1)}"
        if answered:
            raise LMConnectionError(f"server at {self.base_url} kept failing after {tries}; last answer {last}")
        if read_timeouts and not last:
            raise self._read_timeout_error(body, timeout)
        what = "dropped the connection" if reached else "is not reachable"
        raise LMConnectionError(f"server at {self.base_url} {what} after {tries}: {last}")

    def _without_structured_outputs(self, body: dict[str, Any], response: httpx.Response) -> dict[str, Any]:
        """The server refused ``response_format``: warn once, and from now on generate freely (the lenient
        parser reads the text; each such call counts in ``usage.unconstrained``)."""
        with self._structured.lock:
            if self._structured.value is None:
                self._structured.value = False
                warnings.warn(
                    f"server at {self.base_url} rejected structured outputs (response_format json_schema): "
                    f"{self._scrub(error_message(response))}; generating without them",
                    stacklevel=2,
                )
        return {k: v for k, v in body.items() if k != "response_format"}

    # -- errors: what they say, with credentials taken out ---------------------------------------------
    def _scrub(self, text: str) -> str:
        """``text`` with the request URL's credentials replaced by the redacted URL."""
        return text.replace(self._request_base, self.base_url) if self._request_base != self.base_url else text

    def _read_timeout_error(self, body: dict[str, Any], timeout: float) -> LMTimeoutError:
        return LMTimeoutError(
            f"server at {self.base_url} took the request for model {body['model']!r} but sent no answer within "
            f"{timeout:g} s (read timeout; tried twice, the second time with twice the time). The server may "
            f"still be generating: raise timeout= (now {self.timeout:g} s) or lower max_tokens "
            f"(now {body.get('max_tokens')})"
        )

    def _rejected_message(self, body: dict[str, Any], response: httpx.Response) -> str:
        message = (
            f"server at {self.base_url} rejected the request for model {body['model']!r} "
            f"(HTTP {response.status_code}): {self._scrub(error_message(response))}"
        )
        if response.status_code == 401 and self._key_withheld:
            message += (
                f"; no API key was sent: ${ENV_KEY} goes only over https or to this machine, "
                "pass api_key= explicitly to send it over plain http"
            )
        return message

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


class _Flag:
    """A tri-state shared by an LM and its adapter copies: None (unknown), True, False."""

    def __init__(self) -> None:
        self.value: bool | None = None
        self.lock = threading.Lock()


def _api_key(explicit: str | None, url: str) -> tuple[str | None, bool]:
    """(the key to send, whether ``$OPENAI_API_KEY`` was withheld because ``url`` is plain http elsewhere)."""
    if explicit is not None:
        return explicit or None, False
    key = os.environ.get(ENV_KEY)
    if key and not may_send_env_key(url):
        return None, True
    return key, False
