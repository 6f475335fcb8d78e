"""BatchWorker jobs: batch functions that yield between steps share the worker thread, so a short batch
arriving behind a long one does not wait for all of it; without a model."""

from __future__ import annotations

import threading
import time

import pytest

from cotune.errors import ConfigError
from cotune.lm.engine.batching import BatchWorker, Finished, Open, _Job, next_job


class Stepper:
    """A generator batch function: key "long:N" or "short:N" takes N steps of ``step_s`` seconds each."""

    def __init__(self, step_s: float = 0.002):
        self.step_s = step_s
        self.log: list[str] = []  # the key of each step run, in order
        self.started = threading.Event()

    def __call__(self, key, payloads):
        for _ in range(int(key.split(":")[1])):
            self.started.set()
            time.sleep(self.step_s)
            self.log.append(key)
            yield
        return [f"{key}/{p}" for p in payloads]


def test_a_short_batch_behind_a_long_one_finishes_first():
    run = Stepper()
    worker = BatchWorker(run, wait_ms=0, slice_ms=5, busy_wait_ms=0)  # no waiting for more of its group
    long = worker.submit("long:400", ["a"])  # about 0.8 s of steps
    assert run.started.wait(5)
    short = worker.submit("short:3", ["b"])
    assert short[0].result(5) == "short:3/b"
    assert not long[0].done()  # it was not waited for
    assert long[0].result(10) == "long:400/a"
    # The short batch ran within a slice or two of arriving, not after the 400 steps.
    first_short = run.log.index("short:3")
    assert run.log[first_short:].count("long:400") > 300
    worker.close()


def test_the_job_with_the_least_model_time_runs_unless_one_waited_too_long():
    def job(used, last):
        return _Job(batch=[], steps=iter(()), last=last, used=used)

    long, short, newer = job(used=5.0, last=9.9), job(used=0.2, last=9.95), job(used=0.2, last=9.99)
    assert next_job([long, short, newer], now=10.0, starve=1.0) is short  # least time; the oldest of equals
    # A stream of short jobs would keep a long one waiting; after ``starve`` seconds it runs.
    long.last = 8.9
    assert next_job([long, short, newer], now=10.0, starve=1.0) is long


def test_a_job_that_caught_up_keeps_the_thread_for_a_slice_more():
    def job(used):
        return _Job(batch=[], steps=iter(()), last=10.0, used=used)

    long, short = job(used=0.8), job(used=1.0)  # the short one has caught up with the long one
    assert next_job([long, short], now=10.0, starve=5.0, current=short, keep=0.5) is short
    short.used = 1.4  # a slice past it: they take turns again
    assert next_job([long, short], now=10.0, starve=5.0, current=short, keep=0.5) is long
    assert next_job([long, short], now=10.0, starve=5.0, current=None, keep=0.5) is long


def test_a_job_that_has_not_run_starts_before_a_young_current_one():
    def job(used):
        return _Job(batch=[], steps=iter(()), last=10.0, used=used)

    young, new = job(used=0.1), job(used=0.0)  # a long generation began 0.1 s ago; a small request arrives
    assert next_job([young, new], now=10.0, starve=5.0, current=young, keep=0.5) is new


def test_max_jobs_one_runs_batches_one_after_another():
    run = Stepper()
    worker = BatchWorker(run, wait_ms=0, max_jobs=1)
    long = worker.submit("long:50", ["a"])
    assert run.started.wait(5)
    short = worker.submit("short:2", ["b"])
    assert short[0].result(5) == "short:2/b" and long[0].done()
    assert run.log == ["long:50"] * 50 + ["short:2"] * 2
    worker.close()


def test_a_failing_step_fails_its_own_batch_only():
    def run(key, payloads):
        yield
        if key == "bad":
            raise RuntimeError("boom")
        yield
        return payloads

    worker = BatchWorker(run, wait_ms=0)
    bad, good = worker.submit("bad", [1, 2]), worker.submit("good", [3])
    for f in bad:
        with pytest.raises(RuntimeError, match="boom"):
            f.result(5)
    assert good[0].result(5) == 3
    assert worker.submit("good", [4])[0].result(5) == 4  # the worker goes on
    worker.close()


def test_close_finishes_jobs_in_progress():
    run = Stepper()
    worker = BatchWorker(run, wait_ms=0)
    futures = worker.submit("long:30", ["a"]) + worker.submit("short:2", ["b"])
    worker.close()
    assert [f.result(0) for f in futures] == ["long:30/a", "short:2/b"]


def test_requests_arriving_apart_while_a_job_runs_start_as_one_batch():
    # Callers send their next requests some milliseconds apart (work between calls); while the thread is busy
    # with another job, they wait for each other rather than starting as batches of one or two.
    run = Stepper(step_s=0.005)
    worker = BatchWorker(run, wait_ms=1, slice_ms=5, busy_wait_ms=400)
    long = worker.submit("long:100", ["a"])  # about 0.5 s of steps
    assert run.started.wait(5)
    futures = []
    for i in range(4):
        futures += worker.submit("short:2", [i])
        time.sleep(0.03)
    assert [f.result(5) for f in futures] == [f"short:2/{i}" for i in range(4)]
    assert long[0].result(10) == "long:100/a"
    assert worker.stats.batches == 2 and worker.stats.largest == 4
    worker.close()


