"""What `cotune serve` serves: the base model and its adapters by name, and vLLM's runtime LoRA API.

Adapters given at start (``--adapter NAME=PATH``) and adapters loaded at runtime (``POST
/v1/load_lora_adapter``, only with ``runtime_lora=True``, as vLLM needs ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``)
are served alike: a request whose ``model`` is NAME runs on ``lm.with_adapter(PATH)``. Replies to the two
endpoints follow vLLM's: 200 with a ``Success: ...`` text, or an error naming the adapter
(``InvalidUserInput`` / ``NotFoundError`` / ``BadRequestError``). Requests are counted per model name.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

from cotune.errors import ConfigError
from cotune.lm.adapters import adapter_weights
from cotune.lm.base import LM
from cotune.serve.protocol import RequestError

LORA_ENDPOINTS = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")


def _uncached(lm: LM) -> LM:
    """The same model (weights, batcher, adapter) with its request cache bypassed."""
    if lm.cache is None:
        return lm
    new = copy.copy(lm)  # shallow: shares the loaded model; LM.__deepcopy__ keeps deep copies away too
    new.cache = None
    return new


class ServedModels:
    """The models of one server, by the name clients send as ``model``; safe to change while serving.

    Args:
        lm: the base model, served as ``name``.
        name: its served name.
        adapters: adapter name -> folder, loaded now (so a bad one fails at start).
        runtime_lora: whether the runtime LoRA endpoints are on.

    Raises:
        ConfigError: an adapter named like the model, or a backend that cannot load adapters.
    """

    def __init__(self, lm: LM, name: str, adapters: Mapping[str, str] | None = None, *, runtime_lora: bool = False):
        self.base, self.default, self.runtime_lora = lm, name, runtime_lora
        if runtime_lora and not lm.capabilities.adapters:
            raise ConfigError(f"runtime LoRA loading needs a backend with adapters; the {lm.backend} backend has none")
        self._models: dict[str, LM] = {name: lm}
        self._paths: dict[str, str] = {}
        self._uncached: dict[str, LM] = {name: _uncached(lm)}
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        for adapter_name, path in (adapters or {}).items():
            if adapter_name in self._models:
                raise ConfigError(f"adapter name {adapter_name!r} is already the served model's name; pick another")
            self._add(adapter_name, lm.with_adapter(path), str(path))

    def _add(self, name: str, lm: LM, path: str) -> None:
        self._models[name], self._uncached[name], self._paths[name] = lm, _uncached(lm), path

    def snapshot(self) -> dict[str, LM]:
        """Name -> LM now (a copy: a load or unload during a request does not change what it sees)."""
        with self._lock:
            return dict(self._models)

    def __iter__(self):
        return iter(self.snapshot())

    def pick(self, name: str, *, cached: bool) -> LM:
        """The LM for a request to ``name``, with or without the request cache; counts the request."""
        with self._lock:
            self.requests[name] += 1
            return (self._models if cached else self._uncached)[name]

    def cards(self, created: int) -> list[dict[str, Any]]:
        """``GET /v1/models`` entries, shaped like vLLM's: ``root`` is where the weights are, ``parent`` the
        base model of an adapter."""
        root = self.base.model_path or self.base.model
        with self._lock:
            paths = dict(self._paths)
        cards = [
            {
                "id": self.default,
                "object": "model",
                "created": created,
                "owned_by": "cotune",
                "root": root,
                "parent": None,
            }
        ]
        cards += [
            {"id": n, "object": "model", "created": created, "owned_by": "cotune", "root": p, "parent": self.default}
            for n, p in paths.items()
        ]
        return cards

    def handle_lora(self, path: str, body: Any) -> str:
        """Answer ``POST /v1/load_lora_adapter`` or ``/v1/unload_lora_adapter``; returns vLLM's success text.

        Raises:
            RequestError: vLLM's errors: 400 a missing field or a name already loaded, 404 an unknown
                adapter, 400 an adapter folder the backend refuses.
        """
        body = body if isinstance(body, dict) else {}
        name, folder = body.get("lora_name"), body.get("lora_path")
        if path == LORA_ENDPOINTS[0]:
            if not isinstance(name, str) or not name or not isinstance(folder, str) or not folder:
                raise RequestError(400, "Both 'lora_name' and 'lora_path' must be provided.", kind="InvalidUserInput")
            return self.load(name, folder)
        if not isinstance(name, str) or not name:
            raise RequestError(
                400, "either 'lora_name' and 'lora_int_id' needs to be provided.", kind="InvalidUserInput"
            )
        return self.unload(name)

    def load(self, name: str, folder: str) -> str:
        with self._lock:
            if name in self._models:
                what = "is the served model's name" if name == self.default else "has already been loaded"
                raise RequestError(400, f"The lora adapter '{name}' {what}.", kind="InvalidUserInput")
        try:
            adapter_weights(folder)  # whatever the backend, a folder without adapter weights is refused here
            lm = self.base.with_adapter(folder)  # checks its base model; the weights load on first use
        except ConfigError as e:
            kind, status = ("NotFoundError", 404) if "not a LoRA adapter folder" in str(e) else ("BadRequestError", 400)
            raise RequestError(
                status, f"No adapter found for {folder}: {e}" if status == 404 else str(e), kind=kind
            ) from None
        with self._lock:
            if name in self._models:  # another request loaded the same name meanwhile
                raise RequestError(400, f"The lora adapter '{name}' has already been loaded.", kind="InvalidUserInput")
            self._add(name, lm, folder)
        return f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, name: str) -> str:
        with self._lock:
            if name not in self._paths:
                raise RequestError(404, f"The lora adapter '{name}' cannot be found.", kind="NotFoundError")
            for table in (self._models, self._uncached, self._paths):
                del table[name]
        return f"Success: LoRA adapter '{name}' removed successfully."
