"""Loading LoRA adapters into a running server through vLLM's runtime LoRA API (`cotune serve` has it too).

The API is two endpoints next to ``/v1/chat/completions``:

- ``POST /v1/load_lora_adapter`` with ``{"lora_name": NAME, "lora_path": FOLDER}``: the server loads the
  PEFT adapter folder (a path *on the server's machine*) and from then on answers requests whose
  ``model`` is NAME with it;
- ``POST /v1/unload_lora_adapter`` with ``{"lora_name": NAME}``.

vLLM registers them only when started with ``--enable-lora`` and the environment variable
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``; ``cotune serve`` only with ``--runtime-lora``. llama.cpp's
server has no such endpoints: it takes adapters at start (``--lora FILE.gguf``), so a new adapter means a
restart (see the README's Scaling section).

Example:
    >>> from cotune.lm.fake import FakeLM
    >>> from cotune.lm.remote.openai_compat import OpenAICompatible
    >>> from cotune.serve.server import start_server
    >>> with start_server(FakeLM(["ok"]), model_name="toy", runtime_lora=True) as server:
    ...     lora = OpenAICompatible("toy", base_url=server.url, cache=False).runtime_lora()
    ...     lora.check()  # raises when the server cannot load adapters at runtime
    ...     lora.served_model("toy")["id"]
    'toy'
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from cotune.errors import ConfigError, LMConnectionError, LMError
from cotune.lm.remote.http_pool import HTTPPool, error_message

LOAD, UNLOAD = "/load_lora_adapter", "/unload_lora_adapter"
HOW_TO_ENABLE = (
    "start vLLM with --enable-lora --max-lora-rank R (at least the adapter's rank) and the environment variable "
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or `cotune serve` with --runtime-lora. A llama.cpp server cannot "
    "load adapters at runtime: convert the adapter to GGUF and restart it with --lora ADAPTER.gguf"
)


class RuntimeLoRA:
    """The runtime-LoRA endpoints of one server (shares the LM's connection pool and credentials).

    Args:
        pool: the HTTP pool of the `OpenAICompatible` LM.
        request_base: the API root requests go to (``.../v1``, credentials included).
        shown_base: the same root with credentials taken out, for messages.
        timeout: seconds per request; loading an adapter reads its weights, so allow more than for a reply.
    """

    def __init__(self, pool: HTTPPool, request_base: str, shown_base: str, timeout: float = 120.0):
        self._pool, self._base, self.base_url, self.timeout = pool, request_base.rstrip("/"), shown_base, timeout

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return self._pool.client().request(method, self._base + path, json=body, timeout=self.timeout)
        except httpx.TransportError as e:
            raise LMConnectionError(f"server at {self.base_url} is not reachable ({method} {path}): {e}") from None

    def served_model(self, model: str) -> dict[str, Any]:
        """The ``GET /v1/models`` entry of ``model`` (``id``, and on vLLM and cotune ``root``: its weights).

        Raises:
            ConfigError: the server does not serve ``model`` (the served names are listed).
            LMError: the server does not answer the models list.
        """
        response = self._request("GET", "/models")
        try:
            data = response.json()["data"]
            entries = {str(e["id"]): e for e in data}
        except (ValueError, KeyError, TypeError) as e:
            raise LMError(
                f"server at {self.base_url} did not list its models (GET /models: HTTP {response.status_code}, "
                f"{type(e).__name__}: {error_message(response)[:200]})"
            ) from None
        if model not in entries:
            raise ConfigError(
                f"server at {self.base_url} does not serve model {model!r}; it serves: {', '.join(entries) or 'none'}"
            )
        return entries[model]

    def check(self) -> None:
        """Make sure the server has the runtime-LoRA endpoints, without changing anything on it.

        Unloading an adapter name nobody loaded is harmless: a server with the endpoint answers that the
        name is unknown (vLLM: 404 "The lora adapter '...' cannot be found."), one without answers that the
        path is unknown, and only the former repeats the name.

        Raises:
            ConfigError: the endpoint is missing; the message names the server, the endpoint and how to
                switch it on.
        """
        probe = f"cotune-probe-{uuid.uuid4().hex[:12]}"
        response = self._request("POST", UNLOAD, {"lora_name": probe})
        if response.status_code < 400 or probe in response.text:
            return
        if response.status_code in (401, 403):
            raise LMError(
                f"server at {self.base_url} refused POST {UNLOAD} (HTTP {response.status_code}): "
                f"{error_message(response)}"
            )
        if self._is_llama_cpp():
            raise ConfigError(
                f"server at {self.base_url} is a llama.cpp server, which cannot load LoRA adapters at runtime (it "
                f"applies the adapters given at start with --lora; POST {self._path(LOAD)} does not exist). Train "
                "on a local copy of the base model, convert the adapter to GGUF (llama.cpp's convert_lora_to_gguf.py) "
                "and restart the server with --lora ADAPTER.gguf; or serve the model with vLLM (--enable-lora, "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"
            )
        raise ConfigError(
            f"server at {self.base_url} cannot load LoRA adapters at runtime: POST {self._path(UNLOAD)} answered "
            f"HTTP {response.status_code} ({error_message(response)[:120]}), so POST {self._path(LOAD)} is missing "
            f"too. To fine-tune a served model, {HOW_TO_ENABLE}"
        )

    def _is_llama_cpp(self) -> bool:
        """Whether the server says it is llama.cpp's (its ``/v1/models`` entries are owned by "llamacpp")."""
        try:
            data = self._request("GET", "/models").json().get("data") or []
            return any(isinstance(e, dict) and e.get("owned_by") == "llamacpp" for e in data)
        except (LMError, ValueError, AttributeError):
            return False

    def load(self, name: str, path: str | Path) -> None:
        """Load the adapter folder ``path`` as model ``name``. A name already loaded counts as done, so
        give each set of weights its own name (`adapter_name` does).

        Raises:
            LMError: the server refused (its message, the name and the path are given).
        """
        folder = str(Path(path).resolve())
        response = self._request("POST", LOAD, {"lora_name": name, "lora_path": folder})
        if response.status_code < 400:
            return
        message = error_message(response)
        if response.status_code == 400 and "already" in message and "loaded" in message:
            return
        raise LMError(
            f"server at {self.base_url} did not load adapter {name!r} from {folder} (HTTP {response.status_code}): "
            f"{message}. The folder must be readable on the server's machine; on vLLM --max-lora-rank must be at "
            "least the adapter's rank and --max-loras at least the adapters in use"
        )

    def unload(self, name: str) -> None:
        """Unload the adapter ``name``.

        Raises:
            LMError: the server refused (e.g. no adapter of that name).
        """
        response = self._request("POST", UNLOAD, {"lora_name": name})
        if response.status_code >= 400:
            raise LMError(
                f"server at {self.base_url} did not unload adapter {name!r} (HTTP {response.status_code}): "
                f"{error_message(response)}"
            )

    def _path(self, endpoint: str) -> str:
        return f"{self.base_url}{endpoint}"


def adapter_name(base_model: str, adapter_id: str) -> str:
    """The name an adapter is served under: the base model's name and the weights' content hash, so a
    retrained adapter gets a new name (and cached replies of the old one are never reused).

    Example:
        >>> adapter_name("HuggingFaceTB/SmolLM2-135M-Instruct", "/runs/a/adapter#3fa2b1c09d8e")
        'SmolLM2-135M-Instruct-lora-3fa2b1c09d8e'
    """
    stem = base_model.rstrip("/").rsplit("/", 1)[-1] or "model"
    return f"{stem}-lora-{adapter_id.rsplit('#', 1)[-1]}"


def same_base_model(entry: dict[str, Any], local_names: list[str]) -> bool:
    """Whether a served model (its ``/v1/models`` entry: ``id``, ``root``) is the local base model known
    by ``local_names`` (a registry name, its hub id, its folder). Names match whole, or by their last
    path part (``HuggingFaceTB/SmolLM2-135M-Instruct`` and ``~/models/SmolLM2-135M-Instruct``), ignoring case.

    Example:
        >>> same_base_model({"id": "HuggingFaceTB/SmolLM2-135M-Instruct"}, ["/m/SmolLM2-135M-Instruct"])
        True
        >>> same_base_model({"id": "qwen", "root": "/m/Qwen2.5-0.5B"}, ["/m/SmolLM2-135M-Instruct"])
        False
    """
    served = [str(entry[k]) for k in ("id", "root") if entry.get(k)]
    return bool(_keys(served) & _keys(local_names))


def _keys(names: list[str]) -> set[str]:
    out = set()
    for name in names:
        text = name.strip().rstrip("/\\").lower()
        if text:
            out |= {text, text.replace("\\", "/").rsplit("/", 1)[-1]}
    return out


def describe(entry: dict[str, Any]) -> str:
    """A served model's ``id`` and ``root`` for messages."""
    root = entry.get("root")
    return json.dumps(entry.get("id")) + (f" (weights {root})" if root and root != entry.get("id") else "")
