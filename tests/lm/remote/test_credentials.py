"""Findings 1 and 2 (issue 12): a saved program never redirects the user's API key, and credentials in a
base_url are never written to program files or error messages."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import cotune as ct
from cotune.errors import LMConnectionError
from cotune.lm.registry import from_spec
from cotune.lm.remote.credentials import redact_url
from cotune.lm.remote.openai_compat import OpenAICompatible

SECRET = "sk-test-do-not-send"


@pytest.fixture
def recorder():
    """A chat-completions stub on 127.0.0.1 that records the Authorization header of every request."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers.get("Authorization"))
            blob = json.dumps({"choices": [{"message": {"content": "Answer: 4"}, "finish_reason": "stop"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    server.shutdown()
    server.server_close()


def ask(lm):
    return lm([{"role": "user", "content": "2+2?"}]).text


def test_a_saved_spec_does_not_get_the_users_key(recorder, monkeypatch):
    url, seen = recorder
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    lm = from_spec({"backend": "openai", "model": "m", "base_url": url, "adapter": None}, cache=False)
    assert ask(lm) == "Answer: 4"
    assert seen == [None]


def test_the_key_goes_where_the_user_pointed_it(recorder, monkeypatch):
    url, seen = recorder
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", url + "/")  # the endpoint the user chose for this key
    ask(from_spec({"backend": "openai", "model": "m", "base_url": url, "adapter": None}, cache=False))
    assert seen == [f"Bearer {SECRET}"]


def test_an_explicit_key_is_sent(recorder):
    url, seen = recorder
    ask(OpenAICompatible("m", base_url=url, api_key=SECRET, cache=False))
    assert seen == [f"Bearer {SECRET}"]


@pytest.mark.parametrize(
    "url, sent",
    [
        ("http://10.0.0.5:8000/v1", False),
        ("http://example.com/v1", False),
        ("https://example.com/v1", True),
        ("http://127.0.0.1:8000/v1", True),
        ("http://localhost:8000/v1", True),
        ("http://[::1]:8000/v1", True),
    ],
)
def test_the_environment_key_never_travels_over_plain_http_to_another_machine(url, sent, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    lm = OpenAICompatible("m", base_url=url, cache=False)
    assert ("Authorization" in lm._pool.headers) is sent


@pytest.mark.parametrize(
    "url, shown",
    [
        ("http://user:pa55@host:8000/v1", "http://host:8000/v1"),
        ("https://tok@h/v1", "https://h/v1"),
        ("http://h/v1?api_key=pa55&x=1", "http://h/v1?api_key=***&x=1"),
        ("http://h/v1", "http://h/v1"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_credentials_in_a_base_url_are_never_written_or_shown(tmp_path):
    lm = OpenAICompatible("m", base_url="http://user:pa55@127.0.0.1:9/v1", cache=False, max_retries=0, timeout=2)
    assert "pa55" not in json.dumps(lm.spec()) and "pa55" not in repr(lm)

    program = ct.Predict("question -> answer").bind(lm)

    class QA(ct.Program):
        def __init__(self):
            self.answer = program

        def forward(self, question):
            return self.answer(question=question)

    path = QA().save(tmp_path / "program.json")
    assert "pa55" not in path.read_text() and "user" not in json.loads(path.read_text())["lm"]["base_url"]
    with pytest.raises(LMConnectionError) as info:
        ask(lm)
    assert "pa55" not in str(info.value) and "127.0.0.1:9" in str(info.value)
