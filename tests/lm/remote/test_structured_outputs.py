"""Structured outputs over HTTP: the client sends the signature's JSON schema as ``response_format``,
falls back (one warning, counted in usage) where a server refuses it, and ``cotune serve`` honours it
with the grammar engine (integration, real SmolLM2 on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
import warnings

import httpx
import pytest

from cotune.lm import FakeLM
from cotune.lm.remote.openai_compat import OpenAICompatible
from cotune.program import ChainOfThought
from cotune.serve.server import RequestError, response_constraint, start_server


class Stub:
    """Answers chat completions in-process (an ``httpx.MockTransport`` handler); refuses any request that
    carries response_format when ``refuse`` is set. Every request body is kept in ``bodies``."""

    def __init__(self, refuse: bool):
        self.refuse = refuse
        self.bodies: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        with self.lock:
            self.bodies.append(body)
        if self.refuse and "response_format" in body:
            return httpx.Response(
                400, json={"error": {"message": "Unrecognized request argument supplied: response_format"}}
            )
        text = '{"reasoning": "2 + 2 = 4", "answer": 4}' if "response_format" in body else "Reasoning: r\nAnswer: 4"
        message = {"role": "assistant", "content": text}
        return httpx.Response(200, json={"choices": [{"message": message, "finish_reason": "stop"}],
                                         "usage": {"prompt_tokens": 3, "completion_tokens": 5}})  # fmt: skip


@pytest.fixture(params=[False, True], ids=["accepts", "refuses"])
def stub(request):
    return Stub(refuse=request.param)


def test_client_sends_the_schema_or_falls_back_once(stub):
    lm = OpenAICompatible("m", cache=False, max_retries=0, transport=httpx.MockTransport(stub))
    cot = ChainOfThought("question -> answer: float").bind(lm)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = [cot(question=f"{i} + 2?").answer for i in range(3)]
    assert answers == [4.0, 4.0, 4.0]
    first = stub.bodies[0]
    assert first["response_format"]["json_schema"]["schema"]["required"] == ["reasoning", "answer"]
    if stub.refuse:
        assert len(caught) == 1 and "rejected structured outputs" in str(caught[0].message)
        assert all("response_format" not in b for b in stub.bodies[1:])  # asked once, then free text
        assert lm.usage.unconstrained == 3 and lm.usage.calls == 3
    else:
        assert not caught and all("response_format" in b for b in stub.bodies)
        assert lm.usage.unconstrained == 0


def test_server_reads_response_format():
    grammar_lm = FakeLM(["x"], structured_output="grammar")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    rule = response_constraint({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}, grammar_lm)
    assert json.loads(rule.json_schema) == schema and rule.grammar == ()
    assert response_constraint({"type": "text"}, grammar_lm) is None
    assert json.loads(response_constraint({"type": "json_object"}, grammar_lm).json_schema) == {"type": "object"}
    for bad in ({"type": "xml"}, {"type": "json_schema", "json_schema": {"schema": 3}}, "json"):
        with pytest.raises(RequestError, match="response_format"):
            response_constraint(bad, grammar_lm)
    with pytest.raises(RequestError, match="cannot constrain"):
        response_constraint({"type": "json_object"}, FakeLM(["x"]))


@pytest.mark.integration
def test_cotune_serve_honours_response_format_end_to_end():
    from cotune.lm.registry import load
    from cotune.tasks import load_task

    task = load_task("iris")
    model = load("smollm2-135m", cache=False)
    try:
        with start_server(model, model_name="smollm2") as srv:
            lm = OpenAICompatible("smollm2", base_url=srv.url, cache=False, timeout=300, max_retries=0)
            program = task.program().bind(lm)
            program.classify.reasoning_budget = 16
            for ex in list(task.dev)[:4]:
                pred = program(**ex.inputs())
                assert pred.species in {"setosa", "versicolor", "virginica"}
            assert lm.usage.unconstrained == 0 and lm.usage.calls == 4
    finally:
        model.close()
