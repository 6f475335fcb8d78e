"""`cotune serve` against slow and malformed clients: a deadline on the whole request head, a place for a
client with the key however many clients trickle bytes without one, and HTTP framing refused rather than
guessed (one Content-Length, no Transfer-Encoding, a late body is 408), without leaking error text."""

from __future__ import annotations

import logging
import select
import socket
import time

import httpx
import pytest

from cotune.errors import ConfigError
from cotune.lm import FakeLM
from cotune.serve.policy import ServerLimits
from cotune.serve.server import build_server, start_server

GOOD = b'{"model": "toy", "messages": [{"role": "user", "content": "hi"}]}'
KEY = {"Authorization": "Bearer s3cret"}


def head(port: int, *lines: str) -> bytes:
    fields = [f"Host: 127.0.0.1:{port}", "Content-Type: application/json", *lines]
    return ("POST /v1/chat/completions HTTP/1.1\r\n" + "".join(f"{f}\r\n" for f in fields) + "\r\n").encode()


def answer_of(sock: socket.socket, limit_s: float = 10.0) -> bytes:
    """What the server sends until it closes the connection (or ``limit_s`` passes)."""
    sock.settimeout(limit_s)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def trickle(port: int) -> socket.socket:
    """A connection that has sent the start of a request head, and no key."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return sock


def closed_within(sock: socket.socket, seconds: float, every: float = 0.2) -> float | None:
    """Send a byte every ``every`` s; the seconds until the server closed the connection, or None."""
    t0 = time.monotonic()
    sock.settimeout(every)
    while time.monotonic() - t0 < seconds:
        try:
            sock.sendall(b"X")
            if sock.recv(1024) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - t0
    return None


# -- 11: slow clients before authentication ---------------------------------------------------------------


def test_a_request_head_trickling_in_is_cut_at_its_deadline():
    # Each byte comes well within the per-read timeout; the head as a whole does not.
    limits = ServerLimits(head_timeout=1.0, read_timeout=30.0)
    with start_server(FakeLM(["x"]), model_name="toy", limits=limits) as srv:
        sock = trickle(srv.port)
        try:
            cut = closed_within(sock, seconds=6.0)
        finally:
            sock.close()
    assert cut is not None and cut < 4.0


@pytest.mark.parametrize("tricklers, capacity", [(5, 5), (128, 128)])
def test_clients_without_the_key_cannot_lock_out_one_with_it(tricklers, capacity):
    limits = ServerLimits(max_connections=capacity)
    with start_server(FakeLM(["Answer: 4"]), model_name="toy", api_key="s3cret", limits=limits) as srv:
        t0 = time.monotonic()
        held = [trickle(srv.port) for _ in range(tricklers)]
        try:
            time.sleep(0.2)  # every one of them has its place
            r = httpx.post(
                srv.url + "/chat/completions",
                content=GOOD,
                timeout=30,
                headers={**KEY, "Content-Type": "application/json"},
            )
            seconds = time.monotonic() - t0
        finally:
            for sock in held:
                sock.close()
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Answer: 4"
    # A listen backlog of 5 dropped most of a burst of connections, so they (and the key's) got in only 20 s later.
    assert seconds < 10


def test_a_caller_without_the_key_keeps_no_connection():
    with start_server(FakeLM(["x"]), model_name="toy", api_key="s3cret") as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            t0 = time.monotonic()
            sock.sendall(f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n\r\n".encode())
            answer = answer_of(sock, limit_s=5)  # returns early only if the server closes the connection
            seconds = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 401") and b"Connection: close" in answer and seconds < 3


def test_requests_past_their_heads_are_not_displaced():
    limits = ServerLimits(max_connections=1, read_timeout=5.0)
    with start_server(FakeLM(["x"]), model_name="toy", limits=limits) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sending:
            sending.sendall(head(srv.port, "Content-Length: 100"))  # its body is on the way
            time.sleep(0.3)
            r = httpx.get(srv.url + "/models", timeout=10)
    assert r.status_code == 503  # refused, rather than cutting a request already past its head


# -- 12: HTTP framing and errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", [" ", "  \t", "two words", "caf\u00e9", "line\nbreak"])
def test_api_keys_a_client_cannot_send_are_refused(key):
    with pytest.raises(ConfigError, match="API key (is blank|has a space)"):
        build_server(FakeLM(["x"]), "127.0.0.1", 0, api_key=key)


def test_a_blank_key_in_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv("COTUNE_SERVER_API_KEY", " ")
    with pytest.raises(ConfigError, match="API key is blank"):
        build_server(FakeLM(["x"]), "0.0.0.0", 0)


@pytest.mark.parametrize(
    "lines, status",
    [
        (["Content-Length: 2", "Content-Length: 200"], 400),
        (["Content-Length: 2", "Content-Length: 2"], 400),
        (["Content-Length: 2", "Transfer-Encoding: chunked"], 400),
    ],
)
def test_ambiguous_framing_is_refused(lines, status):
    fake = FakeLM(["x"])
    with start_server(fake, model_name="toy") as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(head(srv.port, *lines) + b"{}")
            answer = answer_of(sock)
    assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer[:200]
    assert b"Content-Length" in answer.partition(b"\r\n\r\n")[2] or b"Transfer-Encoding" in answer
    assert fake.calls == []


def test_a_body_shorter_than_announced_is_408_at_the_deadline():
    limits = ServerLimits(read_timeout=1.0)
    with start_server(FakeLM(["x"]), model_name="toy", limits=limits) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            t0 = time.monotonic()
            sock.sendall(head(srv.port, "Content-Length: 100") + b'{"model": ')
            answer = answer_of(sock, limit_s=15)
            seconds = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"within 1 s" in answer and seconds < 5


def test_a_body_trickling_in_is_408_at_the_deadline():
    limits = ServerLimits(read_timeout=1.0)
    with start_server(FakeLM(["x"]), model_name="toy", limits=limits) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(head(srv.port, "Content-Length: 1000"))
            t0 = time.monotonic()
            for _ in range(25):  # a byte every 0.2 s, never idle for a whole read timeout, until the server answers
                if select.select([sock], [], [], 0.2)[0]:
                    break
                sock.sendall(b" ")
            answer = answer_of(sock, limit_s=5)
            seconds = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert seconds < 5.5


def test_a_failure_inside_the_server_is_500_without_its_text(caplog):
    def failing(messages):
        raise RuntimeError("secret path /home/alice/model.bin")

    with caplog.at_level(logging.ERROR, logger="cotune"), start_server(FakeLM(failing), model_name="toy") as srv:
        r = httpx.post(srv.url + "/chat/completions", content=GOOD, headers={"Content-Type": "application/json"})
    message = r.json()["error"]["message"]
    assert r.status_code == 500 and "alice" not in r.text and "RuntimeError" not in r.text
    ref = message.split("error id ")[1].split(")")[0]
    assert ref in caplog.text and "secret path /home/alice/model.bin" in caplog.text  # the operator sees it
