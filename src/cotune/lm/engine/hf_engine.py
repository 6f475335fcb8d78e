"""`HFEngine`: a loaded transformers model, its tokenizer, and the one thread that computes with them.

Every `cotune.lm.engine.hf.HFLM` on an engine submits its requests to that thread (a `BatchWorker`), so calls from
many threads become batched decoding, LMs that differ only in their adapter share one copy of the base
weights, and other torch work for the model (training an adapter: `HFEngine.call`) runs there too.

torch and transformers are imported when an engine is built, never when this module is imported.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotune.errors import ConfigError, UnknownChoiceError
from cotune.hardware import bf16_is_fast
from cotune.lm.base import GenerationConfig
from cotune.lm.completion import Completion, Messages, truncate_at_stop
from cotune.lm.engine import row_settings
from cotune.lm.engine.attention import use_grouped_sdpa
from cotune.lm.engine.batching import BatchWorker, Finished
from cotune.lm.engine.counters import EngineCounters
from cotune.lm.engine.decode import decode_steps
from cotune.lm.engine.head import contiguous_head_input
from cotune.lm.engine.prefill import PassTimer
from cotune.lm.engine.prefix_store import PrefixStore
from cotune.lm.engine.stops import stop_processor
from cotune.lm.engine.weights import AdapterWeights


@dataclass(frozen=True, eq=False)
class ComputeCall:
    """A function for the model thread (`HFEngine.call`): a batch key equal only to itself, so it runs alone."""

    fn: Callable[[], Any]


DTYPES = {
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "int8": "int8",
}
DECODERS = ("cotune", "transformers")


def resolve_device(device: str | None) -> str:
    """``None`` → "cuda" when available, else "cpu"."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU; use device='cpu'")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """Canonical torch dtype name for ``dtype`` ("auto", "bf16", "float32", ...) on ``device``."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        # bf16 where the CPU computes it natively: emulated, a bf16 matrix product over many rows (prefill)
        # is several times slower than float32 (cotune.hardware, benchmarks/engine.py).
        return "bfloat16" if bf16_is_fast("cpu") else "float32"
    if dtype not in DTYPES:
        raise UnknownChoiceError("dtype", dtype, [*DTYPES, "auto"])
    return DTYPES[dtype]


class HFEngine:
    """A loaded model + tokenizer and the worker thread that runs every generation on them.

    Args:
        path: a local transformers folder (or a hub id, for users who are online).
        device: "cpu", "cuda", "cuda:1"...; None picks CUDA when available.
        dtype: "auto" (CUDA: bf16 where supported; CPU: bf16 only with bf16 instructions, else float32),
            "bfloat16", "float32", "float16", or "int8" (CPU: float32 with int8 Linear weights, about 2× faster
            decoding; answers differ slightly, see `cotune.lm.engine.quantize`).
        max_batch_size: the most requests per ``generate``. 64 holds a whole 50-example evaluation in one
            batch: CPU decoding is overhead-bound at small batches, so fewer, larger batches finish sooner.
        batch_wait_ms: how long the worker waits for more requests after the first one arrives.
        busy_wait_ms: the same wait while other batches run (`BatchWorker`): larger batches for programs whose
            threads send their next calls milliseconds apart, at the cost of that much latency per batch.
        decoder: "cotune" (`cotune.lm.engine.decode`: finished rows leave the batch, requests join it as it
            decodes, whatever their generation settings, and other adapters' batches take turns with it) or
            "transformers" (its ``generate``, one call per batch of one config). Greedy outputs are the same.
        merge_adapters: run an adapter as a merged copy of the weights, at the base model's speed (see
            `cotune.lm.engine.weights`); False applies it as PEFT layers on the shared base model.
        prefix_cache_mb: memory for prompt prefixes' keys and values kept across calls (`PrefixStore`: a
            prompt sent again, e.g. the next round of Θ's rollouts, computes only its last token); 0 turns it off.

    Raises:
        ConfigError: the folder cannot be loaded, or its tokenizer has no chat template; int8 off the CPU or
            with ``merge_adapters=False`` (PEFT layers cannot wrap int8 layers).
        UnknownChoiceError: an unknown ``decoder`` or ``dtype``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str | None = None,
        dtype: str = "auto",
        max_batch_size: int = 64,
        batch_wait_ms: float = 5.0,
        busy_wait_ms: float = 0.0,
        decoder: str = "cotune",
        merge_adapters: bool = True,
        prefix_cache_mb: int = 512,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if decoder not in DECODERS:
            raise UnknownChoiceError("decoder", decoder, DECODERS)
        self.path = str(path)
        self.decoder = decoder
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        int8 = self.dtype == "int8"
        if int8 and not merge_adapters:
            raise ConfigError("dtype 'int8' needs merge_adapters=True: PEFT layers cannot wrap int8 layers")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32 if int8 else self.dtype)
        except OSError as e:
            raise ConfigError(f"cannot load a transformers model from {self.path!r}: {e}") from e
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(f"the tokenizer of {self.path!r} has no chat template; cotune needs a chat model")
        self.tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = use_grouped_sdpa(model)  # on a CPU, attention without copying the key/value heads per query head
        model = contiguous_head_input(model.to(self.device).eval())  # merged adapter copies inherit both
        # int8: adapters merge into (a copy of) the float32 weights, which are then quantized the same way
        self.weights = AdapterWeights(model, merge=merge_adapters, prepare=_int8(self.device) if int8 else None)
        self.model = self.weights.base
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.generate_calls = 0
        self.generate_seconds = 0.0
        self._grammar = None
        self.prefixes = PrefixStore(max_bytes=int(prefix_cache_mb * (1 << 20)))
        self.counters = EngineCounters()  # what the decoding loop computed (benchmarks read it)
        self.passes = PassTimer()  # times the steps, so a long prefill takes the thread a slice at a time
        # The worker thread holds the engine only weakly: once no LM uses it, the model is freed and the
        # thread stops, even if nobody called close() (experiments load many models in one process).
        run = weakref.WeakMethod(self._run)
        self._worker_name = f"cotune-hf-{Path(self.path).name}"
        self._worker = BatchWorker(
            lambda key, payloads: run()(key, payloads),
            max_batch_size=max_batch_size,
            wait_ms=batch_wait_ms,
            busy_wait_ms=busy_wait_ms,
            name=self._worker_name,
        )
        weakref.finalize(self, self._worker.close, wait=False)

    @property
    def stats(self):
        """`cotune.lm.engine.batching.BatchStats`: batches run and requests served."""
        return self._worker.stats

    def submit(self, key: Hashable, payloads: Sequence[Any]):
        return self._worker.submit(key, payloads)

    def close(self) -> None:
        """Finish queued requests and stop the worker; later calls raise `LMError`."""
        self._worker.close()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the model thread, after the requests queued before it, and return its result
        (see `cotune.lm.base.LM.run_compute`); from the model thread itself, at once."""
        if threading.current_thread().name == self._worker_name:
            return fn()
        return self._worker.submit(ComputeCall(fn), [None])[0].result()

    def batch_key(self, config: GenerationConfig, adapter_key: str | None, adapter_path: str | None) -> tuple:
        """The key under which a request of ``config`` on that adapter is batched (`BatchWorker`): its weights, as
        a forward pass runs one set of them (merged adapters are copies of the model; PEFT layers apply one
        adapter at a time); cotune's decoder mixes rows of any settings (`cotune.lm.engine.row_settings`), while
        transformers' ``generate`` takes one generation config per call, so there the settings are in it too."""
        shared = row_settings.settings(config) if self.decoder == "transformers" else None
        return shared, adapter_key, adapter_path

    # -- everything below runs on the worker thread, the only one that touches the model --------------

    def _run(self, key: tuple, payloads: list[tuple[Messages, int, GenerationConfig]]) -> list[Completion]:
        """One batch (``key``: `batch_key`; a payload: the messages, the sampling seed and the request's config)."""
        import torch

        if isinstance(key, ComputeCall):  # `call`: not a generation
            return [key.fn()]
        shared, adapter_key, adapter_path = key
        model = self.weights.model_for(adapter_key, adapter_path)
        texts = [self._render(messages) for messages, _, _ in payloads]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        configs = [config for _, _, config in payloads]
        self.generate_calls += 1
        early: dict[int, Completion] = {}  # rows that ended before the batch, answered then
        if shared is None:
            rows = row_settings.RowProcessors(self._settings_processors)
            rows.add_rows(configs, [seed for _, seed, _ in payloads])
            prompt_lens = enc["attention_mask"].sum(dim=1).tolist()

            def admit(joiners: list[tuple[Messages, int, GenerationConfig]]):
                """Requests that join the batch while it decodes (continuous batching), whatever their settings."""
                texts = [self._render(messages) for messages, _, _ in joiners]
                joined = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                joined = joined.to(self.device)
                configs.extend(config for _, _, config in joiners)
                rows.add_rows([config for _, _, config in joiners], [seed for _, seed, _ in joiners])
                prompt_lens.extend(joined["attention_mask"].sum(dim=1).tolist())
                return joined["input_ids"], joined["attention_mask"], [config.max_tokens for _, _, config in joiners]

            steps = decode_steps(
                model,
                enc["input_ids"],
                enc["attention_mask"],
                max_new_tokens=[config.max_tokens for config in configs],
                stop_ids=sorted(self.eos_ids),
                processors=[rows],
                prefixes=self.prefixes,
                namespace=adapter_key,
                prefill_slice=self.passes.slice,
                counters=self.counters,
                admit=admit,
                finished=True,
            )

            def complete(row: int, tokens: list[int], elapsed: float) -> Completion:
                early[row] = self._completion(tokens, prompt_lens[row], configs[row], elapsed / len(configs))
                return early[row]

            # Other batches run between steps (BatchWorker), so the time counted is this batch's steps only.
            new, elapsed = yield from self._decode(steps, adapter_key, adapter_path, complete)
            if len(rows.groups) > 1:
                self.counters.mixed_batches += 1
        else:  # transformers' own loop, in one step, under the batch's one config
            from transformers import LogitsProcessorList

            seeds = [seed for _, seed, _ in payloads]
            group = row_settings.settings_processors(shared, seeds, grammar=lambda: self.grammar, device=self.device)
            kwargs: dict[str, Any] = {"logits_processor": LogitsProcessorList(group.processors)}
            if shared.stop:
                kwargs["tokenizer"] = self.tokenizer  # generate needs it to match stop strings
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(**enc, generation_config=self._generation_config(shared), **kwargs)
            new = out[:, enc["input_ids"].shape[1] :].tolist()
            elapsed = time.perf_counter() - t0
            prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        self.generate_seconds += elapsed
        seconds = elapsed / len(new)
        return [
            early[row] if row in early else self._completion(ids, n_prompt, config, seconds)
            for row, (ids, n_prompt, config) in enumerate(zip(new, prompt_lens, configs, strict=True))
        ]

    def _decode(self, steps, adapter_key: str | None, adapter_path: str | None, complete):
        """`PassTimer.run` over a batch's ``steps``, passing up the rows that end before the batch as completions
        (``complete(row, tokens, seconds so far)``) at once: their callers (a program's thread, a server's client)
        go on while the batch's longest row decodes, and may send their next request into it."""
        run = self.passes.run(steps, lambda: self._step_context(adapter_key, adapter_path))
        sent, elapsed = None, 0.0
        while True:
            t0 = time.perf_counter()
            try:
                kind = run.send(sent)
            except StopIteration as done:
                return done.value
            elapsed += time.perf_counter() - t0
            if isinstance(kind, Finished):
                kind = Finished({row: complete(row, tokens, elapsed) for row, tokens in kind.results.items()})
            sent = yield kind

    def _settings_processors(self, config: GenerationConfig, seeds):
        """The processors of a group of rows that share ``config`` in a batch of cotune's decoder."""
        end_id = min(self.eos_ids)
        return row_settings.settings_processors(
            config,
            seeds,
            grammar=lambda: self.grammar,
            device=self.device,
            # matched a step at a time here, not in generate's one long call (cotune.lm.engine.stops)
            stops=lambda stops: stop_processor(self.tokenizer, stops, end_id),
        )

    @contextlib.contextmanager
    def _step_context(self, adapter_key: str | None, adapter_path: str | None):
        import torch

        with torch.inference_mode():
            if not self.weights.merge:  # PEFT layers on the shared model: another batch may have switched them
                self.weights.model_for(adapter_key, adapter_path)
            yield

    @property
    def grammar(self):
        """The `cotune.lm.engine.constrain.GrammarEngine` of this model's tokenizer (built on first use)."""
        if self._grammar is None:
            from cotune.lm.engine.constrain import GrammarEngine

            vocab = max(self.model.config.vocab_size, len(self.tokenizer))
            self._grammar = GrammarEngine(self.tokenizer, vocab, sorted(self.eos_ids))
        return self._grammar

    def _render(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _generation_config(self, config: GenerationConfig):
        from transformers import GenerationConfig as HFGenerationConfig

        # Sampling is done by our seeded logits processor, so generate itself always runs greedy.
        return HFGenerationConfig(
            max_new_tokens=config.max_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos_ids),
            stop_strings=list(config.stop) or None,
        )

    def _completion(self, ids: list[int], n_prompt: int, config: GenerationConfig, seconds: float) -> Completion:
        ends = self.eos_ids | {self.tokenizer.pad_token_id}
        n = next((i for i, t in enumerate(ids) if t in ends), len(ids))
        text = self.tokenizer.decode(ids[:n], skip_special_tokens=True)
        text, cut = truncate_at_stop(text, config.stop)
        reason = "length" if n >= config.max_tokens and not cut else "stop"
        return Completion(text, prompt_tokens=int(n_prompt), completion_tokens=n, seconds=seconds, finish_reason=reason)


def _int8(device: str):
    from cotune.lm.engine.quantize import quantize_int8

    return functools.partial(quantize_int8, device=device)


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return found
