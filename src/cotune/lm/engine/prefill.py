"""Prefill passes cut into chunks of about a time slice each, so a long prompt does not hold the model's
thread for its whole prefill (`cotune.lm.engine.decode.decode_steps`, `cotune.lm.engine.batching.BatchWorker`).

A chunk runs the model on the next columns of the prompts, attending to the columns already in the KV cache;
with explicit position ids and the attention mask of every column so far, the keys, values and last logits
are those of one pass. The chunk size follows the speed measured on the chunks before (tokens per second,
which falls as the context grows).

How long a slice is (`PassTimer`): a forward pass has a fixed cost whatever its length (every layer's kernels:
~50 ms for a 135M model on a 2-core CPU, a few ms on a GPU), so each chunk adds that cost to the prefill. An
engine that answers clients one at a time (``interactive``: `cotune serve` sets it) cuts slices of
``PASSES`` such costs: a short request that arrives behind a long prompt waits about as long as it takes to
decode ``PASSES`` tokens, and the long prompt's prefill takes ~10% longer (SmolLM2-135M in bf16 on a CPU:
chunks of 128 tokens cost 17% more than one pass, of 256 6%). Otherwise slices are ``BATCH_PASSES`` long,
a cost of a few percent, so no batch holds the thread for minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from typing import Any

from cotune.lm.engine.batching import Open
from cotune.lm.engine.counters import EngineCounters

PASSES, BATCH_PASSES = 8, 64  # a prefill slice, in fixed costs of a pass (see the module docstring)
MIN_SLICE_S = 0.2  # the shortest slice (where passes are very quick: on a GPU)
UNTIMED_PASS_S = 0.05  # the cost of a pass assumed before one was timed
PREFILL, DECODING = "prefill", "decoding"  # what a step of `cotune.lm.engine.decode.decode_steps` yields after


class PassTimer:
    """The fixed cost of a forward pass, as the quickest decoding step of recent batches shows it (one token a
    row: little more than that cost), and the prefill slice that follows; runs a batch's steps and times them."""

    def __init__(self) -> None:
        self.pass_seconds: float | None = None
        self.interactive = False  # see the module docstring

    @property
    def slice(self) -> float:
        cost = UNTIMED_PASS_S if self.pass_seconds is None else self.pass_seconds
        return max(MIN_SLICE_S, (PASSES if self.interactive else BATCH_PASSES) * cost)

    def run(self, steps: Generator[Any, Any, Any], context: Callable[[], AbstractContextManager]):
        """Drive ``steps`` a step at a time, each inside a fresh ``context()`` (a mode entered across a yield would
        be left by another batch's exit), yielding what each step yielded and sending it what is sent back (a batch's
        joiners: `cotune.lm.engine.batching.Open`); returns (its value, the seconds its steps took)."""
        elapsed, quickest, kind, sent = 0.0, None, None, None
        while True:
            t0 = time.perf_counter()
            try:
                with context():
                    kind, was = steps.send(sent), kind
            except StopIteration as done:
                if quickest is not None:  # an average over batches: one unusually quick or slow step counts little
                    old = self.pass_seconds
                    self.pass_seconds = quickest if old is None else 0.8 * old + 0.2 * quickest
                return done.value, elapsed + time.perf_counter() - t0
            seconds = time.perf_counter() - t0
            elapsed += seconds
            # The first decoding step also ran the prefill's last pass, and a step that took joiners their prefill.
            if _decoding(kind) and _decoding(was) and not sent:
                quickest = seconds if quickest is None else min(quickest, seconds)
            sent = yield kind


def _decoding(kind: Any) -> bool:
    return kind == DECODING or isinstance(kind, Open)


class Chunks:
    """Runs prefill passes in chunks of about ``slice`` seconds each (None: whole), yielding between chunks.

    One object serves every pass of one prefill, so what the first pass measured sizes the next one's chunks.
    """

    FIRST = FLOOR = 128  # tokens in a first chunk (before any speed is known), and in the smallest

    def __init__(self, slice: float | None, counters: EngineCounters | None = None):
        self.slice, self.rate = slice, None  # rate: prompt tokens per second, measured
        self.passes = 0  # forward passes run (a chunked prefill runs several)
        self.counters = counters

    def forward(self, model: Any, ids: Any, mask: Any, positions: Any, cache: Any) -> Generator[str, None, Any]:
        """``model`` on ``ids`` (``mask``: the attention mask of the cache's columns, then these; None: all
        attended) with ``positions``, as one pass would; returns the output for the last position."""
        rows, width = ids.shape
        start = 0
        while self.slice is not None:
            tokens = self.FIRST if self.rate is None else self.rate * self.slice
            columns = max(self.FLOOR, int(tokens)) // rows or 1
            if width - start <= columns:
                break
            t0 = time.perf_counter()
            self._pass(model, ids, mask, positions, cache, start, start + columns)
            self.rate = rows * columns / max(time.perf_counter() - t0, 1e-6)
            start += columns
            yield PREFILL
        return self._pass(model, ids, mask, positions, cache, start, width)

    def _pass(self, model: Any, ids: Any, mask: Any, positions: Any, cache: Any, start: int, end: int) -> Any:
        self.passes += 1
        past = 0 if mask is None else mask.shape[1] - ids.shape[1]  # columns already in the cache
        t0 = time.perf_counter()
        out = model(
            input_ids=ids[:, start:end],
            attention_mask=None if mask is None else mask[:, : past + end],
            position_ids=positions[:, start:end],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        if self.counters is not None:
            self.counters.prefill_passes += 1
            self.counters.prefill_tokens += ids.shape[0] * (end - start)
            self.counters.prefill_seconds += time.perf_counter() - t0
        return out
