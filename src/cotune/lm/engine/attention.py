"""Grouped-query attention on a CPU without copying the key/value heads once per query head.

Qwen2.5 and SmolLM2 keep fewer key/value heads than query heads (Qwen2.5-Coder-1.5B: 2 for 12). transformers'
``sdpa`` attention, given a mask on a CPU, repeats each key/value head for its query heads before attending:
a copy of the whole cache in every layer of every pass. Where a pass has few new tokens per row over a long
cache (the rows' own tokens after a shared prefix, a chunk of a long prefill, joiners) the copy is most of the
pass: 60 rows of 2 new tokens over 1,500 cached ones, bf16, 2-core CPU, one layer: 213 ms with the copy, 36 ms
attending on the grouped heads (``enable_gqa``), the same output. `use_grouped_sdpa` switches a model to an
attention that does the latter on a CPU and is transformers' ``sdpa`` everywhere else (a single new token:
transformers already folds the query heads; CUDA: its kernels need the copy, as transformers says).

torch and transformers are imported when a model is switched, never when this module is imported.
"""

from __future__ import annotations

from typing import Any

NAME = "cotune_grouped_sdpa"  # the name it is registered under in transformers' attention interfaces


def grouped_sdpa(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' ``sdpa_attention_forward``, attending on the grouped key/value heads on a CPU."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q_length = query.shape[2]
    plain = (
        getattr(module, "num_key_value_groups", 1) == 1
        or q_length == 1
        or query.device.type != "cpu"
        or any(kwargs.get(k) is not None for k in ("position_bias", "cache", "softcap"))
    )
    if plain:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = attention_mask is None and causal
    if causal and key.shape[2] > q_length:  # as transformers does: an empty static cache's prefill
        key, value = key[:, :, :q_length], value[:, :, :q_length]
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=causal, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None


def use_grouped_sdpa(model: Any) -> Any:
    """Switch ``model`` (loaded with transformers' ``sdpa`` attention) to `grouped_sdpa`; other models are left
    as they are. Registers the function and sdpa's masks under `NAME` (the same ones each time)."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return model
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, grouped_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return model
