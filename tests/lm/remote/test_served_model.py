"""Cached answers of a served model follow the weights the server runs, not the name it runs them under:
model B behind the URL and name model A had gets its own answers. One ``GET /models`` per client; servers
without it keep the name-only key (and a warning, once); local keys do not change."""

from __future__ import annotations

import threading
import warnings

import httpx
import pytest

import cotune as ct
from cotune.evaluate import evaluate
from cotune.lm import FakeLM, GenerationConfig, RequestCache
from cotune.lm.cache import request_key
from cotune.lm.remote import served_model
from cotune.lm.remote.openai_compat import OpenAICompatible
from cotune.lm.remote.served_model import identity_of
from cotune.serve.server import start_server

URL = "http://127.0.0.1:8000/v1"  # never dialled where a MockTransport answers


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def questions(n):
    return [ct.Example(question=str(i), answer=str(i % 3)).with_inputs("question") for i in range(n)]


def answers_mod(k):
    """A model that answers question i with i mod k: right on every question when k == 3."""
    return lambda messages: f"Answer: {int(messages[-1]['content'].split(': ')[1]) % k}"


def test_a_new_model_behind_the_same_url_and_name_gets_its_own_answers(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    metric = lambda ex, pred: float(pred["answer"] == ex["answer"])  # noqa: E731
    program = ct.Predict("question -> answer")
    model_a = FakeLM(answers_mod(5), name="/models/A")
    with start_server(model_a, model_name="local-model") as server:
        url, port = server.url, int(server.url.split(":")[2].split("/")[0])
        before = evaluate(
            program.bind(OpenAICompatible("local-model", base_url=url, cache=cache, constrained=False)),
            questions(20),
            metric,
            num_threads=4,
        )
    model_b = FakeLM(answers_mod(3), name="/models/B")
    with start_server(model_b, model_name="local-model", port=port) as server:
        assert server.url == url
        after = evaluate(
            program.bind(OpenAICompatible("local-model", base_url=url, cache=cache, constrained=False)),
            questions(20),
            metric,
            num_threads=4,
        )
        again = evaluate(
            program.bind(OpenAICompatible("local-model", base_url=url, cache=cache, constrained=False)),
            questions(20),
            metric,
            num_threads=4,
        )
    assert before.score < 1.0 and before.usage.cache_hits == 0
    assert after.usage.cache_hits == 0 and len(model_b.calls) == 20 and after.score == 1.0
    assert again.usage.cache_hits == 20 and again.score == 1.0  # the same model still hits its own answers


class Listing:
    """A MockTransport handler: ``GET /models`` answers ``models`` (an int: that HTTP status; a str: that
    text; an exception: raised; a list: one of those per GET), a chat completion "ok"; counts both."""

    def __init__(self, models):
        self.models, self.gets, self.posts = models, 0, 0
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            if request.method == "GET":
                self.gets += 1
                models = self.models.pop(0) if isinstance(self.models, list) else self.models
                if isinstance(models, Exception):
                    raise models
                if isinstance(models, int):
                    return httpx.Response(models, json={"error": {"message": "no such endpoint"}})
                if isinstance(models, str):
                    return httpx.Response(200, text=models)
                return httpx.Response(200, json=models)
            self.posts += 1
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": "ok"}}]})

    def client(self, model="local-model", **kwargs):
        kwargs.setdefault("cache", False)
        return OpenAICompatible(model, base_url=URL, transport=httpx.MockTransport(self), backoff=0.01, **kwargs)


def card(**fields):
    return {"object": "list", "data": [{"object": "model", "owned_by": "x", **fields}]}


def test_the_models_listing_is_asked_once_per_client(tmp_path):
    listing = Listing(card(id="local-model", root="/models/A", created=1))
    lm = listing.client(cache=RequestCache(tmp_path / "c.sqlite"), max_concurrency=4)
    lm.generate([user(str(i)) for i in range(12)])
    lm.generate([user(str(i)) for i in range(12, 20)])
    lm.with_adapter("sql")(user("x"))
    assert listing.gets == 1 and listing.posts == 21
    assert lm.served_identity() == {"id": "local-model", "root": "/models/A"} and listing.gets == 1
    listing.client(cache=RequestCache(tmp_path / "c.sqlite"))(user("0"))  # another client asks for itself
    assert listing.gets == 2 and listing.posts == 21


def test_without_a_cache_nothing_is_asked():
    listing = Listing(card(id="local-model", root="/models/A"))
    listing.client()(user("x"))
    assert listing.gets == 0


def test_the_key_follows_what_the_server_runs():
    cfg = GenerationConfig()

    def key(models):
        return Listing(models).client().cache_key(user("x"), cfg)

    vllm_a, vllm_b = key(card(id="local-model", root="/models/A")), key(card(id="local-model", root="/models/B"))
    assert vllm_a != vllm_b
    assert key(card(id="local-model", root="/models/A", created=5)) == vllm_a  # a listing's time is not identity
    # llama.cpp answers any name with its one model: its file (or alias) and its meta tell them apart
    assert key(card(id="qwen.gguf", meta={"n_params": 494})) != key(card(id="qwen.gguf", meta={"n_params": 135}))
    # Ollama sets created to when the model under that name last changed
    assert key(card(id="local-model", created=1)) != key(card(id="local-model", created=2))


@pytest.mark.parametrize(
    "models", [404, 405, "not json", {"data": []}, {"data": [{"id": "a", "root": "/a"}, {"id": "b", "root": "/b"}]}]
)
def test_a_server_that_does_not_say_keeps_the_name_key_and_warns_once(models):
    listing = Listing(models)
    lm = listing.client("m")
    cfg = GenerationConfig()
    with pytest.warns(UserWarning, match=r"server at http://127.0.0.1:8000/v1 does not say which model .*--no-cache"):
        first = lm.cache_key(user("x"), cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        lm.cache_key(user("y"), cfg)
        lm.with_adapter("sql").cache_key(user("x"), cfg)
    assert listing.gets == 1 and lm.served_identity() is None
    # the key earlier versions wrote for this request: caches of servers without /models stay valid
    assert first == "2666f8c7eb413d45e67e33220ef0f1e7ecf93e84b59b4c23d9802ce0aa1f6a1a"


def test_a_server_that_cannot_be_asked_now_is_asked_again_and_gets_no_stored_answer(tmp_path, monkeypatch):
    monkeypatch.setattr(served_model, "ASK_AGAIN_AFTER_S", 0.0)
    cache = RequestCache(tmp_path / "c.sqlite")
    listing = Listing([httpx.ConnectError("refused"), 503, card(id="local-model", root="/models/A")])
    lm = listing.client(cache=cache)
    name_only = request_key(
        backend="openai",
        model="local-model",
        adapter=None,
        base_url=URL,
        messages=user("x"),
        config=GenerationConfig().to_dict(),
    )
    cache.put(name_only, {"text": "an answer of some earlier model"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a passing outage is no reason to warn
        assert lm(user("x")).text == "ok" and lm(user("x")).text == "ok"
    assert listing.gets == 2 and listing.posts == 2
    assert lm(user("x")).text == "ok" and lm(user("x")).cached  # asked, then remembered
    assert listing.gets == 3 and listing.posts == 3


def test_a_failed_ask_is_not_repeated_for_every_request_of_a_batch(tmp_path):
    listing = Listing(503)
    lm = listing.client(cache=RequestCache(tmp_path / "c.sqlite"))
    assert [c.text for c in lm.generate([user(str(i)) for i in range(10)])] == ["ok"] * 10
    assert listing.gets == 1 and listing.posts == 10


def test_local_keys_do_not_change():
    # the key a local model's cache entries were written under; changing it would orphan every cache
    key = FakeLM(["a"], name="m").cache_key(user("x"), GenerationConfig())
    assert key == "8a9ffa09a1e4599d9ee040b7015fc86d0e76da0fa168f07ea35755599ba61a64"


def test_identity_of_picks_the_card_named():
    listing = {"data": [{"id": "a", "root": "/a"}, {"id": "sql", "root": "/adapters/sql", "parent": "a"}]}
    assert identity_of(listing, "sql") == ({"id": "sql", "root": "/adapters/sql", "parent": "a"}, "")
    assert identity_of(listing, "c")[0] is None and "lists no model 'c'" in identity_of(listing, "c")[1]
    assert identity_of([1, 2], "a") == (None, "its GET /models answer lists no models")
