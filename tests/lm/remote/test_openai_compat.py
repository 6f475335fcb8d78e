"""OpenAICompatible against cotune's own server over a FakeLM on 127.0.0.1, against scripted replies
through ``httpx.MockTransport`` (5xx, 429, 4xx: no socket needed to check what is sent and retried), and
against real sockets where the socket is the point (a server too slow to answer, nothing listening)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from cotune.errors import ConfigError, LMConnectionError, LMError
from cotune.lm import FakeLM, GenerationConfig, RequestCache
from cotune.lm.remote.openai_compat import OpenAICompatible, parse_retry_after
from cotune.serve.server import start_server


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def echo(messages):
    return "echo: " + messages[-1]["content"]


@pytest.fixture
def fake():
    return FakeLM(echo, name="fake")


@pytest.fixture
def server(fake):
    with start_server(fake, model_name="fake") as handle:
        yield handle


def client(url: str, model: str = "fake", **kwargs) -> OpenAICompatible:
    kwargs.setdefault("cache", False)
    kwargs.setdefault("backoff", 0.01)
    return OpenAICompatible(model, base_url=url, **kwargs)


# --- against cotune's server ------------------------------------------------------------------------


def test_text_tokens_and_finish_reason(server, fake):
    lm = client(server.url)
    c = lm(user("hello there"), max_tokens=7)
    assert c.text == "echo: hello there"
    # FakeLM counts whitespace words; the server passes its Completion's counts through.
    assert (c.prompt_tokens, c.completion_tokens) == (2, 3)
    assert c.finish_reason == "stop" and not c.cached and c.seconds > 0
    ((messages, config),) = fake.calls
    assert messages == user("hello there") and config.max_tokens == 7
    assert lm.usage.calls == 1 and lm.usage.prompt_tokens == 2


def test_sampling_parameters_reach_the_model(server, fake):
    lm = client(server.url, config=GenerationConfig(temperature=0.7, top_p=0.9, stop=("\n",)))
    lm(user("a"), rollout_id=3)
    ((_, config),) = fake.calls
    assert (config.temperature, config.top_p, config.stop) == (0.7, 0.9, ("\n",))
    assert config.rollout_id == 3  # seed on the wire, rollout id again on the server


def test_payload_seed_only_when_sampling():
    lm = OpenAICompatible("m", cache=False)
    assert "seed" not in lm.payload(user("x"), GenerationConfig(temperature=0.0, rollout_id=5))
    assert lm.payload(user("x"), GenerationConfig(temperature=0.5, rollout_id=5))["seed"] == 5
    assert "stop" not in lm.payload(user("x"), GenerationConfig())


def test_stop_is_applied_even_if_the_server_ignores_it(server):
    lm = client(server.url)
    # The server honours stop too; cutting on the client side must agree with it.
    assert lm(user("one two"), stop=("two",)).text == "echo: one "


def test_batch_keeps_order_when_replies_arrive_out_of_order():
    def slow_first(messages):
        i = int(messages[-1]["content"])
        time.sleep(0.02 * (8 - i))  # earlier prompts answer later
        return f"answer {i}"

    with start_server(FakeLM(slow_first, name="fake")) as srv:
        lm = client(srv.url, max_concurrency=8)
        out = lm.generate([user(str(i)) for i in range(8)])
    assert [c.text for c in out] == [f"answer {i}" for i in range(8)]


def test_requests_run_concurrently_up_to_max_concurrency():
    in_flight, peak, lock = 0, 0, threading.Lock()
    # Groups of 4 must be inside the model at once, or the barrier times out and the request fails.
    barrier = threading.Barrier(4, timeout=10)

    def gated(messages):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            barrier.wait()
        finally:
            with lock:
                in_flight -= 1
        return messages[-1]["content"]

    fake = FakeLM(gated, name="fake")
    with start_server(fake) as srv:
        lm = client(srv.url, max_concurrency=6, max_retries=0)
        out = lm.generate([user(str(i)) for i in range(16)])
    assert [c.text for c in out] == [str(i) for i in range(16)]
    assert len(fake.calls) == 16
    assert 4 <= peak <= 6


def test_cache_hit_is_not_sent_again(server, fake, tmp_path):
    lm = client(server.url, cache=RequestCache(tmp_path / "c.sqlite"))
    first = lm(user("same"))
    second = lm(user("same"))
    assert len(fake.calls) == 1
    assert second.cached and second.text == first.text
    lm(user("same"), temperature=0.5, rollout_id=1)  # another rollout is another request
    assert len(fake.calls) == 2
    assert lm.usage.cache_hits == 1


def test_cache_key_depends_on_server_and_adapter(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    # both servers say they run the same weights under "m": the URL still tells them apart
    listing = httpx.MockTransport(lambda request: httpx.Response(200, json={"data": [{"id": "m", "root": "/w"}]}))
    a = OpenAICompatible("m", base_url="http://127.0.0.1:1/v1", cache=cache, transport=listing)
    b = OpenAICompatible("m", base_url="http://127.0.0.1:2/v1", cache=cache, transport=listing)
    cfg = GenerationConfig()
    keys = {a.cache_key(user("x"), cfg), b.cache_key(user("x"), cfg), a.with_adapter("sql").cache_key(user("x"), cfg)}
    assert len(keys) == 3


def test_adapter_names_route_to_adapters():
    fake = FakeLM(lambda messages, adapter: f"adapter={adapter}", name="base-model")
    with start_server(fake, model_name="base", adapters={"sql": "/adapters/sql", "math": "/adapters/math"}) as srv:
        base = client(srv.url, "base")
        sql = base.with_adapter("sql")
        assert base([{"role": "user", "content": "q"}]).text == "adapter=None"
        assert sql(user("q")).text == "adapter=/adapters/sql"
        assert client(srv.url, "base", adapter="math")(user("q")).text == "adapter=/adapters/math"
        assert sql.with_adapter(None)(user("q")).text == "adapter=None"
    assert sql.spec() == {"backend": "openai", "model": "base", "base_url": srv.url, "adapter": "sql"}
    assert base.adapter is None  # with_adapter returns a copy


def test_unknown_model_is_an_lm_error_naming_the_served_models(server, fake):
    with pytest.raises(LMError, match=r"HTTP 404.*'nope'.*fake") as err:
        client(server.url, "nope")(user("x"))
    assert not isinstance(err.value, LMConnectionError)
    assert fake.calls == []


def test_bad_request_fails_at_once_with_the_servers_message(server, fake):
    with pytest.raises(LMError, match=r"HTTP 400.*messages\[0\]\.role") as err:
        client(server.url, max_retries=3)([{"role": "robot", "content": "x"}])
    assert not isinstance(err.value, LMConnectionError)


def test_close_then_reuse_reopens_the_connection_pool(server):
    lm = client(server.url)
    assert lm(user("a")).text == "echo: a"
    lm.close()
    assert lm(user("b")).text == "echo: b"
    lm.close()


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        ({"model": ""}, "model"),
        ({"base_url": "127.0.0.1:8000"}, "base_url"),
        ({"timeout": 0}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_bad_arguments(kwargs, bad):
    kwargs = {"model": "m", **kwargs}
    with pytest.raises(ConfigError, match=bad):
        OpenAICompatible(kwargs.pop("model"), cache=False, **kwargs)


def test_api_key_from_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    script = Scripted([200])
    script.client()(user("x"))
    assert script.requests[0].headers["authorization"] == "Bearer sk-test"


# --- retries, against scripted replies ----------------------------------------------------------------

OK_BODY = {
    "choices": [{"message": {"role": "assistant", "content": "fine"}, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 11, "completion_tokens": 5},
}


def scripted_reply(status: int, retry_after: str | None = "0") -> tuple[dict[str, str], dict]:
    """The headers and JSON body a scripted server answers ``status`` with."""
    body = OK_BODY if status == 200 else {"error": {"message": f"scripted failure {status}"}}
    headers = {"Retry-After": retry_after} if status in (429, 503) and retry_after is not None else {}
    return headers, body


class Scripted:
    """Answers each request with the next status of ``statuses`` (the last one repeats), in-process through
    ``httpx.MockTransport``; every request is kept in ``requests``."""

    url = "http://127.0.0.1:8000/v1"  # never dialled: the transport answers

    def __init__(self, statuses, retry_after: str | None = "0"):
        self.statuses, self.retry_after = statuses, retry_after
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
        headers, body = scripted_reply(status, self.retry_after)
        return httpx.Response(status, headers=headers, json=body)

    def client(self, **kwargs) -> OpenAICompatible:
        return client(self.url, transport=httpx.MockTransport(self), **kwargs)


def test_503_twice_then_success():
    script = Scripted([503, 503, 200])
    c = script.client(max_retries=4)(user("x"))
    assert c.text == "fine" and len(script.requests) == 3
    assert (c.prompt_tokens, c.completion_tokens, c.finish_reason) == (11, 5, "length")


def test_429_is_retried():
    script = Scripted([429, 200])
    assert script.client(max_retries=1)(user("x")).text == "fine"
    assert len(script.requests) == 2


def test_always_500_gives_up_after_max_retries():
    script = Scripted([500], retry_after=None)
    with pytest.raises(
        LMConnectionError, match=r"kept failing after 4 attempts; last answer HTTP 500: scripted failure 500"
    ) as err:
        script.client(max_retries=3)(user("x"))
    assert len(script.requests) == 4
    assert script.url in str(err.value)


def test_404_is_not_retried():
    script = Scripted([404, 200])
    with pytest.raises(LMError, match="scripted failure 404"):
        script.client(max_retries=3)(user("x"))
    assert len(script.requests) == 1


def test_a_failure_in_a_batch_raises():
    script = Scripted([200, 200, 400])
    with pytest.raises(LMError, match="scripted failure 400"):
        script.client(max_concurrency=1).generate([user(str(i)) for i in range(5)])
    assert len(script.requests) == 3  # requests after the failed one are not sent


# --- real sockets: nothing listening, a server too slow to answer -----------------------------------------


class slow_server:
    """A stdlib server on 127.0.0.1 answering each POST with the next of ``statuses`` (the last one repeats):
    "sleep" waits 1 s before answering 200, to trip the client's read timeout. Each request's headers are
    appended to ``hits``."""

    def __init__(self, statuses, hits):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    hits.append({k.lower(): v for k, v in self.headers.items()})
                    status = statuses[min(len(hits), len(statuses)) - 1]
                if status == "sleep":
                    time.sleep(1.0)
                    status = 200
                headers, body = scripted_reply(status)
                blob = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(blob)))
                    self.end_headers()
                    self.wfile.write(blob)
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args):
                pass

        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_nothing_listening():
    with socket.socket() as s:  # a port that was free a moment ago, and nobody listens on now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(LMConnectionError, match="not reachable after 3 attempts: ConnectError") as err:
        client(url, max_retries=2)(user("x"))
    assert f"server at {url} " in str(err.value)


def test_a_read_timeout_is_retried_once_and_said_as_such():
    # issue 12 #17: a generation past the read timeout is sent at most twice (the second time with twice
    # the time), whatever max_retries is, and the error says "read timeout", not "not reachable"
    from cotune.errors import LMTimeoutError

    hits = []
    with slow_server(["sleep"], hits) as url:
        with pytest.raises(LMTimeoutError, match="no answer within 0.4 s \\(read timeout") as err:
            client(url, max_retries=4, timeout=0.2)(user("x"))
    assert len(hits) == 2
    assert "not reachable" not in str(err.value)


def test_timeout_then_success():
    hits = []
    with slow_server(["sleep", 200], hits) as url:
        assert client(url, max_retries=2, timeout=0.3)(user("x")).text == "fine"
    assert len(hits) == 2


@pytest.mark.parametrize(
    "header, seconds",
    [("3", 3.0), ("0", 0.0), ("-1", 0.0), ("soon", None), (None, None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_parse_retry_after(header, seconds):
    assert parse_retry_after(header) == seconds
