"""The HTTP plumbing shared by `cotune.lm.remote.openai_compat` and `cotune.lm.remote.runtime_lora`: a pooled client
with an in-flight limit, and reading a server's error replies and ``Retry-After`` headers."""

from __future__ import annotations

import email.utils
import threading
import time

import httpx


class HTTPPool:
    """The HTTP client and the in-flight limit, shared by an LM and its `with_adapter` copies.

    The client is (re)opened on first use, so `close()` followed by another call still works.

    Args:
        transport: what sends the requests (`httpx.Client`'s ``transport=``); None for httpx's own
            network transport. Tests pass ``httpx.MockTransport(handler)`` to answer without a server.
    """

    def __init__(
        self,
        timeout: float,
        max_concurrency: int,
        headers: dict[str, str],
        transport: httpx.BaseTransport | None = None,
    ):
        self.timeout, self.headers, self.transport = timeout, headers, transport
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
                self._client = httpx.Client(
                    timeout=self.timeout, limits=limits, headers=self.headers, transport=self.transport
                )
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


def error_message(response: httpx.Response) -> str:
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
