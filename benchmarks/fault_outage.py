"""Outages for benchmarks/faults.py: a model server that goes away in the middle of a run, four ways.

cotune's own OpenAI-compatible server over a scripted Iris answerer sits behind `FaultyProxy`, which
forwards every request until the ``after``-th is answered, then for ``seconds`` answers each one as ``kind``
says: ``refused`` (nothing listens on the port), ``500``, ``503``, or ``timeout`` (the request is taken and
never answered). A run through it must fail the step it was in (an infrastructure failure, never a score),
and a resume once the server is back must give the score a healthy server gives.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

KINDS = ("refused", "500", "503", "timeout")
START_AFTER = 16  # requests answered before the outage: zero-shot's dev and test (12), then into the Π step


class FaultyProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` that fails for ``seconds`` after ``after`` requests."""

    def __init__(self, upstream: str, kind: str, seconds: float, after: int = START_AFTER):
        if kind not in KINDS:
            raise ValueError(f"unknown outage kind {kind!r}; valid: {', '.join(KINDS)}")
        self.upstream, self.kind, self.seconds, self.after = upstream.rstrip("/"), kind, seconds, after
        self.answered, self.down_from, self.lock = 0, None, threading.Lock()
        self.server = self._serve(0)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    # -- the outage window ------------------------------------------------------------------------------
    def down(self) -> bool:
        with self.lock:
            return self.down_from is not None and time.monotonic() - self.down_from < self.seconds

    def left_s(self) -> float:
        with self.lock:
            return 0.0 if self.down_from is None else max(0.0, self.seconds - (time.monotonic() - self.down_from))

    def _answered_one(self) -> None:
        with self.lock:
            self.answered += 1
            starts = self.answered == self.after
            if starts:
                self.down_from = time.monotonic()
        if starts and self.kind == "refused":  # nothing listens until the outage is over
            threading.Thread(target=self._refuse, daemon=True).start()

    def _refuse(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        time.sleep(self.left_s())
        self.server = self._serve(self.port)

    # -- HTTP -----------------------------------------------------------------------------------------
    def _serve(self, port: int) -> ThreadingHTTPServer:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, so a client cannot keep a connection from before the
            # outage and every request during a "refused" outage really finds the port closed.
            def do_GET(self) -> None:
                proxy._handle(self, None)

            def do_POST(self) -> None:
                proxy._handle(self, self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes | None) -> None:
        if self.down():
            if self.kind == "timeout":
                time.sleep(self.left_s() + 0.5)  # taken, never answered in time
                return
            status = 500 if self.kind == "500" else 503  # "refused": a request that came in as the port closed
            self._reply(handler, status, json.dumps({"error": {"message": f"scripted outage ({self.kind})"}}).encode())
            return
        request = urllib.request.Request(self.upstream + handler.path, data=body, method=handler.command)
        request.add_header("Content-Type", handler.headers.get("Content-Type") or "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, data = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        self._reply(handler, status, data)
        if body is not None:
            self._answered_one()

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass  # the client gave up (its read timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def iris_answer(messages: list[dict[str, str]]) -> str:
    """Right by petal length alone: setosa under 2.5 cm, else versicolor (so about 2/3 right)."""
    length = float(re.search(r"Petal Length: ([\d.]+)", messages[-1]["content"]).group(1))
    return f"Reasoning: petal length {length}.\nSpecies: {'setosa' if length < 2.5 else 'versicolor'}"


def outage(work: Path, kind: str, seconds: float) -> dict[str, Any]:
    """A healthy run for the true scores, a run through an outage of ``kind``, and its resume. The server's
    log is quiet meanwhile (the failures are the point) and as it was afterwards: tests run this in-process."""
    server_log = logging.getLogger("cotune.server")
    level = server_log.level
    server_log.setLevel(logging.CRITICAL)
    try:
        return _outage(work, kind, seconds)
    finally:
        server_log.setLevel(level)


def _outage(work: Path, kind: str, seconds: float) -> dict[str, Any]:
    from cotune.experiment.config import ExperimentConfig
    from cotune.experiment.runner import Runner
    from cotune.lm import FakeLM
    from cotune.lm.remote.openai_compat import OpenAICompatible
    from cotune.serve.server import start_server
    from cotune.tasks import load_task

    task = load_task("iris", train=10, dev=6, test=6)
    # A read timeout of a fifth of the outage: the client's attempts (one retry for a timeout, two for the
    # rest) are spent before the server is back, so the step fails rather than waiting the outage out.
    timeout = max(0.5, seconds / 5)

    def client(url: str) -> OpenAICompatible:
        return OpenAICompatible(
            "stub", base_url=url, cache=False, max_retries=2, backoff=0.2, timeout=timeout, constrained=False
        )

    def runner(name: str, url: str) -> Runner:
        cfg = ExperimentConfig.from_dict(
            {
                "task": "iris",
                "model": "stub",
                "strategies": ["p"],
                "seeds": [0],
                "out_dir": str(work),
                "name": name,
                "threads": 2,
                "inner_val_ratio": 0.5,
                "prompt": {"num_candidates": 2},
            }
        )
        return Runner(cfg, lm=client(url), task=task)

    def scores(run) -> dict[str, float]:
        return {n["strategy"]: n["test"]["score"] for n in run.nodes()}

    t0 = time.monotonic()
    with start_server(FakeLM(iris_answer), model_name="stub") as server:
        truth = scores(runner(f"outage-{kind}-reference", server.url).start())
        proxy = FaultyProxy(server.url.removesuffix("/v1"), kind, seconds)
        try:
            run = runner(f"outage-{kind}", proxy.url + "/v1").start()
            failures = run.results()["failures"]
            kept = scores(run)
            started = proxy.down_from is not None
            time.sleep(proxy.left_s() + 0.2)  # the server is back
            _, resumed = Runner.resume(run.path, lm=client(proxy.url + "/v1"), task=task)
            final = scores(resumed)
        finally:
            proxy.close()
    failed = [f for f in failures if f["kind"] == "infrastructure"]
    return {
        "kind": kind,
        "outage_s": seconds,
        "client_timeout_s": timeout,
        "outage_started": started,
        "started_after_requests": START_AFTER,
        "failures_during_outage": [{k: f[k] for k in ("strategy", "kind", "error")} for f in failures],
        "scores_kept_during_outage": kept,
        "scores_after_resume": final,
        "true_scores": truth,
        "step_failed_not_scored": started and bool(failed) and all(f["strategy"] not in kept for f in failed),
        "resumed_to_true_score": "p" in truth and final == truth,
        "seconds": round(time.monotonic() - t0, 1),
    }
