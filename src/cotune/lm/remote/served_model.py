"""What a server actually runs under a model name, so cached answers follow the weights, not the name.

vLLM, llama.cpp (which answers any name with its one model) and Ollama swap the model behind one URL
and one name routinely; a cache keyed by (URL, name) would then answer model B with model A's replies.
`OpenAICompatible` asks ``GET {base_url}/models`` once per client (adapter copies share the answer) and
puts the served model's identity in its cache keys:

- vLLM and SGLang: ``id`` and ``root`` (where the weights were loaded from), ``parent`` for an adapter;
- llama.cpp: ``id`` (the model file or its alias) and ``meta`` (parameter count, file size, vocabulary);
- Ollama: ``id`` and ``created``, which Ollama sets to when the model under that name last changed (vLLM
  and llama.cpp set ``created`` to the time of the listing, so it is used only when nothing else is).

A server that has no ``/models`` (or lists nothing usable) keeps the name-only key of earlier versions,
and the client warns once. One that cannot be asked right now (not reachable, 429, 5xx) is asked again at
a request a few seconds later; meanwhile its requests bypass the cache (neither looked up nor stored), since the name
alone cannot say which model answers.

Example:
    >>> listing = {"data": [{"id": "local-model", "root": "/models/B", "created": 1, "permission": []}]}
    >>> identity_of(listing, "local-model")
    ({'id': 'local-model', 'root': '/models/B'}, '')
    >>> identity_of({"data": [{"id": "/m/qwen.gguf", "meta": {"n_params": 494}}]}, "any-name")[0]
    {'id': '/m/qwen.gguf', 'meta': {'n_params': 494}}
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any

import httpx

from cotune.lm.remote.http_pool import HTTPPool

# The card fields that say which weights answer; the rest (permissions, timestamps, limits) vary per call
# or describe the serving, not the model.
IDENTITY_FIELDS = ("id", "root", "parent", "meta")

# What `ServedModel.identity` says while the server cannot be asked (compared by identity, `is`).
UNASKED: dict[str, Any] = {"unasked": True}

# After a failed ask, the requests of the next seconds go uncached without asking: a batch of 100 keys
# must not wait out 100 timeouts. The listing is small, so it gets a short timeout of its own.
ASK_AGAIN_AFTER_S = 5.0
ASK_TIMEOUT_S = 10.0


def identity_of(listing: Any, model: str) -> tuple[dict[str, Any] | None, str]:
    """(the identity of ``model`` in a ``GET /models`` answer, "") or (None, why there is none)."""
    cards = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(cards, list) or not cards or not all(isinstance(c, dict) for c in cards):
        return None, "its GET /models answer lists no models"
    named = [c for c in cards if c.get("id") == model]
    if named:
        card = named[0]
    elif len(cards) == 1:
        card = cards[0]  # one model served whatever the request names (llama.cpp)
    else:
        ids = ", ".join(repr(c.get("id")) for c in cards[:8])
        return None, f"its GET /models lists no model {model!r} (it lists {ids})"
    identity = {k: card[k] for k in IDENTITY_FIELDS if card.get(k) is not None}
    if "root" not in identity and "meta" not in identity and card.get("created") is not None:
        identity["created"] = card["created"]  # Ollama: when the model under this name last changed
    return identity, ""


class ServedModel:
    """The identity of the model a client's server runs under its name: asked once, then remembered.

    Shared by an `OpenAICompatible` client and its adapter copies (one ``GET /models`` for all of them).

    Args:
        pool: the client's connections (its headers carry the API key).
        base_url: the API root requests go to; shown_url: the same with credentials taken out.
        model: the name the client sends.
    """

    def __init__(self, pool: HTTPPool, base_url: str, shown_url: str, model: str):
        self.pool, self.base_url, self.shown_url, self.model = pool, base_url, shown_url, model
        self._lock = threading.Lock()
        self._known = False
        self._identity: dict[str, Any] | None = None
        self._failed_at = -float("inf")

    def identity(self) -> dict[str, Any] | None:
        """The served model's identity; None when the server does not say (the key is then the name, as
        before); `UNASKED` while the server cannot be asked."""
        with self._lock:
            if self._known:
                return self._identity
            if time.monotonic() - self._failed_at < ASK_AGAIN_AFTER_S:
                return UNASKED
            identity, why = self._ask()
            if identity is UNASKED:
                self._failed_at = time.monotonic()
                return UNASKED
            self._known, self._identity = True, identity
        if identity is None:
            warnings.warn(
                f"server at {self.shown_url} does not say which model it runs as {self.model!r} ({why}); cached "
                "answers are keyed by that name only, so after the server swaps models under it use --no-cache "
                "(cache=False) or `cotune cache clear`",
                stacklevel=2,
            )
        return identity

    def _ask(self) -> tuple[dict[str, Any] | None, str]:
        try:
            with self.pool.slots:
                response = self.pool.client().get(
                    f"{self.base_url}/models", timeout=min(self.pool.timeout, ASK_TIMEOUT_S)
                )
        except httpx.TransportError:
            return UNASKED, ""  # the request itself will fail and say why, after its retries
        if response.status_code == 429 or response.status_code >= 500:
            return UNASKED, ""
        if response.status_code != 200:
            return None, f"GET /models answered HTTP {response.status_code}"
        try:
            listing = response.json()
        except ValueError:
            return None, "its GET /models answer is not JSON"
        return identity_of(listing, self.model)
