"""Request coalescing: many threads submit small batches, one worker thread runs them as large ones.

A local model is much faster per token on one batch of 8 than on 8 batches of 1, but `evaluate` runs a
program in 8 threads that each ask for one completion at a time. `BatchWorker` sits between them: callers
`submit` payloads under a *group key* (requests that may share one batch: for a local model, the same
weights, `cotune.lm.engine.hf_engine.HFEngine.batch_key`) and get futures; a single daemon thread takes the
oldest request, waits a few milliseconds for more of its group, and runs them together. Nothing here knows
about models, so the logic is tested with a plain function.

A batch function may also be a generator function: it yields between steps (a chunk of prefill, a decoding
step) and returns its results. Such batches are *jobs*, and several may be in progress at once (other
groups' requests do not wait for a long batch to end): the worker runs the job that has had the least model
time so far, a time slice at a time, so a short request arriving behind a long one waits about a slice, not
the long one's whole run (a job that has caught up keeps the thread for a slice more, so it ends instead of
taking turns); a job left waiting ``starve_ms`` runs next whatever its time, so a stream of short jobs cannot
stall a long one. Plain functions run to the end as before.

A job that yields `Open` can take more requests of its key at that step (continuous batching): requests of
that key that are ready to start are sent into it (``steps.send(payloads)``) instead of forming a batch of their
own, up to ``max_batch_size`` rows in all, and it returns their results after its own, in the order they were
sent. The job then runs next, so a joiner starts no later than a batch of its own would have; it continues
with the model time of the least-served job (its old rows do not jump ahead of other groups' jobs, its new
ones are not made to wait for the old rows' time).

A job may also yield `Finished` with the results of some of its requests (by their place: its first requests,
then its joiners in the order sent): their callers get them at once, not when the job's longest request ends.

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
from collections.abc import Callable, Generator, Hashable, Sequence
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


@dataclass(frozen=True)
class Open:
    """What a job yields at a step where it can take more requests of its key: it is running ``rows`` rows."""

    rows: int


@dataclass(frozen=True)
class Finished:
    """What a job yields when some of its requests are done before it: ``results`` by each request's place in the
    job (its first requests, then its joiners in the order they were sent). Its return value still holds them."""

    results: dict[int, Any]


@dataclass
class _Job:
    """A batch in progress: its requests, its steps, and the model time it has had so far."""

    batch: list[_Request]
    steps: Generator[Any, Any, Sequence[Any]]
    last: float  # monotonic time its latest step ended (or it started)
    used: float = 0.0
    key: Hashable = None
    room: int = 0  # requests it can take at its next step (its last step yielded `Open`)
    joining: list[_Request] = field(default_factory=list)  # sent into it at its next step


def next_job(jobs: Sequence[_Job], now: float, starve: float, current: _Job | None = None, keep: float = 0.0) -> _Job:
    """The job to run next: the one that has waited ``starve`` seconds or more the longest; else the one with the
    least model time so far (the first of equals: the oldest), except that the ``current`` job goes on unless
    that one has had ``keep`` seconds less than it: a short job that has caught up with a long one finishes
    instead of taking turns with it."""
    starved = [j for j in jobs if now - j.last >= starve]
    if starved:
        return min(starved, key=lambda j: j.last)
    best = min(jobs, key=lambda j: j.used)
    if best.used == 0.0:  # a job that has not run yet starts now: it has caught up with nothing
        return best
    if current is not None and current in jobs and best.used > current.used - keep:
        return current
    return best


@dataclass
class BatchStats:
    """What the worker did: ``batches`` runs for ``requests`` payloads (``joined`` of them joined a batch in
    progress); ``largest`` batch seen (joiners included)."""

    batches: int = 0
    requests: int = 0
    largest: int = 0
    joined: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.requests / self.batches if self.batches else 0.0


class BatchWorker:
    """Runs ``run(key, payloads) -> results`` on one daemon thread, merging requests with equal keys.

    Batches are formed oldest request first; a batch holds only requests of the oldest request's group,
    in arrival order, at most ``max_batch_size`` of them. Jobs (see the module docstring) share the thread.

    Args:
        run: called on the worker thread with a group key and a list of payloads; returns one result per
            payload, in order, or is a generator function that yields between steps and returns them. If it
            raises, every request of that batch gets the exception.
        max_batch_size: the most payloads per call of ``run``.
        wait_ms: after the oldest waiting request arrived, how long to wait for more of its group.
        name: the worker thread's name (shows in debuggers and thread dumps).
        max_jobs: the most jobs in progress at once (each holds its own memory: a model's KV cache); more
            requests wait, and merge into larger batches meanwhile.
        slice_ms: how long a job runs before the worker chooses again (a new request ends a slice early); jobs
            that would each finish within a slice then run one after the other, not step for step.
        starve_ms: a job that has waited this long runs next.
        busy_wait_ms: while jobs are in progress, how long the oldest waiting request waits for more of its group
            (at least ``wait_ms``). The thread is busy meanwhile, so waiting costs little, and a batch that starts
            with few rows runs as many decoding steps as a full one: callers that each finished a batch send
            their next requests over some milliseconds (HotPotQA's program retrieves passages between calls),
            and a 5 ms wait cut 24 of them into batches of 5 (250 ms: 234 → 188 s on 24 HotPotQA questions,
            benchmarks/hotpot_engine.py). 0 by default: a server's small request beside a long one would wait
            that long before it starts.

    Raises:
        ConfigError: ``max_batch_size`` or ``max_jobs`` < 1, or a negative time.
    """

    def __init__(
        self,
        run: Callable[[Hashable, list[Any]], Sequence[Any]],
        *,
        max_batch_size: int = 16,
        wait_ms: float = 5.0,
        name: str = "cotune-batch-worker",
        max_jobs: int = 4,
        slice_ms: float = 500.0,
        starve_ms: float = 2000.0,
        busy_wait_ms: float = 0.0,
    ):
        if max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_jobs < 1:
            raise ConfigError(f"max_jobs must be >= 1, got {max_jobs}")
        if wait_ms < 0:
            raise ConfigError(f"batch wait must be >= 0 ms, got {wait_ms}")
        if slice_ms < 0 or starve_ms < 0 or busy_wait_ms < 0:
            raise ConfigError(
                f"slice_ms, starve_ms and busy_wait_ms must be >= 0, got {slice_ms}, {starve_ms} and {busy_wait_ms}"
            )
        self._run = run
        self.max_batch_size, self.max_jobs = max_batch_size, max_jobs
        self.slice, self.starve = slice_ms / 1000.0, starve_ms / 1000.0
        self._current: _Job | None = None  # the job the worker ran last
        self.wait = wait_ms / 1000.0
        self.busy_wait = max(wait_ms, busy_wait_ms) / 1000.0
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
        jobs: list[_Job] = []
        stopping = False
        while pending or jobs or not stopping:
            if not pending and not jobs:
                item = self._queue.get()
                if item is _STOP:
                    break
                pending.append(item)
            # With jobs in progress nothing waits here: a group not ready yet is looked at again after a slice.
            stopping = (self._drain(pending) if jobs else self._gather(pending)) or stopping
            pending = self._join(pending, jobs)
            while pending and len(jobs) < self.max_jobs and (not jobs or self._ready(pending, self.busy_wait)):
                key = pending[0].key
                batch = [r for r in pending if r.key == key][: self.max_batch_size]
                taken = {id(r) for r in batch}
                pending = [r for r in pending if id(r) not in taken]
                job = self._start(key, batch)
                if job is None:  # a plain batch ran to its end: gather what came meanwhile before the next
                    break
                jobs.append(job)
            if jobs:
                # A slice ends early when a waiting group may start or join, so it does not wait a whole slice.
                times = [pending[0].arrived] if pending and len(jobs) < self.max_jobs else []
                open_keys = {j.key for j in jobs if j.room > 0}
                times += [r.arrived for r in pending if r.key in open_keys][:1]
                self._advance(jobs, min(times) + self.busy_wait if times else None, pending)

    def _join(self, pending: list[_Request], jobs: list[_Job]) -> list[_Request]:
        """Move the ready requests of each open job's key from ``pending`` to its ``joining``; returns the rest.

        Ready as a new batch would be: the oldest of them has waited ``busy_wait``, or they fill the job's room.
        """
        now = time.monotonic()
        for job in jobs:
            if job.room <= 0 or job.joining:
                continue
            mine = [r for r in pending if r.key == job.key]
            if not mine or (len(mine) < job.room and now < mine[0].arrived + self.busy_wait):
                continue
            taken = {id(r) for r in mine[: job.room]}
            pending = [r for r in pending if id(r) not in taken]
            job.joining = [r for r in mine[: job.room] if r.future.set_running_or_notify_cancel()]
        return pending

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

    def _drain(self, pending: list[_Request]) -> bool:
        """Move every queued request into ``pending`` without waiting; returns whether the stop marker was seen."""
        stop = False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return stop
            if item is _STOP:
                stop = True
            else:
                pending.append(item)

    def _ready(self, pending: list[_Request], wait: float) -> bool:
        """Whether the oldest pending request's group may start: full, or it has waited ``wait`` seconds."""
        key = pending[0].key
        full = sum(r.key == key for r in pending) >= self.max_batch_size
        return full or time.monotonic() >= pending[0].arrived + wait

    def _start(self, key: Hashable, batch: list[_Request]) -> _Job | None:
        """Run ``batch`` (a plain function: to the end, here) or start it as a job."""
        batch = [r for r in batch if r.future.set_running_or_notify_cancel()]
        if not batch:
            return None
        try:
            out = self._run(key, [r.payload for r in batch])
        except BaseException as e:
            self._fail(batch, e)
            return None
        if isinstance(out, Generator):
            return _Job(batch, out, time.monotonic(), key=key)
        self._finish(batch, out)
        return None

    def _advance(self, jobs: list[_Job], ready_at: float | None, pending: Sequence[_Request] = ()) -> None:
        """Run one job (one with joiners first, else `next_job`) for a slice, or until a new request arrives or
        ``ready_at``, or it opens to joiners (``pending`` holds some of its key)."""
        t0 = time.monotonic()
        job = next((j for j in jobs if j.joining), None)
        if job is not None:
            job.used = min(j.used for j in jobs)
        else:
            job = next_job(jobs, t0, self.starve, self._current, keep=self.slice)
        self._current = job
        end = t0 + self.slice if ready_at is None else min(t0 + self.slice, ready_at)
        waiting = any(r.key == job.key for r in pending)
        while True:
            t = time.monotonic()
            joining, job.joining = job.joining, []
            job.batch.extend(joining)  # before the step: if it fails, the joiners get its error too
            self.stats.joined += len(joining)
            try:
                out = job.steps.send([r.payload for r in joining]) if joining else next(job.steps)
            except StopIteration as done:
                jobs.remove(job)
                self._finish(job.batch, done.value)
                return
            except BaseException as e:
                jobs.remove(job)
                self._fail(job.batch, e)
                return
            job.last = time.monotonic()
            job.used += job.last - t
            if isinstance(out, Finished):
                for i, result in out.results.items():
                    if not job.batch[i].future.done():
                        job.batch[i].future.set_result(result)
            opened = isinstance(out, Open) and job.room <= 0
            job.room = self.max_batch_size - out.rows if isinstance(out, Open) else 0
            if job.last >= end or not self._queue.empty() or (opened and job.room > 0 and waiting):
                return

    def _fail(self, batch: list[_Request], error: BaseException) -> None:
        # Every failure must reach the callers, or their threads wait forever.
        self._count(batch)
        for r in batch:
            if not r.future.done():  # a request done early (`Finished`) keeps its result
                r.future.set_exception(error)
        if not isinstance(error, Exception):
            raise error

    def _finish(self, batch: list[_Request], out: Sequence[Any]) -> None:
        try:
            results = list(out)
            if len(results) != len(batch):
                raise LMError(f"batch function returned {len(results)} results for {len(batch)} requests")
        except BaseException as e:
            self._fail(batch, e)
            return
        self._count(batch)
        for r, result in zip(batch, results, strict=True):
            if not r.future.done():
                r.future.set_result(result)

    def _count(self, batch: list[_Request]) -> None:
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
