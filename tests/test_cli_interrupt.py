"""Ctrl-C while HTTP calls are in flight: `cotune` stops within seconds (not after the requests' read
timeouts), keeps the finished rows, and prints no traceback, also after a second Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cotune.lm.remote.openai_compat import OpenAICompatible
from cotune.program.saved import save_program
from cotune.tasks import load_task

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")

FAST = 5  # the stub answers this many requests at once; every later one hangs for a minute


class SlowServer:
    """An OpenAI-compatible stub on 127.0.0.1: the first FAST requests are answered, the rest hang."""

    def __init__(self):
        self.answered = 0
        self.waiting = 0
        self.release = threading.Event()
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                with lock:
                    fast = server.answered < FAST
                    if fast:
                        server.answered += 1
                    else:
                        server.waiting += 1
                if not fast:
                    server.release.wait(60)
                body = json.dumps({"choices": [{"message": {"role": "assistant",
                                                            "content": "Reasoning: small.\nSpecies: setosa"}}],
                                   "usage": {"prompt_tokens": 10, "completion_tokens": 5}}).encode()  # fmt: skip
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client is gone

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def slow_server():
    server = SlowServer()
    yield server
    server.close()


def start_eval(tmp_path, server):
    program = load_task("iris").program().bind(OpenAICompatible("stub", base_url=server.url, cache=False))
    path = save_program(program, tmp_path / "program.json", task="iris")
    out = tmp_path / "rows.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cotune.cli import main; main()", "eval", "--program", str(path),
         "--out", str(out), "--threads", "4", "--no-cache"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while server.waiting < 4 and time.monotonic() < deadline:  # FAST rows finished, 4 requests in flight
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    assert server.waiting >= 4, "the eval never got its requests in flight"
    time.sleep(0.5)  # the finished rows reach the main thread
    return proc, out


def stop(proc, *, signals):
    t0 = time.monotonic()
    for i in range(signals):
        if i:
            time.sleep(0.2)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    return time.monotonic() - t0, stderr


def test_ctrl_c_with_requests_in_flight_stops_at_once_and_keeps_the_finished_rows(tmp_path, slow_server):
    proc, out = start_eval(tmp_path, slow_server)
    seconds, stderr = stop(proc, signals=1)
    # without the fix the process waits for its in-flight requests: the stub holds them for 60 s
    assert seconds < 5, (seconds, stderr)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr, stderr
    saved = json.loads(out.read_text())
    assert saved["n"] == FAST and [r["prediction"]["species"] for r in saved["rows"]] == ["setosa"] * FAST


def test_a_second_ctrl_c_prints_no_traceback(tmp_path, slow_server):
    proc, _ = start_eval(tmp_path, slow_server)
    seconds, stderr = stop(proc, signals=2)
    assert seconds < 5, (seconds, stderr)
    assert proc.returncode in (130, -signal.SIGINT), stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


def test_main_run_in_process_puts_the_ctrl_c_handler_back(monkeypatch):
    import signal

    import cotune.cli  # noqa: F401

    cli = sys.modules["cotune.cli.app"]  # the package's `app` attribute is the Typer app itself
    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(cli, "app", lambda **kw: None)
    cli.main()
    assert signal.getsignal(signal.SIGINT) is before
