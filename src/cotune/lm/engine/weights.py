"""Which weights answer a request: the base model, or the base model with a LoRA adapter.

An unmerged PEFT adapter adds two small matrix products and a few more operations to every adapted
layer, and on a CPU, where decoding is bound by per-operation overhead, that made a call on an adapter
about 3× slower than the same call on the base model. So by default (``merge=True``) an adapter is
merged into a copy of the base weights: W' = W + scale·B·A, computed in float32 and rounded once to
the model's dtype (or quantized, for an int8 engine: `cotune.lm.engine.quantize`). The copy then runs at exactly
the base model's cost. The base model itself is never changed, so calls without an adapter are unaffected.
Only the most recently used merged copies are kept (``keep``), each the size of the base model; a different
adapter is merged when first asked for.

With ``merge=False`` adapters are loaded into the base model as PEFT layers and switched per batch
(no extra memory; slower).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from cotune.errors import ConfigError


class AdapterWeights:
    """Gives the model to run for an adapter (or None: the base model). Used by one thread only.

    Args:
        base: the loaded base model (a transformers causal LM, already on its device, in eval mode).
        merge: merge each adapter into a copy of the base weights (see the module docstring).
        keep: how many merged copies to keep (least recently used dropped first).
        prepare: what turns float weights into the weights that run (`cotune.lm.engine.quantize.quantize_int8`), applied
            to a copy of ``base`` (kept as the one that runs: `base`) and to each merged copy; ``base`` itself
            is kept, unchanged, to merge into.
    """

    def __init__(self, base: Any, *, merge: bool = True, keep: int = 1, prepare: Callable[[Any], Any] | None = None):
        if keep < 1:
            raise ConfigError(f"merged adapters to keep must be >= 1, got {keep}")
        self.float_base = base
        self.prepare = prepare
        self.base = base if prepare is None else prepare(copy.deepcopy(base))
        self.merge = merge
        self.keep = keep
        self.merges = 0  # adapters merged so far (a measure of switching between adapters)
        self._merged: OrderedDict[str, Any] = OrderedDict()  # adapter id -> merged model
        self._adapters: dict[str, str] = {}  # adapter id -> PEFT adapter name (merge=False)
        self._adapter_paths: dict[str, str] = {}  # adapter path -> adapter id loaded for it (merge=False)

    def model_for(self, key: str | None, path: str | None) -> Any:
        """The model that answers requests for adapter ``key`` (loaded from ``path``), or the base for None.

        Raises:
            ConfigError: the adapter cannot be loaded, or lacks some of its weights.
        """
        if key is None or not self.merge:
            self._activate(key, path)  # for None: also switches off adapters loaded with merge=False
            return self.base
        model = self._merged.get(key)
        if model is None:
            model = self._merge(key, path)
            self._merged[key] = model
            while len(self._merged) > self.keep:
                self._merged.popitem(last=False)
        self._merged.move_to_end(key)
        return model

    def _merge(self, key: str, path: str) -> Any:
        import torch
        from peft.tuners.lora import LoraLayer

        dtype = self.float_base.dtype
        # Merge in float32 so the merged weight is rounded once, not once per term.
        model = copy.deepcopy(self.float_base).to(torch.float32)
        name = _load(model, key, path)
        for module_name, module in list(model.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge(adapter_names=[name])
                parent_name, _, child = module_name.rpartition(".")
                setattr(model.get_submodule(parent_name), child, module.get_base_layer())
        for attr in ("peft_config", "_hf_peft_config_loaded"):
            if hasattr(model, attr):
                delattr(model, attr)
        self.merges += 1
        return model.to(dtype).eval() if self.prepare is None else self.prepare(model.eval())

    def _activate(self, key: str | None, path: str | None) -> None:
        """Switch the base model to adapter ``key`` (loading it the first time) or, for None, to no adapter."""
        model = self.base
        if key is None:
            if self._adapters:
                model.disable_adapters()
            return
        name = self._adapters.get(key)
        if name is None:
            stale = self._adapter_paths.get(path)
            if stale is not None:  # the adapter was retrained in place: drop the old weights
                model.delete_adapter(self._adapters.pop(stale))
            name = _load(model, key, path)
            self._adapters[key], self._adapter_paths[path] = name, key
        model.set_adapter(name)
        model.enable_adapters()


def _load(model: Any, key: str, path: str) -> str:
    """Load adapter ``path`` into ``model`` as PEFT layers; returns its adapter name.

    Raises:
        ConfigError: it cannot be loaded, or some of its weights are missing from the checkpoint.
    """
    name = f"adapter_{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    try:
        with _quiet_adapter_report():
            info = model.load_adapter(path, adapter_name=name)
    except Exception as e:
        raise ConfigError(f"cannot load LoRA adapter {path}: {type(e).__name__}: {e}") from e
    # transformers lists the *other* adapters' weights as missing from this checkpoint (harmless);
    # a missing weight of this adapter means it would run with freshly initialized LoRA weights
    missing = sorted(k for k in getattr(info, "missing_keys", None) or () if f".{name}." in k)
    if missing:
        model.delete_adapter(name)
        raise ConfigError(f"LoRA adapter {path} lacks {len(missing)} of its weights, e.g. {missing[0]}")
    return name


@contextlib.contextmanager
def _quiet_adapter_report():
    """Hide transformers' load report and PEFT's "multiple adapters" warning while an adapter loads
    (`_load` checks the keys itself; several adapters on one base model is the design)."""
    logger = logging.getLogger("transformers.integrations.peft")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            yield
    finally:
        logger.setLevel(level)
