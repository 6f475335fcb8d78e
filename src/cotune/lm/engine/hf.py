"""`HFLM`: a local Hugging Face transformers chat model, with coalesced batching and LoRA adapters.

An `HFEngine` (`cotune.lm.engine.hf_engine`) owns the model, the tokenizer and one worker thread. Every `HFLM` on
the same engine submits its requests there, so calls from many threads become one batched decode, and
LMs that differ only in their adapter share one copy of the base weights.

torch and transformers are imported when an engine is built, never when this module is imported.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cotune.errors import CotuneError, LMError
from cotune.lm.adapters import adapter_id as _adapter_id
from cotune.lm.adapters import check_base_model
from cotune.lm.base import LM, GenerationConfig
from cotune.lm.cache import RequestCache, request_key
from cotune.lm.completion import Completion, Messages
from cotune.lm.engine.hf_engine import HFEngine


class HFLM(LM):
    """A local transformers chat model; concurrent calls are coalesced into batched generation.

    Args:
        path: a local Hugging Face model folder (see `cotune.lm.registry.load` for names and GGUF files).
        name: the name used in cache keys and specs (a registry name); defaults to ``path``.
        adapter: a LoRA adapter folder to apply (see `with_adapter`).
        device, dtype, max_batch_size, batch_wait_ms, busy_wait_ms, decoder, merge_adapters, prefix_cache_mb: see
            `HFEngine`.
        cache: a `RequestCache`, True for the default one, False for none.
        config: default generation parameters.

    Raises:
        ConfigError: the model or adapter cannot be loaded, or the adapter was trained on another base.
    """

    backend = "hf"
    structured_output = "grammar"

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        adapter: str | Path | None = None,
        device: str | None = None,
        dtype: str = "auto",
        max_batch_size: int = 64,
        batch_wait_ms: float = 5.0,
        busy_wait_ms: float = 0.0,
        cache: RequestCache | bool | None = True,
        config: GenerationConfig | None = None,
        constrained: bool = True,
        decoder: str = "cotune",
        merge_adapters: bool = True,
        prefix_cache_mb: int = 512,
    ):
        engine = HFEngine(
            path,
            device=device,
            dtype=dtype,
            max_batch_size=max_batch_size,
            batch_wait_ms=batch_wait_ms,
            busy_wait_ms=busy_wait_ms,
            decoder=decoder,
            merge_adapters=merge_adapters,
            prefix_cache_mb=prefix_cache_mb,
        )
        self._setup(engine, name or str(path), adapter, cache=cache, config=config, constrained=constrained)

    @classmethod
    def from_engine(
        cls,
        engine: HFEngine,
        *,
        name: str | None = None,
        adapter: str | Path | None = None,
        cache: RequestCache | bool | None = True,
        config: GenerationConfig | None = None,
        constrained: bool = True,
    ) -> HFLM:
        """An HFLM on an existing engine (shares its weights and worker thread)."""
        lm = cls.__new__(cls)
        lm._setup(engine, name or engine.path, adapter, cache=cache, config=config, constrained=constrained)
        return lm

    def _setup(self, engine, name, adapter, *, cache, config, constrained=True) -> None:
        LM.__init__(self, cache=cache, config=config, constrained=constrained)
        self._engine, self._name = engine, name
        self._adapter: str | None = None
        self._adapter_id: str | None = None
        if adapter is not None:
            adapter = str(adapter)
            check_base_model(adapter, name=name, model_path=engine.path)
            self._adapter, self._adapter_id = adapter, _adapter_id(adapter)

    @property
    def model(self) -> str:
        return self._name

    @property
    def model_path(self) -> str:
        """The transformers folder the base model was loaded from (for the trainer to load the same base)."""
        return self._engine.path

    @property
    def device(self) -> str:
        return self._engine.device

    @property
    def dtype(self) -> str:
        return self._engine.dtype

    @property
    def engine(self) -> HFEngine:
        return self._engine

    @property
    def context_length(self) -> int | None:
        """The model's ``max_position_embeddings`` (None where its config does not say)."""
        value = getattr(self._engine.model.config, "max_position_embeddings", None)
        return value if isinstance(value, int) and value > 0 else None

    def run_compute(self, fn: Callable[[], Any]) -> Any:
        """``fn`` on the engine's model thread: one team of compute threads in the process."""
        return self._engine.call(fn)

    def spec(self) -> dict[str, Any]:
        # int8 answers differ from the float weights' (the float dtypes follow the machine: "auto")
        return super().spec() | ({"dtype": "int8"} if self.dtype == "int8" else {})

    @property
    def adapter(self) -> str | None:
        return self._adapter

    @property
    def adapter_id(self) -> str | None:
        return self._adapter_id

    def with_adapter(self, adapter: str | Path | None) -> HFLM:
        """The same base model (same engine, weights loaded once) with ``adapter`` applied, or none.

        Raises:
            ConfigError: not an adapter folder, or its ``cotune_adapter.json`` names another base model.
        """
        return HFLM.from_engine(
            self._engine,
            name=self._name,
            adapter=adapter,
            cache=self.cache,
            config=self.config,
            constrained=self.constrained,
        )

    def cache_key(self, messages: Messages, config: GenerationConfig) -> str:
        # dtype changes greedy outputs (bf16 vs fp32 logits), so it is part of what answers a request.
        return request_key(
            backend=self.backend,
            model=self.model,
            adapter=self.adapter_id,
            dtype=self.dtype,
            messages=messages,
            config=config.to_dict(),
        )

    def _generate(self, batch: Sequence[Messages], config: GenerationConfig) -> list[Completion]:
        # Length-sorted, so a large batch splits into chunks of similar length (less padding).
        order = sorted(range(len(batch)), key=lambda i: sum(len(m.get("content", "")) for m in batch[i]))
        # Requests of other settings may share the batch (the engine keeps each row's own, and its own seed).
        key = self._engine.batch_key(config, self._adapter_id, self._adapter)
        futures = self._engine.submit(key, [(batch[i], _seed(batch[i], config), config) for i in order])
        results: list[Completion] = [None] * len(batch)  # type: ignore[list-item]
        for i, future in zip(order, futures, strict=True):
            try:
                results[i] = future.result()
            except CotuneError:
                raise
            except Exception as e:
                raise LMError(f"{self!r} failed to generate: {type(e).__name__}: {e}") from e
        return results

    def close(self) -> None:
        """Stop the shared engine (every LM made by `with_adapter` from this one stops with it)."""
        self._engine.close()

    def __enter__(self) -> HFLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _seed(messages: Messages, config: GenerationConfig) -> int:
    """A sampling seed derived from the request, so a rerun draws the same sample whatever the batch."""
    blob = json.dumps([messages, config.to_dict()], sort_keys=True, ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "big") & ((1 << 63) - 1)
