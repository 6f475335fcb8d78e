"""The LM protocol: batched chat completion with a persistent cache and usage accounting.

A backend implements one method, ``_generate(batch, config) -> list[Completion]``. The base class adds
usage totals, per-call overrides, a safe ``deepcopy`` and the ``cache=`` argument, which puts the request
cache of `cotune.lm.cache` (the one `CachedLM` wraps any LM in) in front of ``_generate``.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cotune.errors import ConfigError, UnknownChoiceError
from cotune.lm.adapters import relative_adapter
from cotune.lm.cache import RequestCache, open_cache, request_key, through_cache
from cotune.lm.completion import Completion, Messages
from cotune.lm.constraint import Constraint
from cotune.lm.usage import Usage, UsageMeter

T = TypeVar("T")


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling parameters of a request.

    Attributes:
        temperature: 0 means greedy decoding.
        top_p: nucleus sampling mass (used when temperature > 0).
        min_p: drop tokens less likely than ``min_p`` times the most likely one, after temperature (used
            when temperature > 0; 0 keeps all). Keeps high-temperature samples readable: the tail of
            unlikely tokens goes, while alternatives the model finds plausible stay.
        max_tokens: the most tokens to generate.
        stop: strings that end the completion (not included in it).
        rollout_id: distinguishes otherwise identical requests, so the cache does not return the same
            sample twice; used when collecting several rollouts per example.
        constraint: what the completion must look like (a `cotune.lm.constraint.Constraint`), for
            backends that constrain decoding; others ignore it. Part of the cache key.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    min_p: float = 0.0
    max_tokens: int = 384
    stop: tuple[str, ...] = ()
    rollout_id: int = 0
    constraint: Constraint | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p < 1:
            raise ConfigError(f"min_p must be in [0, 1), got {self.min_p}")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if isinstance(self.stop, str) or isinstance(self.stop, list):
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))

    def replace(self, **overrides: Any) -> GenerationConfig:
        valid = {f.name for f in dataclasses.fields(self)}
        for key in overrides:
            if key not in valid:
                raise UnknownChoiceError("generation parameter", key, valid)
        return dataclasses.replace(self, **overrides) if overrides else self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class AdapterAddress(enum.Enum):
    """How a backend's adapter is addressed: a folder on this machine, or a name a server knows."""

    FOLDER = "folder"
    SERVED_NAME = "served_name"


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared by its class: optimizers ask this instead of probing attributes.

    Attributes:
        local_weights: the base weights are a folder on this machine (``LM.model_path``), so the Θ step
            can train an adapter for them here.
        adapters: ``with_adapter`` works (a folder for a local model, an adapter name for a server).
        runtime_adapters: adapters can be loaded into the running backend at runtime (vLLM's
            ``/v1/load_lora_adapter``); whether a given server has it switched on is checked by asking it.
        structured_output: how completions can be constrained: "grammar", "json_schema" or None.
    """

    local_weights: bool = False
    adapters: bool = False
    runtime_adapters: bool = False
    structured_output: str | None = None


class LM(ABC):
    """Base class of every backend.

    Args:
        cache: a `RequestCache`, True for the default on-disk cache, or False/None for no cache.
        config: default generation parameters; each call may override fields.
        constrained: whether predictors constrain their completions on this LM where it can (see
            ``structured_output``); a predictor's own ``constrained`` setting wins.
    """

    backend: str = "base"
    # How this backend can constrain a completion: "grammar" (EBNF and JSON schemas, decoded locally),
    # "json_schema" (a server's structured outputs), or None (free text, parsed leniently).
    structured_output: str | None = None
    # Whether predictors constrain their completions by default (``LM.__init__`` sets it; a backend that
    # does not call it does not constrain).
    constrained: bool = False
    cache: RequestCache | None = None
    # What an adapter is to this backend, so a saved result names it the way it can be loaded again.
    adapter_address: AdapterAddress = AdapterAddress.FOLDER
    # The local engine that computes answers (`cotune.lm.engine.hf_engine.HFEngine`), for a server to prepare work
    # off the model's thread; None for backends without one.
    engine: Any = None
    # The most tokens of prompt and completion together, where the backend knows it.
    context_length: int | None = None
    # Whether adapters can be loaded into the running backend (a server with vLLM's runtime LoRA API).
    runtime_adapters: bool = False
    # The local folder of the base weights, for backends that have one (the trainer loads the same base).
    model_path: str | None = None

    def __init__(
        self,
        *,
        cache: RequestCache | bool | None = True,
        config: GenerationConfig | None = None,
        constrained: bool = True,
    ):
        self.cache: RequestCache | None = open_cache(cache)
        self.config = config or GenerationConfig()
        self.constrained = constrained
        self._meter = UsageMeter()

    # Identity, used in cache keys and saved programs.
    @property
    @abstractmethod
    def model(self) -> str: ...

    @property
    def adapter(self) -> str | None:
        return None

    @property
    def adapter_id(self) -> str | None:
        """Adapter identity for cache keys: path plus a content hash where the backend knows it."""
        return self.adapter

    def spec(self) -> dict[str, Any]:
        """Enough to rebuild this LM with `cotune.lm.registry.from_spec` (saved with programs)."""
        return {"backend": self.backend, "model": self.model, "adapter": self.adapter}

    def with_adapter(self, adapter: str | None) -> LM:
        raise ConfigError(f"the {self.backend} backend cannot load adapters")

    def adapter_ref(self, base_dir: str | Path) -> str | None:
        """This LM's adapter as a file in ``base_dir`` should name it: a folder relative to ``base_dir`` (so
        the folder can move), a served name as it is, None without an adapter."""
        if self.adapter_address is AdapterAddress.FOLDER:
            return relative_adapter(self.adapter, base_dir)
        return self.adapter

    def served_identity(self) -> dict[str, Any] | None:
        """What a server reports running under this model's name (``id``, ``root``...); None where the
        backend is not a server or the server does not say."""
        return None

    def count_prompt_tokens(self, messages: Messages) -> int | None:
        """The prompt's length in tokens as the model will see it; None where the backend cannot tell
        without its model's thread."""
        return None

    def close(self) -> None:
        """Release what the backend holds (a model, connections); nothing by default."""
        return None

    def runtime_lora(self) -> Any:
        """The backend's runtime adapter loading (`cotune.lm.remote.runtime_lora.RuntimeLoRA`), where
        ``capabilities.runtime_adapters`` says it has one."""
        raise ConfigError(f"the {self.backend} backend cannot load adapters at runtime")

    def run_compute(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` where this backend computes, and return its result.

        A local engine computes on one model thread; torch work run from another thread of the same process
        (training an adapter) starts a second team of OpenMP threads, and once a process has more of those
        threads than cores, libgomp stops spinning between parallel regions and every later generation is
        slower (measured: a second compute thread made 50 GSM8K generations 25 → 34 s). So heavy torch work
        on the model's behalf goes through here. Default: ``fn()`` on the calling thread.
        """
        return fn()

    @property
    def capabilities(self) -> Capabilities:
        """What this backend can do (see `Capabilities`). A backend declares adapters by overriding
        ``with_adapter``, local weights by having a ``model_path``, the rest by class attributes."""
        return Capabilities(
            local_weights=bool(self.model_path),
            adapters=type(self).with_adapter is not LM.with_adapter,
            runtime_adapters=self.runtime_adapters,
            structured_output=self.structured_output,
        )

    @property
    def usage(self) -> Usage:
        """Totals over every call this LM answered (cache hits included, counted apart)."""
        return self._meter.snapshot()

    def __call__(self, messages: Messages, **overrides: Any) -> Completion:
        return self.generate([messages], **overrides)[0]

    def generate(self, batch: Sequence[Messages], **overrides: Any) -> list[Completion]:
        """Complete each conversation in ``batch``; cached requests are not sent again."""
        config = self.config.replace(**overrides)
        if self.cache is None:
            results = self._send(batch, config)
        else:
            results = through_cache(
                self.cache, batch, lambda m: self.cache_key(m, config), lambda todo: self._send(todo, config)
            )
        for c in results:
            self._meter.add(c.prompt_tokens, c.completion_tokens, c.seconds, c.cached, c.unconstrained)
        return results

    def _send(self, batch: Sequence[Messages], config: GenerationConfig) -> list[Completion]:
        """``_generate`` on ``batch``, checked for one completion per request; those that did not time
        themselves get an equal share of the call's time."""
        if not batch:
            return []
        t0 = time.perf_counter()
        fresh = self._generate(batch, config)
        if len(fresh) != len(batch):
            raise RuntimeError(f"{type(self).__name__}._generate returned {len(fresh)} for {len(batch)} requests")
        elapsed = time.perf_counter() - t0
        for c in fresh:
            if not c.seconds:
                c.seconds = elapsed / len(batch)
        return fresh

    @abstractmethod
    def _generate(self, batch: Sequence[Messages], config: GenerationConfig) -> list[Completion]:
        """Run the model on requests that missed the cache."""

    def cache_key(self, messages: Messages, config: GenerationConfig) -> str:
        return request_key(
            backend=self.backend, model=self.model, adapter=self.adapter_id, messages=messages, config=config.to_dict()
        )

    def __deepcopy__(self, memo: dict) -> LM:
        return self  # models are shared, never copied

    def __repr__(self) -> str:
        adapter = f", adapter={self.adapter!r}" if self.adapter else ""
        return f"{type(self).__name__}({self.model!r}{adapter})"
