"""`cotune serve` checks what a request will cost before it reaches the model's thread: prompts over the
context and output schemas over the size or depth limits are refused (400), and output grammars are compiled
in the request's own thread."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from cotune.errors import ConfigError
from cotune.lm import FakeLM
from cotune.serve.admission import schema_depth
from cotune.serve.policy import ServerLimits
from cotune.serve.server import start_server


class SmallContextLM(FakeLM):
    """A FakeLM with a 50-token context that counts a prompt as its words plus 3 tokens of chat template."""

    context_length = 50

    def count_prompt_tokens(self, messages):
        return 3 + sum(len(m["content"].split()) for m in messages)


def ask(url, words: int, **fields):
    body = {"model": "toy", "messages": [{"role": "user", "content": " ".join(["w"] * words)}], **fields}
    return httpx.post(url + "/chat/completions", json=body, timeout=10)


def deep(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}


# -- the context ------------------------------------------------------------------------------------------


def test_a_prompt_over_the_context_is_400_before_the_model_runs():
    fake = SmallContextLM(["x"])
    with start_server(fake, model_name="toy") as srv:
        r = ask(srv.url, 60)
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "63 tokens" in error["message"] and "context is 50" in error["message"]
    assert fake.calls == []


def test_max_tokens_past_the_context_is_400_naming_the_room_left():
    fake = SmallContextLM(["x"])
    with start_server(fake, model_name="toy") as srv:
        r = ask(srv.url, 7, max_tokens=45)  # 10 + 45 > 50
        ok = ask(srv.url, 7, max_tokens=40)
    assert r.status_code == 400 and "at most 40" in r.json()["error"]["message"]
    assert ok.status_code == 200 and len(fake.calls) == 1


def test_an_unset_max_tokens_gets_the_room_left():
    fake = SmallContextLM(["x"])  # its default max_tokens (384) is over the context
    with start_server(fake, model_name="toy") as srv:
        assert ask(srv.url, 7).status_code == 200
    assert fake.calls[0][1].max_tokens == 40


# -- output schemas ---------------------------------------------------------------------------------------


def test_schema_depth_counts_nested_containers():
    assert (schema_depth(1), schema_depth({}), schema_depth({"a": [1, {"b": 2}]})) == (0, 1, 3)
    assert schema_depth(deep(200)) == 401  # no recursion limit in the way


@pytest.mark.parametrize(
    "schema, limit",
    [(deep(40), "nests 81 levels deep, over this server's limit of 64"), ({"enum": ["x" * 70_000]}, "bytes")],
)
def test_schemas_over_the_limits_are_400_before_the_model_runs(schema, limit):
    fake = FakeLM(["{}"], structured_output="grammar")
    with start_server(fake, model_name="toy") as srv:
        r = ask(srv.url, 2, response_format=schema_format(schema))
        ok = ask(srv.url, 2, response_format=schema_format(deep(20)))
    assert r.status_code == 400 and limit in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "response_format"
    assert ok.status_code == 200 and len(fake.calls) == 1


def test_schema_limits_are_settings():
    fake = FakeLM(["{}"], structured_output="grammar")
    with start_server(fake, model_name="toy", limits=ServerLimits(max_schema_depth=200)) as srv:
        assert ask(srv.url, 2, response_format=schema_format(deep(40))).status_code == 200
    with pytest.raises(ConfigError, match="max_schema_depth must be >= 1"):
        ServerLimits(max_schema_depth=0)


# -- grammars are compiled before the model's thread sees them ---------------------------------------------


class _Grammar:
    def __init__(self, fail: bool = False):
        self.compiled, self.threads, self.fail = [], [], fail

    def compile(self, constraint):
        if self.fail:
            raise ConfigError("the grammar engine cannot compile this output format: bad pattern")
        self.compiled.append(constraint)
        self.threads.append(threading.current_thread().name)


class GrammarLM(FakeLM):
    """A FakeLM with an engine whose grammar compiles are recorded; it answers whether its constraint was
    compiled before it was called."""

    def __init__(self, grammar):
        self.engine = type("Engine", (), {"grammar": grammar})()
        super().__init__(self._answer, structured_output="grammar")

    def _answer(self, messages, config):
        return json.dumps({"compiled_first": config.constraint in self.engine.grammar.compiled})


def test_the_grammar_is_compiled_before_the_request_reaches_the_model():
    grammar = _Grammar()
    with start_server(GrammarLM(grammar), model_name="toy") as srv:
        r = ask(srv.url, 2, response_format=schema_format(deep(3)))
    assert json.loads(r.json()["choices"][0]["message"]["content"]) == {"compiled_first": True}
    assert grammar.threads == ["cotune-server-generate"]


def test_a_schema_the_grammar_engine_refuses_is_400():
    fake = GrammarLM(_Grammar(fail=True))
    with start_server(fake, model_name="toy") as srv:
        r = ask(srv.url, 2, response_format=schema_format({"type": "string", "pattern": "("}))
    assert r.status_code == 400 and "cannot compile" in r.json()["error"]["message"] and fake.calls == []


def test_a_served_engine_cuts_long_prefills_finer():
    from cotune.lm.engine.prefill import PassTimer

    lm = FakeLM(["x"])
    lm.engine = type("Engine", (), {"passes": PassTimer()})()
    batch_slice = lm.engine.passes.slice
    with start_server(lm, model_name="toy"):
        assert lm.engine.passes.interactive and lm.engine.passes.slice < batch_slice
