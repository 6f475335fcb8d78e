"""int8 weights for CPU decoding: every ``nn.Linear`` as a dynamically quantized int8 layer.

On a CPU, decoding a batch of a few dozen rows is bound by reading the weights and by small-row matrix
products: SmolLM2-135M in float32 streams 540 MB of weights per step. PyTorch's dynamic quantization stores
each Linear's weight as int8 (one scale per output channel) and quantizes the activations per call, so the
products run on int8 kernels (fbgemm: AVX2 and up) over a quarter of the bytes. Measured on a 2-core AVX2
CPU, one thread: 60 Linear layers of 576×1536 at 12 rows 63.7 → 19.1 ms, SmolLM2's 49152-row output layer
47.7 → 7.0 ms; a 50-row constrained chain-of-thought Iris batch through `cotune.lm.engine.decode` 37.5 → 19.5 s.

Answers change a little (the weights are rounded to 256 levels per output channel), so int8 is its own
dtype, part of every cache key. The activations are quantized per call, over the whole batch, so like bf16 an
answer may depend on what else shares its batch (and on prefixes stored from earlier calls). Activations, norms, attention and the KV cache stay float32. LoRA adapters are merged
into a float32 copy of the weights and that copy is quantized (`cotune.lm.engine.weights`); training always runs on
the float32 weights.
"""

from __future__ import annotations

import warnings
from typing import Any

from cotune.errors import ConfigError


def quantize_int8(model: Any, device: str) -> Any:
    """``model`` (float32, on ``device``) with its Linear layers replaced by int8 dynamic-quantized ones.

    The model is changed in place and returned; its other modules (embeddings, norms) keep their weights.

    Raises:
        ConfigError: ``device`` is not the CPU (PyTorch's int8 dynamic-quantized kernels are CPU kernels).
    """
    import torch

    if device != "cpu":
        raise ConfigError(f"dtype 'int8' runs on the CPU only, not on {device!r}; use 'bfloat16' or 'float16' there")
    with warnings.catch_warnings():  # torch.ao's eager quantization announces its move to torchao
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)


def is_int8(model: Any) -> bool:
    """Whether ``model`` has int8 dynamic-quantized layers (what `quantize_int8` makes)."""
    from torch.ao.nn.quantized.dynamic import Linear

    return any(isinstance(m, Linear) for m in model.modules())
