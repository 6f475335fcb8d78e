"""cotune's OpenAI-compatible server, spoken to with raw HTTP (httpx) on 127.0.0.1."""

from __future__ import annotations

import logging

import httpx
import pytest

from cotune.errors import ConfigError
from cotune.lm import FakeLM
from cotune.lm.base import LM
from cotune.lm.remote.openai_compat import OpenAICompatible
from cotune.serve.server import start_server

GOOD = {"model": "toy", "messages": [{"role": "user", "content": "hi there"}]}


@pytest.fixture
def fake():
    return FakeLM(lambda messages, adapter: f"{adapter or 'base'} says {messages[-1]['content']}", name="toy-model")


@pytest.fixture
def events():
    return []


@pytest.fixture
def server(fake, events):
    with start_server(fake, model_name="toy", adapters={"sql": "/tmp/sql-adapter"}, events=events.append) as handle:
        yield handle


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def test_chat_completion_shape(http, fake):
    r = http.post("/chat/completions", json={**GOOD, "max_completion_tokens": 5, "temperature": 0.0})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "toy" and body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "base says hi there"}
    assert choice["finish_reason"] == "stop" and choice["index"] == 0
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
    assert fake.calls[0][1].max_tokens == 5


def test_fields_become_generation_overrides(http, fake):
    body = {**GOOD, "temperature": 0.8, "top_p": 0.5, "max_tokens": 9, "stop": "says", "seed": 7, "user": "ignored"}
    assert http.post("/chat/completions", json=body).json()["choices"][0]["message"]["content"] == "base "
    config = fake.calls[0][1]
    assert (config.temperature, config.top_p, config.max_tokens, config.stop, config.rollout_id) == (
        0.8,
        0.5,
        9,
        ("says",),
        7,
    )


def test_seed_is_ignored_when_greedy(http, fake):
    http.post("/chat/completions", json={**GOOD, "temperature": 0, "seed": 7})
    assert fake.calls[0][1].rollout_id == 0  # greedy answers do not depend on the seed; keep one cache entry


def test_unset_fields_keep_the_lms_defaults(http, fake):
    http.post("/chat/completions", json=GOOD)
    assert fake.calls[0][1] == fake.config


def test_content_parts_and_default_model(http):
    messages = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    r = http.post("/chat/completions", json={"messages": messages})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "base says ab"


def test_adapter_by_model_name(http):
    r = http.post("/chat/completions", json={**GOOD, "model": "sql"})
    assert r.json()["model"] == "sql"
    assert r.json()["choices"][0]["message"]["content"] == "/tmp/sql-adapter says hi there"


