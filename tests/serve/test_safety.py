"""Findings 13-16 (issue 12): `cotune serve` checks who calls it, limits what a request may cost, refuses
browsers, and caches only requests whose answer is determined."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from cotune.errors import ConfigError
from cotune.lm import FakeLM, RequestCache
from cotune.serve.policy import ServerLimits
from cotune.serve.server import build_server, start_server

GOOD = {"model": "toy", "messages": [{"role": "user", "content": "hi"}]}


def post(url, body=GOOD, **kw):
    return httpx.post(url + "/chat/completions", json=body, timeout=10, **kw)


# -- 13: authentication ----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_binding_beyond_loopback_needs_an_api_key(host, monkeypatch):
    monkeypatch.delenv("COTUNE_SERVER_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=f"binding '{host}' exposes the model.*--api-key"):
        build_server(FakeLM(["x"]), host, 0)


def test_the_key_is_checked_on_every_request():
    with start_server(FakeLM(["Answer: 4"]), model_name="toy", api_key="s3cret") as srv:
        assert post(srv.url).status_code == 401
        assert post(srv.url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(srv.url + "/models").status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert post(srv.url, headers=ok).status_code == 200
        assert httpx.get(srv.url + "/models", headers=ok).status_code == 200


def test_all_interfaces_are_reported_as_such(monkeypatch):
    monkeypatch.setenv("COTUNE_SERVER_API_KEY", "k")
    events = []
    with start_server(FakeLM(["x"]), "0.0.0.0", 0, events=events.append) as srv:
        start = next(e for e in events if e.name == "server.start")
        assert start.fields["bind"] == f"0.0.0.0:{srv.port}" and start.fields["api_key"] is True


# -- 14: limits ------------------------------------------------------------------------------------------


def test_max_tokens_is_capped():
    fake = FakeLM(["x"])
    with start_server(fake, model_name="toy", limits=ServerLimits(max_tokens=512)) as srv:
        r = post(srv.url, {**GOOD, "max_tokens": 10**12})
        assert r.status_code == 400 and "at most 512" in r.json()["error"]["message"]
        assert post(srv.url, {**GOOD, "max_tokens": 512}).status_code == 200
    assert len(fake.calls) == 1


def raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                if len(rest) >= length:
                    break
        return b"".join(chunks)


@pytest.mark.parametrize(
    "body, length, status",
    [(b"[" * 100_000, None, 400), (b"{}", "\u00b2", 400), (b"{}", "-1", 400), (b"{}", "99999999999", 413)],
)
def test_malformed_requests_are_400_not_500(body, length, status):
    with start_server(FakeLM(["x"]), model_name="toy") as srv:
        length = str(len(body)) if length is None else length
        request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
        ).encode()
        answer = raw(srv.port, request + body)
    assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer[:200]


def blocking_lm():
    started, release = threading.Event(), threading.Event()

    def respond(messages):
        started.set()
        release.wait(10)
        return "Answer: late"

    return FakeLM(respond), started, release


def test_requests_in_progress_are_capped():
    lm, started, release = blocking_lm()
    with start_server(lm, model_name="toy", limits=ServerLimits(max_concurrent=1)) as srv:
        first = threading.Thread(target=post, args=(srv.url,))
        first.start()
        assert started.wait(10)
        busy = post(srv.url)
        release.set()
        first.join()
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"


def test_a_generation_past_the_deadline_is_504():
    lm, started, release = blocking_lm()
    with start_server(lm, model_name="toy", limits=ServerLimits(request_timeout=0.2)) as srv:
        r = post(srv.url)
        release.set()
    assert r.status_code == 504 and "limit of 0.2 s" in r.json()["error"]["message"]


def test_open_connections_are_capped():
    with start_server(FakeLM(["x"]), model_name="toy", limits=ServerLimits(max_connections=2)) as srv:
        # Connections still waiting for their heads would give their places up (tests/serve/test_connections.py).
        idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(2)]
        for s in idle:
            s.sendall(
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
                "Content-Type: application/json\r\nContent-Length: 9\r\n\r\n".encode()
            )
        time.sleep(0.3)  # both heads read: both wait for their bodies
        try:
            answer = raw(srv.port, f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n".encode())
        finally:
            for s in idle:
                s.close()
    assert answer.startswith(b"HTTP/1.1 503")


# -- 15: browsers ----------------------------------------------------------------------------------------


def test_a_web_page_cannot_drive_the_server():
    fake = FakeLM(["x"])
    with start_server(fake, model_name="toy") as srv:
        body = json.dumps(GOOD)
        plain = httpx.post(srv.url + "/chat/completions", content=body, headers={"Content-Type": "text/plain"})
        cross = post(srv.url, headers={"Origin": "https://evil.example"})
        rebind = post(srv.url, headers={"Host": f"evil.example:{srv.port}"})
    assert (plain.status_code, cross.status_code, rebind.status_code) == (415, 403, 403)
    assert fake.calls == []


def test_allowed_origins_are_served():
    with start_server(FakeLM(["x"]), model_name="toy", allowed_origins=["http://localhost:3000"]) as srv:
        assert post(srv.url, headers={"Origin": "http://localhost:3000"}).status_code == 200


# -- 16: what is cached ----------------------------------------------------------------------------------


def test_only_determined_requests_are_cached(tmp_path):
    counter = iter(range(1000))
    fake = FakeLM(lambda messages: f"Answer: {next(counter)}", cache=RequestCache(tmp_path / "c.sqlite"))

    def text(**fields):
        return post(srv.url, {**GOOD, **fields}).json()["choices"][0]["message"]["content"]

    with start_server(fake, model_name="toy") as srv:
        assert text(temperature=0) == text(temperature=0)  # greedy: one answer, cached
        assert text(temperature=1.0) != text(temperature=1.0)  # seedless samples: each one new
        assert text(temperature=1.0, seed=3) == text(temperature=1.0, seed=3)  # seeded: repeatable
    assert len(fake.calls) == 1 + 2 + 1
