"""vLLM's runtime LoRA API: `cotune serve --runtime-lora` answering it, and the client that uses it."""

from __future__ import annotations

import httpx
import pytest

from cotune.errors import ConfigError, LMError
from cotune.lm import FakeLM
from cotune.lm.base import Capabilities
from cotune.lm.remote.openai_compat import OpenAICompatible
from cotune.lm.remote.runtime_lora import RuntimeLoRA, adapter_name, same_base_model
from cotune.serve.server import start_server

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def adapter_folder(root, name="adapter"):
    folder = root / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"weights of " + name.encode())
    return folder


@pytest.fixture
def fake():
    return FakeLM(lambda messages, adapter: f"{adapter or 'base'} answers", name="toy-model")


@pytest.fixture
def server(fake):
    with start_server(fake, model_name="toy", runtime_lora=True) as handle:
        yield handle


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def test_load_serve_and_unload_an_adapter_at_runtime(server, http, tmp_path):
    folder = adapter_folder(tmp_path)
    r = http.post("/load_lora_adapter", json={"lora_name": "sql", "lora_path": str(folder)})
    assert (r.status_code, r.text) == (200, "Success: LoRA adapter 'sql' added successfully.")
    cards = {c["id"]: c for c in http.get("/models").json()["data"]}
    assert cards["sql"]["root"] == str(folder) and cards["sql"]["parent"] == "toy" and cards["toy"]["parent"] is None

    reply = http.post("/chat/completions", json={"model": "sql", **CHAT}).json()
    assert reply["model"] == "sql" and reply["choices"][0]["message"]["content"] == f"{folder} answers"
    assert http.post("/chat/completions", json={"model": "toy", **CHAT}).json()["choices"][0]["message"]["content"] == (
        "base answers"
    )
    assert server.requests_by_model == {"sql": 1, "toy": 1} and server.models == ["toy", "sql"]

    r = http.post("/unload_lora_adapter", json={"lora_name": "sql"})
    assert (r.status_code, r.text) == (200, "Success: LoRA adapter 'sql' removed successfully.")
    gone = http.post("/chat/completions", json={"model": "sql", **CHAT})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(
    "path, body, status, kind, message",
    [
        ("/load_lora_adapter", {"lora_name": "sql"}, 400, "InvalidUserInput", "Both 'lora_name' and 'lora_path'"),
        ("/load_lora_adapter", {"lora_name": "toy", "lora_path": "{folder}"}, 400, "InvalidUserInput",
         "'toy' is the served model's name"),
        ("/load_lora_adapter", {"lora_name": "x", "lora_path": "/no/such/folder"}, 404, "NotFoundError",
         "No adapter found for /no/such/folder"),
        ("/unload_lora_adapter", {}, 400, "InvalidUserInput", "'lora_name' and 'lora_int_id'"),
        ("/unload_lora_adapter", {"lora_name": "nope"}, 404, "NotFoundError", "The lora adapter 'nope' cannot be found."),
        ("/unload_lora_adapter", {"lora_name": "toy"}, 404, "NotFoundError", "'toy' cannot be found"),
    ],
)  # fmt: skip
def test_bad_requests_get_vllms_errors(http, tmp_path, path, body, status, kind, message):
    folder = adapter_folder(tmp_path)
    body = {k: v.replace("{folder}", str(folder)) for k, v in body.items()}
    r = http.post(path, json=body)
    assert r.status_code == status
    error = r.json()["error"]
    assert error["type"] == kind and message in error["message"]


def test_a_name_is_loaded_once(http, tmp_path):
    a, b = adapter_folder(tmp_path, "a"), adapter_folder(tmp_path, "b")
    assert http.post("/load_lora_adapter", json={"lora_name": "sql", "lora_path": str(a)}).status_code == 200
    again = http.post("/load_lora_adapter", json={"lora_name": "sql", "lora_path": str(b)})
    assert again.status_code == 400 and "has already been loaded" in again.json()["error"]["message"]


def test_without_runtime_lora_the_endpoints_do_not_exist(fake, tmp_path):
    with start_server(fake, model_name="toy") as server, httpx.Client(base_url=server.url) as http:
        r = http.post("/load_lora_adapter", json={"lora_name": "sql", "lora_path": str(adapter_folder(tmp_path))})
        assert r.status_code == 404 and "no endpoint POST /v1/load_lora_adapter" in r.json()["error"]["message"]
        lora = OpenAICompatible("toy", base_url=server.url, cache=False).runtime_lora()
        with pytest.raises(ConfigError) as e:
            lora.check()
    message = str(e.value)
    for part in (server.url, "/v1/load_lora_adapter", "--enable-lora", "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True",
                 "--runtime-lora", "llama.cpp", "--lora"):  # fmt: skip
        assert part in message