def test_models_and_health(http, server):
    models = http.get("/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["toy", "sql"]
    health = httpx.get(server.url.removesuffix("/v1") + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "toy"}, "messages"),
        ({**GOOD, "messages": []}, "messages"),
        ({**GOOD, "messages": "hi"}, "messages"),
        ({**GOOD, "messages": ["hi"]}, "messages[0]"),
        ({**GOOD, "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({**GOOD, "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({**GOOD, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
        ({**GOOD, "model": 5}, "model"),
        ({**GOOD, "temperature": -1}, "temperature"),
        ({**GOOD, "temperature": "hot"}, "temperature"),
        ({**GOOD, "top_p": 0}, "top_p"),
        ({**GOOD, "top_p": 1.5}, "top_p"),
        ({**GOOD, "max_tokens": 0}, "max_tokens"),
        ({**GOOD, "max_tokens": 2.5}, "max_tokens"),
        ({**GOOD, "max_completion_tokens": True}, "max_completion_tokens"),
        ({**GOOD, "stop": 5}, "stop"),
        ({**GOOD, "stop": ["ok", ""]}, "stop"),
        ({**GOOD, "seed": "x"}, "seed"),
        ({**GOOD, "n": 2}, "n"),
        ({**GOOD, "stream": True}, "stream"),
    ],
)
def test_bad_request_names_the_field(http, fake, body, param):
    r = http.post("/chat/completions", json=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param.split(".")[-1].split("[")[0] in error["message"]
    assert fake.calls == []


def test_invalid_json_and_non_object_bodies(http):
    r = http.post("/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    assert http.post("/chat/completions", json=[1, 2]).status_code == 400


def test_unknown_model_is_404_listing_served_models(http):
    r = http.post("/chat/completions", json={**GOOD, "model": "gpt-4"})
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "model_not_found" and "'gpt-4'" in error["message"] and "toy, sql" in error["message"]


def test_unknown_path_is_404(http):
    assert http.post("/completions", json=GOOD).status_code == 404
    r = http.get("/nothing")
    assert r.status_code == 404 and "/v1/chat/completions" in r.json()["error"]["message"]


def test_model_failure_is_500_and_server_keeps_serving(caplog):
    def flaky(messages):
        if messages[-1]["content"] == "boom":
            raise RuntimeError("model exploded")
        return "ok"

    with caplog.at_level(logging.ERROR, logger="cotune"), start_server(FakeLM(flaky)) as srv:
        with httpx.Client(base_url=srv.url) as http:
            bad = http.post("/chat/completions", json={"messages": [{"role": "user", "content": "boom"}]})
            good = http.post("/chat/completions", json={"messages": [{"role": "user", "content": "fine"}]})
    assert bad.status_code == 500 and "error id" in bad.json()["error"]["message"]
    assert good.status_code == 200
    assert (
        "model exploded" in caplog.text
    )  # the operator's log has it; the client does not (see tests/serve/test_connections.py)


def test_requests_are_reported_as_events(http, events):
    http.post("/chat/completions", json=GOOD)
    http.post("/chat/completions", json={**GOOD, "n": 3})
    requests = [e.fields for e in events if e.name == "server.request"]
    assert [(r["status"], r["model"]) for r in requests] == [(200, "toy"), (400, None)]
    assert requests[0]["prompt_tokens"] == 2 and requests[0]["completion_tokens"] == 4
    assert events[0].name == "server.start" and events[0].fields["url"].endswith("/v1")


def test_keep_alive_connections_are_reused(server):
    with httpx.Client(base_url=server.url, limits=httpx.Limits(max_connections=1)) as http:
        for _ in range(3):
            assert http.post("/chat/completions", json=GOOD).status_code == 200
            assert http.get("/models").status_code == 200


def test_close_stops_serving(fake):
    handle = start_server(fake)
    url = handle.url
    assert httpx.get(url + "/models").status_code == 200
    handle.close()
    handle.close()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/models", timeout=2)


def test_adapter_name_clash_and_backend_without_adapters():
    with pytest.raises(ConfigError, match="already the served model's name"):
        start_server(FakeLM(["x"]), model_name="m", adapters={"m": "/a"})

    class NoAdapters(FakeLM):
        def with_adapter(self, adapter):
            return LM.with_adapter(self, adapter)  # the base class refuses

    with pytest.raises(ConfigError, match="cannot load adapters"):
        start_server(NoAdapters(["x"]), adapters={"sql": "/a"})


@pytest.mark.integration
def test_smollm2_through_the_server():
    pytest.importorskip("transformers")
    try:
        from cotune.lm.registry import load
    except ImportError as e:
        pytest.skip(f"cotune.lm.registry is not available: {e}")
    lm = load("smollm2-135m", cache=False)
    with start_server(lm, model_name="smollm2") as srv:
        client = OpenAICompatible("smollm2", base_url=srv.url, cache=False, timeout=120, max_retries=0)
        questions = ["What is the capital of France?", "Name a primary color.", "Say hello.", "What is 2 + 2?"]
        # Concurrent requests: the backend may batch them; each must still get its own answer.
        out = client.generate([[{"role": "user", "content": q}] for q in questions], max_tokens=16)
        models = httpx.get(srv.url + "/models").json()
    assert [m["id"] for m in models["data"]] == ["smollm2"]
    for c in out:
        assert c.text.strip()
        assert c.prompt_tokens > 5  # the chat template adds tokens to the question
        assert 1 <= c.completion_tokens <= 16
        assert c.finish_reason in ("stop", "length")
    assert "paris" in out[0].text.lower()
    # Each HTTP request runs in its own server thread; the engine must have merged some into one batch.
    assert lm.engine.stats.largest >= 2
