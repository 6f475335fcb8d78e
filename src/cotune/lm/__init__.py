"""Language models: the batched LM protocol, backends, cache, usage and the model registry.

Backends that need torch or transformers are imported only when used.
"""

from cotune.lm.base import LM, GenerationConfig
from cotune.lm.cache import RequestCache
from cotune.lm.cached import CachedLM
from cotune.lm.completion import Completion
from cotune.lm.fake import FakeLM
from cotune.lm.usage import Usage


def load(name: str = "smollm2-135m", **kwargs):
    """Load a model by registry name, local folder, GGUF file or hub id. See `cotune.lm.registry.load`."""
    from cotune.lm.registry import load as _load

    return _load(name, **kwargs)


def __getattr__(name: str):
    if name == "HFLM":
        from cotune.lm.engine.hf import HFLM

        return HFLM
    if name in ("from_spec", "list_models"):
        from cotune.lm import registry

        return getattr(registry, name)
    if name == "OpenAICompatible":
        from cotune.lm.remote.openai_compat import OpenAICompatible

        return OpenAICompatible
    raise AttributeError(f"module 'cotune.lm' has no attribute {name!r}")


__all__ = [
    "LM",
    "CachedLM",
    "Completion",
    "FakeLM",
    "GenerationConfig",
    "HFLM",
    "OpenAICompatible",
    "RequestCache",
    "Usage",
    "from_spec",
    "list_models",
    "load",
]
