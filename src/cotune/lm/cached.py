"""`CachedLM`: any LM behind a `RequestCache`, so a request answered before is not sent again.

`cotune.lm.cache.through_cache` is the one place requests are looked up and stored. `CachedLM` puts it
in front of any LM; backends built with ``cache=`` (``load(name, cache=True)``,
``OpenAICompatible(..., cache=...)``) use it too, with the same keys (the LM's ``cache_key``), so a cache
file written one way answers the other.

Example:
    >>> import pathlib, tempfile
    >>> from cotune.lm import FakeLM, RequestCache
    >>> fake = FakeLM(lambda messages: "hi " + messages[-1]["content"])
    >>> lm = CachedLM(fake, RequestCache(pathlib.Path(tempfile.mkdtemp()) / "c.sqlite"))
    >>> [lm([{"role": "user", "content": "you"}]).cached for _ in range(2)]
    [False, True]
    >>> len(fake.calls), lm.usage.calls, lm.usage.cache_hits, fake.usage.calls
    (1, 2, 1, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cotune.lm.base import LM, GenerationConfig
from cotune.lm.cache import RequestCache, open_cache, through_cache
from cotune.lm.completion import Completion, Messages
from cotune.lm.usage import UsageMeter


def _wrapped(name: str) -> Any:
    """A read-only attribute that is the wrapped LM's ``name``."""
    return property(lambda self: getattr(self.lm, name), doc=f"The wrapped LM's ``{name}``.")


class CachedLM(LM):
    """``lm`` with a request cache in front.

    Everything `LM` declares but the cache is ``lm``'s: its identity (``model``, ``adapter``, ``cache_key``,
    ``spec()``, so saved programs do not change), ``capabilities``, ``config``, ``constrained``, ``engine``,
    ``close()``... A backend's own attributes beyond those (a FakeLM's ``calls``) are read on ``lm``.
    ``usage`` counts every call, cache hits apart, while ``lm.usage`` counts only the requests sent to it.

    Args:
        lm: the model that answers what the cache does not.
        cache: a `RequestCache`, True for the default on-disk one, or False/None for none (every request
            then goes to ``lm``).
    """

    def __init__(self, lm: LM, cache: RequestCache | bool | None = True):
        # LM.__init__ is not called: config and constrained are read from lm.
        self.lm = lm
        self.cache = open_cache(cache)
        self._meter = UsageMeter()

    def generate(self, batch: Sequence[Messages], **overrides: Any) -> list[Completion]:
        """Complete each conversation in ``batch``; requests answered before come from the cache."""
        if self.cache is None:
            results = self.lm.generate(batch, **overrides)
        else:
            config = self.lm.config.replace(**overrides)
            results = through_cache(
                self.cache,
                batch,
                lambda m: self.lm.cache_key(m, config),
                lambda todo: self.lm.generate(todo, **overrides),
            )
        for c in results:
            self._meter.add(c.prompt_tokens, c.completion_tokens, c.seconds, c.cached, c.unconstrained)
        return results

    def _generate(self, batch: Sequence[Messages], config: GenerationConfig) -> list[Completion]:
        return self.lm._generate(batch, config)  # unused: generate sends misses through lm.generate

    def with_adapter(self, adapter: str | None) -> CachedLM:
        """``lm.with_adapter(adapter)`` behind the same cache (the adapter is part of the key)."""
        return CachedLM(self.lm.with_adapter(adapter), self.cache)

    # -- the wrapped LM's identity, settings and declared capabilities (read through, never copied) -------
    backend = _wrapped("backend")
    model = _wrapped("model")
    adapter = _wrapped("adapter")
    adapter_id = _wrapped("adapter_id")
    adapter_address = _wrapped("adapter_address")
    config = _wrapped("config")
    constrained = _wrapped("constrained")
    structured_output = _wrapped("structured_output")
    runtime_adapters = _wrapped("runtime_adapters")
    model_path = _wrapped("model_path")
    capabilities = _wrapped("capabilities")
    engine = _wrapped("engine")
    context_length = _wrapped("context_length")

    def spec(self) -> dict[str, Any]:
        return self.lm.spec()

    def runtime_lora(self) -> Any:
        return self.lm.runtime_lora()

    def run_compute(self, fn: Callable[[], Any]) -> Any:
        return self.lm.run_compute(fn)

    def cache_key(self, messages: Messages, config: GenerationConfig) -> str | None:
        return self.lm.cache_key(messages, config)

    def served_identity(self) -> dict[str, Any] | None:
        return self.lm.served_identity()

    def count_prompt_tokens(self, messages: Messages) -> int | None:
        return self.lm.count_prompt_tokens(messages)

    def close(self) -> None:
        """Close the wrapped LM (the cache stays open: it may be shared)."""
        self.lm.close()

    def __repr__(self) -> str:
        return f"CachedLM({self.lm!r}, {self.cache!r})"
