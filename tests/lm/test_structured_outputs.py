"""Structured outputs over HTTP: the client sends the signature's JSON schema as ``response_format``,
falls back (one warning, counted in usage) where a server refuses it, and ``cotune serve`` honours it
with the grammar engine (integration, real SmolLM2 on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cotune.lm import FakeLM
from cotune.lm.openai_compat import OpenAICompatible
from cotune.lm.server import RequestError, response_constraint, start_server
from cotune.program import ChainOfThought


class _Stub(BaseHTTPRequestHandler):
    """Answers JSON; refuses any request that carries response_format when ``refuse`` is set."""

    refuse = False
    bodies: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        if self.refuse and "response_format" in body:
            self._send(400, {"error": {"message": "Unrecognized request argument supplied: response_format"}})
            return
        text = '{"reasoning": "2 + 2 = 4", "answer": 4}' if "response_format" in body else "Reasoning: r\nAnswer: 4"
        message = {"role": "assistant", "content": text}
        self._send(200, {"choices": [{"message": message, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 3, "completion_tokens": 5}})  # fmt: skip

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(params=[False, True], ids=["accepts", "refuses"])
def stub(request):
    handler = type("Handler", (_Stub,), {"refuse": request.param, "bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    server.shutdown()
    server.server_close()


def test_client_sends_the_schema_or_falls_back_once(stub):
    url, handler = stub
    lm = OpenAICompatible("m", base_url=url, cache=False, max_retries=0)
    cot = ChainOfThought("question -> answer: float").bind(lm)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = [cot(question=f"{i} + 2?").answer for i in range(3)]
    assert answers == [4.0, 4.0, 4.0]
    first = handler.bodies[0]
    assert first["response_format"]["json_schema"]["schema"]["required"] == ["reasoning", "answer"]
    if handler.refuse:
        assert len(caught) == 1 and "rejected structured outputs" in str(caught[0].message)
        assert all("response_format" not in b for b in handler.bodies[1:])  # asked once, then free text
        assert lm.usage.unconstrained == 3 and lm.usage.calls == 3
    else:
        assert not caught and all("response_format" in b for b in handler.bodies)
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
