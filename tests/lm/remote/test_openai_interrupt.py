"""Ctrl-C during a batch of requests to a server: the interrupt is raised at once, not after the requests
in flight wait out their read timeouts."""

from __future__ import annotations

import signal
import sys
import threading
import time

import httpx
import pytest

from cotune.lm.remote.openai_compat import OpenAICompatible


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handling for the test's length: what a user's process has (the CLI's handler raises
    the same way), whatever handler an earlier test in this process left installed."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.skipif(sys.platform == "win32", reason="pthread_kill is POSIX")
def test_ctrl_c_does_not_wait_for_the_requests_in_flight(python_ctrl_c):
    release = threading.Event()
    arrived = threading.Semaphore(0)

    def hang(request):
        arrived.release()
        release.wait(30)  # a slow server: an answer only after the test ends
        return httpx.Response(200, json={"choices": [{"message": {"content": "late"}}]})

    lm = OpenAICompatible("m", cache=False, transport=httpx.MockTransport(hang), timeout=60)
    main = threading.main_thread().ident

    def ctrl_c():
        for _ in range(2):
            arrived.acquire(timeout=10)  # both requests are in flight
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=ctrl_c, daemon=True).start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            lm.generate([[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]])
        seconds = time.monotonic() - t0
    finally:
        release.set()
    assert seconds < 5  # before: 30 s, until the stub let the requests go
