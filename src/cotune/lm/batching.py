"""Request coalescing: many threads submit small batches, one worker thread runs them as large ones.

A local model is much faster per token on one batch of 8 than on 8 batches of 1, but `evaluate` runs a
program in 8 threads that each ask for one completion at a time. `BatchWorker` sits between them: callers
`submit` payloads under a *group key* (requests that may share one batch: same generation config, same
adapter) and get futures; a single daemon thread takes the oldest request, waits a few milliseconds for
more of its group, and runs them together. Nothing here knows about models, so the logic is tested
with a plain function.

Example:
    >>> worker = BatchWorker(lambda key, xs: [f"{key}:{x}" for x in xs], max_batch_size=4)
    >>> [f.result() for f in worker.submit("k", [1, 2])]
    ['k:1', 'k:2']
    >>> worker.close()
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from cotune.errors import ConfigError, LMError

_STOP = object()


@dataclass
class _Request:
    key: Hashable
    payload: Any
    arrived: float
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """What the worker did: ``batches`` runs for ``requests`` payloads; ``largest`` batch seen."""

    batches: int = 0
    requests: int = 0
    largest: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.requests / self.batches if self.batches else 0.0


class BatchWorker:
    """Runs ``run(key, payloads) -> results`` on one daemon thread, merging requests with equal keys.

    Requests are served oldest first (no starvation); a batch holds only requests of the oldest
    request's group, in arrival order, at most ``max_batch_size`` of them.

    Args:
        run: called on the worker thread with a group key and a list of payloads; returns one result per
            payload, in order. If it raises, every request of that batch gets the exception.
        max_batch_size: the most payloads per call of ``run``.
        wait_ms: after the oldest waiting request arrived, how long to wait for more of its group.
        name: the worker thread's name (shows in debuggers and thread dumps).

    Raises:
        ConfigError: ``max_batch_size`` < 1 or ``wait_ms`` < 0.
    """

    def __init__(
        self,
        run: Callable[[Hashable, list[Any]], Sequence[Any]],
        *,
        max_batch_size: int = 16,
        wait_ms: float = 5.0,
        name: str = "cotune-batch-worker",
    ):
        if max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if wait_ms < 0:
            raise ConfigError(f"batch wait must be >= 0 ms, got {wait_ms}")
        self._run = run
        self.max_batch_size = max_batch_size
        self.wait = wait_ms / 1000.0
        self.stats = BatchStats()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, key: Hashable, payloads: Sequence[Any]) -> list[Future]:
        """Queue ``payloads`` under ``key``; returns one future per payload.

        Raises:
            LMError: the worker was closed.
        """
        now = time.monotonic()
        # Under the lock so no request can slip in behind the stop marker and wait forever.
        with self._lock:
            if self._closed:
                raise LMError("the model engine is closed; load the model again")
            requests = [_Request(key, p, now) for p in payloads]
            for r in requests:
                self._queue.put(r)
        return [r.future for r in requests]

    def close(self, timeout: float | None = None, *, wait: bool = True) -> None:
        """Finish the requests already queued, then stop the worker thread. Idempotent.

        Args:
            timeout: the most seconds to wait for the thread.
            wait: False returns at once (for finalizers, which must not block).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if wait and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _loop(self) -> None:
        pending: list[_Request] = []
        stopping = False
        while pending or not stopping:
            if not pending:
                item = self._queue.get()
                if item is _STOP:
                    break
                pending.append(item)
            stopping = self._gather(pending) or stopping
            key = pending[0].key
            batch = [r for r in pending if r.key == key][: self.max_batch_size]
            taken = {id(r) for r in batch}
            pending = [r for r in pending if id(r) not in taken]
            self._execute(key, batch)

    def _gather(self, pending: list[_Request]) -> bool:
        """Move queued requests into ``pending`` until the oldest one's group is full or its wait is over.

        Returns whether the stop marker was seen.
        """
        key, deadline = pending[0].key, pending[0].arrived + self.wait
        size = sum(r.key == key for r in pending)
        while size < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            pending.append(item)
            size += item.key == key
        return False

    def _execute(self, key: Hashable, batch: list[_Request]) -> None:
        batch = [r for r in batch if r.future.set_running_or_notify_cancel()]
        if not batch:
            return
        try:
            results = list(self._run(key, [r.payload for r in batch]))
            if len(results) != len(batch):
                raise LMError(f"batch function returned {len(results)} results for {len(batch)} requests")
        except BaseException as e:
            # Every failure must reach the callers, or their threads wait forever.
            for r in batch:
                r.future.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        finally:
            self.stats.batches += 1
            self.stats.requests += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
        for r, result in zip(batch, results, strict=True):
            r.future.set_result(result)
