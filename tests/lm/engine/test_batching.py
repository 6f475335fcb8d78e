"""BatchWorker: requests from many threads merged into batches, without a model."""

from __future__ import annotations

import threading
import time

import pytest

from cotune.errors import ConfigError, LMError
from cotune.lm.engine.batching import BatchWorker


class Recorder:
    """A batch function that records each batch; ``gate`` (if set) holds the first batch until released."""

    def __init__(self, gate: threading.Event | None = None):
        self.batches: list[tuple[object, list]] = []
        self.gate = gate
        self.started = threading.Event()

    def __call__(self, key, payloads):
        self.batches.append((key, list(payloads)))
        self.started.set()
        if self.gate is not None and len(self.batches) == 1:
            self.gate.wait(10)
        return [f"{key}:{p}" for p in payloads]


def wait_for_queue(worker: BatchWorker, n: int) -> None:
    deadline = time.monotonic() + 10
    while worker._queue.qsize() < n:
        assert time.monotonic() < deadline, "requests never reached the queue"
        time.sleep(0.001)


def test_results_come_back_in_order_and_split_at_max_batch_size():
    run = Recorder()
    worker = BatchWorker(run, max_batch_size=4, wait_ms=0)
    futures = worker.submit("k", list(range(10)))
    assert [f.result(5) for f in futures] == [f"k:{i}" for i in range(10)]
    assert [len(p) for _, p in run.batches] == [4, 4, 2]
    assert worker.stats.batches == 3 and worker.stats.requests == 10 and worker.stats.largest == 4
    worker.close()


def test_requests_from_threads_waiting_behind_a_batch_run_as_one():
    gate = threading.Event()
    run = Recorder(gate)
    worker = BatchWorker(run, max_batch_size=16, wait_ms=0)
    first = worker.submit("k", ["first"])
    assert run.started.wait(5)  # the worker is now busy with a batch of one
    results: dict[int, str] = {}

    def call(i: int) -> None:
        results[i] = worker.submit("k", [i])[0].result(10)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(7)]
    for t in threads:
        t.start()
    wait_for_queue(worker, 7)
    gate.set()
    for t in threads:
        t.join(10)
    assert first[0].result(5) == "k:first"
    assert results == {i: f"k:{i}" for i in range(7)}
    assert [len(p) for _, p in run.batches] == [1, 7]
    worker.close()


def test_the_wait_lets_stragglers_join_the_first_batch():
    run = Recorder()
    worker = BatchWorker(run, max_batch_size=8, wait_ms=2000)
    a = worker.submit("k", ["a"])
    b = worker.submit("k", ["b"])  # arrives well within the wait
    assert [a[0].result(10), b[0].result(10)] == ["k:a", "k:b"]
    assert [p for _, p in run.batches] == [["a", "b"]]
    worker.close()


def test_a_full_group_does_not_wait():
    run = Recorder()
    worker = BatchWorker(run, max_batch_size=2, wait_ms=60_000)
    futures = worker.submit("k", ["a", "b"])
    assert [f.result(10) for f in futures] == ["k:a", "k:b"]  # would time out if it waited a minute
    worker.close()


def test_groups_never_share_a_batch_and_the_oldest_goes_first():
    gate = threading.Event()
    run = Recorder(gate)
    worker = BatchWorker(run, max_batch_size=8, wait_ms=0)
    worker.submit("x", ["hold"])
    assert run.started.wait(5)
    futures = worker.submit("a", [1]) + worker.submit("b", [2]) + worker.submit("a", [3]) + worker.submit("b", [4])
    wait_for_queue(worker, 4)
    gate.set()
    assert [f.result(10) for f in futures] == ["a:1", "b:2", "a:3", "b:4"]
    assert run.batches[1:] == [("a", [1, 3]), ("b", [2, 4])]
    worker.close()


def test_an_exception_reaches_every_caller_of_that_batch_and_the_worker_survives():
    def run(key, payloads):
        if key == "bad":
            raise RuntimeError("boom")
        return payloads

    worker = BatchWorker(run, max_batch_size=4, wait_ms=0)
    futures = worker.submit("bad", [1, 2])
    for f in futures:
        with pytest.raises(RuntimeError, match="boom"):
            f.result(5)
    assert worker.submit("good", [3])[0].result(5) == 3
    worker.close()


def test_a_wrong_number_of_results_is_an_error_not_a_hang():
    worker = BatchWorker(lambda key, payloads: payloads[:1], max_batch_size=4, wait_ms=0)
    futures = worker.submit("k", [1, 2])
    with pytest.raises(LMError, match="returned 1 results for 2 requests"):
        futures[1].result(5)
    worker.close()


def test_close_finishes_queued_requests_then_refuses_new_ones():
    gate = threading.Event()
    run = Recorder(gate)
    worker = BatchWorker(run, max_batch_size=8, wait_ms=0)
    queued = worker.submit("k", ["a"]) + worker.submit("k", ["b"])
    assert run.started.wait(5)
    closer = threading.Thread(target=worker.close)
    closer.start()
    gate.set()
    closer.join(10)
    assert [f.result(0) for f in queued] == ["k:a", "k:b"]
    assert not worker._thread.is_alive()
    with pytest.raises(LMError, match="closed"):
        worker.submit("k", ["c"])
    worker.close()  # idempotent


@pytest.mark.parametrize("kwargs, bad", [({"max_batch_size": 0}, "max_batch_size"), ({"wait_ms": -1}, "wait")])
def test_bad_settings_are_refused(kwargs, bad):
    with pytest.raises(ConfigError, match=bad):
        BatchWorker(lambda k, p: p, **kwargs)