def test_a_negative_busy_wait_is_refused():
    with pytest.raises(ConfigError, match="busy_wait_ms"):
        BatchWorker(lambda key, xs: xs, busy_wait_ms=-1)


class Joinable:
    """A generator batch function that takes joiners (continuous batching): each row runs ``steps`` steps of
    ``step_s`` seconds from when it joined; every step yields `Open` with the rows still running."""

    def __init__(self, steps: int, step_s: float = 0.002):
        self.steps, self.step_s = steps, step_s
        self.calls: list[list] = []  # the payloads each call started with
        self.joins: list[list] = []  # what was sent in, in order
        self.started = threading.Event()

    def __call__(self, key, payloads):
        self.calls.append(list(payloads))
        rows = list(payloads)
        left = [self.steps] * len(rows)
        while any(left):
            self.started.set()
            time.sleep(self.step_s)
            left = [max(0, n - 1) for n in left]
            sent = yield Open(sum(n > 0 for n in left))
            if sent:
                self.joins.append(list(sent))
                rows += sent
                left += [self.steps] * len(sent)
        return [f"{key}/{p}" for p in rows]


def test_requests_of_a_running_jobs_key_join_it():
    run = Joinable(steps=100)
    worker = BatchWorker(run, wait_ms=0, busy_wait_ms=0)
    first = worker.submit("k", ["a"])
    assert run.started.wait(5)
    joined = worker.submit("k", ["b", "c"])
    assert [f.result(5) for f in joined] == ["k/b", "k/c"]
    assert first[0].result(5) == "k/a"
    assert run.calls == [["a"]] and run.joins == [["b", "c"]]  # one batch; the others were sent into it
    assert worker.stats.batches == 1 and worker.stats.joined == 2 and worker.stats.largest == 3
    worker.close()


def test_a_full_job_or_one_of_another_key_takes_no_joiners():
    run = Joinable(steps=60)
    worker = BatchWorker(run, wait_ms=0, busy_wait_ms=0, max_batch_size=2)
    running = worker.submit("k", ["a", "b"])  # full: room for none
    assert run.started.wait(5)
    other = worker.submit("other", ["x"])
    more = worker.submit("k", ["c"])
    assert more[0].result(5) == "k/c" and other[0].result(5) == "other/x"
    assert [f.result(5) for f in running] == ["k/a", "k/b"]
    assert sorted(map(tuple, run.calls)) == [("a", "b"), ("c",), ("x",)] and run.joins == []
    worker.close()


def test_a_job_that_does_not_yield_open_takes_no_joiners():
    run = Stepper()
    worker = BatchWorker(run, wait_ms=0, busy_wait_ms=0)
    first = worker.submit("long:100", ["a"])
    assert run.started.wait(5)
    second = worker.submit("long:100", ["b"])
    assert second[0].result(5) == "long:100/b" and first[0].result(5) == "long:100/a"
    assert worker.stats.batches == 2 and worker.stats.joined == 0
    worker.close()


def test_joiners_get_the_error_of_a_step_that_fails_after_they_joined():
    def run(key, payloads):
        sent = yield Open(len(payloads))
        while not sent:
            time.sleep(0.002)
            sent = yield Open(len(payloads))
        raise RuntimeError("boom")

    worker = BatchWorker(run, wait_ms=0, busy_wait_ms=0)
    first = worker.submit("k", ["a"])
    time.sleep(0.02)
    joined = worker.submit("k", ["b"])
    for f in first + joined:
        with pytest.raises(RuntimeError, match="boom"):
            f.result(5)
    worker.close()


def test_a_request_a_job_finishes_early_gets_its_result_at_once_a_joiner_too():
    release = threading.Event()

    def run(key, payloads):
        rows = list(payloads)
        yield Finished({1: "early/b"})
        sent = None
        while not sent:
            time.sleep(0.002)
            sent = yield Open(len(rows))
        rows += sent
        yield Finished({len(payloads): f"early/{sent[0]}"})  # the first joiner
        release.wait(5)
        return [f"{key}/{p}" for p in rows]

    worker = BatchWorker(run, wait_ms=50, busy_wait_ms=0)
    first = worker.submit("k", ["a", "b"])
    assert first[1].result(5) == "early/b"
    joined = worker.submit("k", ["c"])
    assert joined[0].result(5) == "early/c"
    assert not first[0].done()  # the job goes on
    release.set()
    assert [f.result(5) for f in first + joined] == ["k/a", "early/b", "early/c"]
    assert (worker.stats.batches, worker.stats.requests, worker.stats.joined) == (1, 3, 1)
    worker.close()


def test_a_request_finished_early_keeps_its_result_when_the_job_then_fails():
    def run(key, payloads):
        yield Finished({0: "early"})
        raise RuntimeError("boom")

    worker = BatchWorker(run, wait_ms=50)
    futures = worker.submit("k", ["a", "b"])
    assert futures[0].result(5) == "early"
    with pytest.raises(RuntimeError, match="boom"):
        futures[1].result(5)
    worker.close()
