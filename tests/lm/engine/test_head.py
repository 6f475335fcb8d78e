"""`contiguous_head_input`: the output head projects a contiguous hidden state, so torch runs it as one
matrix product instead of a batched one over a copied, broadcast weight (`cotune.lm.engine.head`)."""

from __future__ import annotations

import copy
from collections import Counter

import pytest

from cotune.lm import registry
from cotune.lm.engine.head import contiguous_head_input


class _Ops:
    """Counts the aten operations run inside the block, nested ones included (torch's profiler)."""

    def __enter__(self):
        from torch.profiler import profile

        self._profile = profile()
        self._profile.__enter__()
        return self

    def __exit__(self, *exc):
        self._profile.__exit__(*exc)
        self.counts = Counter(event.name.removeprefix("aten::") for event in self._profile.events())


def _tiny_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    model.requires_grad_(False)  # as in a merged adapter copy: what sent the head down the batched path
    return model


def test_the_last_position_is_projected_by_one_matrix_product_with_the_same_logits():
    import torch

    plain = _tiny_llama()
    hooked = contiguous_head_input(copy.deepcopy(plain))
    ids = torch.randint(0, 512, (6, 9))
    with torch.inference_mode():
        with _Ops() as ops:
            fast = hooked(input_ids=ids, logits_to_keep=1).logits
        slow = plain(input_ids=ids, logits_to_keep=1).logits
    assert ops.counts["bmm"] == 0 and ops.counts["mm"] > 0
    assert fast.shape == (6, 1, 512) and torch.allclose(fast, slow, atol=1e-5)


def test_the_hook_is_added_once_and_copies_keep_it():
    model = contiguous_head_input(contiguous_head_input(_tiny_llama()))
    head = model.get_output_embeddings()
    assert len(head._forward_pre_hooks) == 1
    assert len(copy.deepcopy(model).get_output_embeddings()._forward_pre_hooks) == 1
    assert contiguous_head_input(object()) is not None  # a model without a head is returned as it is


@pytest.mark.integration
def test_a_merged_adapter_copy_of_smollm2_prefills_without_a_batched_head(lora):
    import torch

    lm = registry.load("smollm2-135m", dtype="float32", cache=False)
    try:
        tuned = lm.with_adapter(lora)
        merged = lm.engine.weights.model_for(tuned.adapter_id, tuned.adapter)
        assert merged is not lm.engine.model and not any(p.requires_grad for p in merged.parameters())
        ids = torch.randint(0, 1000, (8, 20))
        with torch.inference_mode(), _Ops() as ops:
            logits = merged(input_ids=ids, logits_to_keep=1).logits
        assert logits.shape == (8, 1, merged.config.vocab_size)
        assert ops.counts["bmm"] == 0
        # the engine's calls on the adapter go through that copy
        batch = [[{"role": "user", "content": "Say hello."}], [{"role": "user", "content": "Name a color."}]]
        assert all(c.text for c in tuned.generate(batch, max_tokens=8))
    finally:
        lm.close()
