"""Where the Θ step trains and where its adapter goes: next to local weights, or into a running server.

- A local model (``capabilities.local_weights``): the adapter trains on the model's own folder and the
  program is bound to ``lm.with_adapter(folder)``.
- A model behind an OpenAI-compatible server (``capabilities.runtime_adapters``): the adapter trains on a
  local copy of the same base model (``base_model=``: a registry name or a folder), is loaded into the
  running server through vLLM's runtime LoRA API, and the program is bound to ``lm.with_adapter(name)``, so
  its requests go to the new adapter. Everything that can refuse — the server's endpoints, its model, the
  local copy — is checked by `weights_target`, before any trace is collected or any step trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotune.errors import ConfigError
from cotune.events import EventSink, emit
from cotune.lm.adapters import adapter_id
from cotune.lm.base import LM


@dataclass
class LocalWeights:
    """Train on the folder the student's model was loaded from; bind to the adapter folder."""

    lm: LM
    path: str
    name: str

    def bind(self, adapter_path: str, events: EventSink | None = None) -> LM:
        return self.lm.with_adapter(adapter_path)


@dataclass
class ServedWeights:
    """Train on a local copy of the served base model; load the adapter into the server; bind to its name."""

    lm: LM
    path: str
    name: str
    runtime: Any  # cotune.lm.remote.runtime_lora.RuntimeLoRA

    def bind(self, adapter_path: str, events: EventSink | None = None) -> LM:
        from cotune.lm.remote.runtime_lora import adapter_name

        served = adapter_name(self.lm.model, adapter_id(adapter_path))
        self.runtime.load(served, adapter_path)
        emit(events, "finetune.adapter_loaded", server=self.runtime.base_url, adapter=served, path=str(adapter_path))
        return self.lm.with_adapter(served)


def weights_target(
    lm: LM, *, base_model: str | Path | None, init: str, events: EventSink | None = None
) -> LocalWeights | ServedWeights:
    """The target for a student bound to ``lm``.

    Raises:
        ConfigError: ``lm`` has neither local weights nor runtime adapter loading; a served ``lm`` without
            ``base_model``, on a server without the runtime-LoRA endpoints, or whose model differs from
            ``base_model`` (both are named); ``init="continue"`` from a served adapter.
    """
    caps = lm.capabilities
    if caps.local_weights:
        return LocalWeights(lm, str(lm.model_path), lm.model)
    if not caps.runtime_adapters:
        raise ConfigError(
            f"BootstrapFinetune trains LoRA adapters for local weights or for a server that loads adapters at "
            f"runtime, but the program is bound to {lm!r} (backend {lm.backend!r}), which has neither; bind the "
            "student to a local model, e.g. cotune.lm.load('smollm2-135m'), or to an OpenAI-compatible server "
            "and pass base_model="
        )
    runtime = lm.runtime_lora()
    where = runtime.base_url
    if base_model is None:
        raise ConfigError(
            f"the program is bound to model {lm.model!r} at {where}: the adapter trains on a local copy of the same "
            "base model, so pass base_model= (CLI: --base-model) with its registry name or folder"
        )
    if init == "continue" and lm.adapter is not None:
        raise ConfigError(
            f"init='continue' needs the local folder of the student's adapter, but it is the served name "
            f"{lm.adapter!r} at {where}; use init='base'"
        )
    from cotune.lm.registry import MODELS, resolve
    from cotune.lm.remote.runtime_lora import describe, same_base_model

    runtime.check()
    entry = runtime.served_model(lm.model)
    path, name = resolve(base_model, events=events)
    known = [name, path, str(base_model)]
    if name.lower() in MODELS:
        known.append(MODELS[name.lower()].hub_id)
    if not same_base_model(entry, known):
        raise ConfigError(
            f"the server at {where} serves {describe(entry)}, but base_model is {str(base_model)!r} ({path}): the "
            "adapter must be trained on the weights the server runs; pass base_model= a copy of the served model"
        )
    emit(events, "finetune.served", server=where, model=lm.model, base_model=name, base_model_path=path)
    return ServedWeights(lm, path, name, runtime)
