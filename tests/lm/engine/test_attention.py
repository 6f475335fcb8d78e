"""`grouped_sdpa`: attention on the grouped key/value heads, the same outputs as transformers' ``sdpa``."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers.integrations import sdpa_attention  # noqa: E402

from cotune.lm.engine.attention import NAME, grouped_sdpa, use_grouped_sdpa  # noqa: E402


class Module:
    num_key_value_groups = 6
    is_causal = True


def test_attending_on_grouped_heads_equals_repeating_them_with_a_mask(monkeypatch):
    torch.manual_seed(0)
    query, key, value = torch.randn(3, 12, 2, 16), torch.randn(3, 2, 40, 16), torch.randn(3, 2, 40, 16)
    mask = torch.ones(3, 1, 2, 40, dtype=torch.bool)
    mask[0, :, :, :7] = False  # a left-padded row
    expected, _ = sdpa_attention.sdpa_attention_forward(Module(), query, key, value, mask, scaling=0.25)

    def no_copy(*args):
        raise AssertionError("the key/value heads were repeated")

    monkeypatch.setattr(sdpa_attention, "repeat_kv", no_copy)
    got, _ = grouped_sdpa(Module(), query, key, value, mask, scaling=0.25)
    assert got.shape == expected.shape == (3, 2, 12, 16)
    torch.testing.assert_close(got, expected)


def test_a_switched_model_gives_the_logits_of_sdpa_and_others_are_left_alone(tiny_llama):
    model = use_grouped_sdpa(copy.deepcopy(tiny_llama))
    assert model.config._attn_implementation == NAME and tiny_llama.config._attn_implementation == "sdpa"
    ids = torch.randint(1, 96, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, :4] = 0
    with torch.inference_mode():
        past = model(input_ids=ids[:, :8], attention_mask=mask[:, :8], use_cache=True).past_key_values
        got = model(input_ids=ids[:, 8:], attention_mask=mask, past_key_values=past).logits  # 4 new over 8 cached
        ref_past = tiny_llama(input_ids=ids[:, :8], attention_mask=mask[:, :8], use_cache=True).past_key_values
        expected = tiny_llama(input_ids=ids[:, 8:], attention_mask=mask, past_key_values=ref_past).logits
    torch.testing.assert_close(got, expected)
    eager = copy.deepcopy(tiny_llama)
    eager.set_attn_implementation("eager")
    assert use_grouped_sdpa(eager).config._attn_implementation == "eager"