def test_client_loads_checks_and_unloads(server, tmp_path, fake):
    lm = OpenAICompatible("toy", base_url=server.url, cache=False)
    lora = lm.runtime_lora()
    lora.check()
    assert lora.served_model("toy")["id"] == "toy"
    with pytest.raises(ConfigError, match="does not serve model 'other'; it serves: toy"):
        lora.served_model("other")
    folder = adapter_folder(tmp_path)
    lora.load("sql", folder)
    lora.load("sql", folder)  # the same name again: already there, which is what was asked
    assert lm.with_adapter("sql")([{"role": "user", "content": "hi"}]).text == f"{folder} answers"
    lora.unload("sql")
    with pytest.raises(LMError, match="did not unload adapter 'sql' \\(HTTP 404\\)"):
        lora.unload("sql")
    with pytest.raises(LMError, match="did not load adapter 'x' from /no/such .*readable on the server's machine"):
        lora.load("x", "/no/such")


def scripted_lora(base_url, handler) -> RuntimeLoRA:
    """The runtime-LoRA client of an LM whose requests ``handler`` answers in-process."""
    return OpenAICompatible("m", base_url=base_url, cache=False, transport=httpx.MockTransport(handler)).runtime_lora()


@pytest.mark.parametrize(
    "status, reply, has_endpoint",
    [
        (404, lambda probe: {"object": "error", "message": f"The lora adapter '{probe}' cannot be found.",
                             "type": "NotFoundError", "code": 404}, True),  # vLLM before its error envelope
        (404, lambda probe: {"error": {"message": f"The lora adapter '{probe}' cannot be found.",
                                       "type": "NotFoundError", "code": 404}}, True),  # vLLM now
        (404, lambda probe: {"detail": "Not Found"}, False),  # vLLM without VLLM_ALLOW_RUNTIME_LORA_UPDATING
        (404, lambda probe: {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}, False),
        (405, lambda probe: {"detail": "Method Not Allowed"}, False),
    ],
)  # fmt: skip
def test_check_tells_a_missing_endpoint_from_an_unknown_adapter(status, reply, has_endpoint):
    def handler(request):
        probe = __import__("json").loads(request.content)["lora_name"]
        return httpx.Response(status, json=reply(probe))

    lora = scripted_lora("http://gpu-box:8000/v1", handler)
    if has_endpoint:
        lora.check()
    else:
        with pytest.raises(ConfigError, match="server at http://gpu-box:8000/v1 cannot load LoRA adapters at runtime"):
            lora.check()


@pytest.mark.parametrize(
    "entry, local, same",
    [
        ({"id": "HuggingFaceTB/SmolLM2-135M-Instruct"}, ["smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct"], True),
        ({"id": "prod", "root": "/models/SmolLM2-135M-Instruct"}, ["/home/u/SmolLM2-135M-Instruct/"], True),
        ({"id": "smollm2-135m", "root": "/cache/models/smollm2-135m"}, ["smollm2-135m"], True),
        ({"id": "Qwen/Qwen2.5-Coder-0.5B-Instruct"}, ["smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct"], False),
        ({"id": "prod"}, ["/models/llama"], False),
    ],
)
def test_same_base_model(entry, local, same):
    assert same_base_model(entry, local) is same


def test_adapter_name_carries_the_weights_hash():
    assert adapter_name("smollm2-135m", "/a/adapter#0123456789ab") == "smollm2-135m-lora-0123456789ab"


def test_capabilities_are_declared_by_the_backends():
    assert FakeLM(["x"]).capabilities == Capabilities(adapters=True)
    served = OpenAICompatible("m", cache=False).capabilities
    assert served == Capabilities(adapters=True, runtime_adapters=True, structured_output="json_schema")
    local = FakeLM(["x"], structured_output="grammar")
    local.model_path = "/models/m"
    assert local.capabilities == Capabilities(local_weights=True, adapters=True, structured_output="grammar")


def test_concurrent_requests_all_fall_back_when_the_server_refuses_structured_outputs(server):
    # Several requests are refused at once; each must retry without response_format, not only the first.
    lm = OpenAICompatible("toy", base_url=server.url, cache=False, max_concurrency=8)
    from cotune.lm.constraint import Constraint

    rule = Constraint(grammar=(), json_schema='{"type": "object"}')
    with pytest.warns(UserWarning, match="rejected structured outputs"):
        replies = lm.generate([[{"role": "user", "content": str(i)}] for i in range(16)], constraint=rule)
    assert [r.text for r in replies] == ["base answers"] * 16 and all(r.unconstrained for r in replies)


def test_a_llama_cpp_server_is_named_with_its_restart_path():
    def handler(request):
        if request.method == "GET":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "smollm2", "owned_by": "llamacpp"}]})
        return httpx.Response(
            404, json={"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}
        )

    lora = scripted_lora("http://cpu-box:8080/v1", handler)
    with pytest.raises(ConfigError) as e:
        lora.check()
    message = str(e.value)
    assert (
        "server at http://cpu-box:8080/v1 is a llama.cpp server, which cannot load LoRA adapters at runtime" in message
    )
    assert "restart the server with --lora ADAPTER.gguf" in message and "convert_lora_to_gguf.py" in message
