"""Running one request's generation for `cotune serve`, within the server's limits.

The request's thread waits; the work runs in a thread of its own: the output grammar is compiled there
(`cotune.serve.admission`: never on the model's thread), then the model is called. A free slot is needed
(else 503, with Retry-After) and the answer must come within ``request_timeout`` (else 504). A generation past
its deadline keeps its slot until it ends, so abandoned work still counts against the limit.
"""

from __future__ import annotations

import threading
from typing import Any

from cotune.errors import ConfigError
from cotune.lm.base import LM
from cotune.serve.admission import Admission
from cotune.serve.protocol import RequestError


class Runner:
    """Runs generations for one server: at most ``limits.max_concurrent`` at once, each within its deadline."""

    def __init__(self, admission: Admission):
        self.admission, self.limits = admission, admission.limits
        self._slots = threading.BoundedSemaphore(self.limits.max_concurrent)

    def generate(self, lm: LM, messages: list[dict[str, str]], overrides: dict[str, Any]) -> Any:
        """The completion of ``messages``.

        Raises:
            RequestError: 503 no free slot, 504 past the deadline, 400 a value the backend refuses.
            Exception: whatever the model raised (the server answers 500).
        """
        limits = self.limits
        if not self._slots.acquire(blocking=False):
            raise RequestError(
                503,
                f"the server is busy ({limits.max_concurrent} requests in progress); retry",
                headers={"Retry-After": "1"},
            )
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                self.admission.compile(lm, overrides)
                outcome["completion"] = lm(messages, **overrides)
            except BaseException as e:  # noqa: BLE001 - handed to the request's thread
                outcome["error"] = e
            finally:
                self._slots.release()
                done.set()

        threading.Thread(target=work, name="cotune-server-generate", daemon=True).start()
        if not done.wait(limits.request_timeout):
            raise RequestError(
                504, f"the generation took longer than the server's limit of {limits.request_timeout:g} s"
            )
        error = outcome.get("error")
        if isinstance(error, ConfigError):  # a value the backend refuses (e.g. max_tokens over its limit)
            raise RequestError(400, str(error)) from None
        if error is not None:
            raise error
        return outcome["completion"]
