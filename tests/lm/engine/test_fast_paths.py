"""The engine's fast paths answer exactly like the plain ones, on the real SmolLM2-135M.

- `cotune.lm.engine.decode` (finished rows leave the batch) vs transformers' ``generate``;
- an adapter merged into a copy of the weights vs the same adapter as PEFT layers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cotune.lm import registry
from cotune.program import ChainOfThought
from cotune.program.grammar import constraint
from cotune.tasks import load_task
from cotune.tasks.iris import signature as iris_signature

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smol():
    """float32: there the plain path's greedy outputs do not depend on the batch either (in bf16 they do,
    so no two batchings of the same requests are promised equal; benchmarks/engine.py counts agreement)."""
    lm = registry.load("smollm2-135m", dtype="float32", cache=False)
    yield lm
    lm.close()


@pytest.fixture(scope="module")
def iris_batch():
    """12 constrained chain-of-thought Iris calls, with a short reasoning budget (rows end at different steps)."""
    iris = load_task("iris")
    classify = ChainOfThought(iris_signature())
    batch = [classify.messages(**ex.inputs()) for ex in list(iris.dev)[:12]]
    return batch, constraint(classify.signature, budget_tokens=24)


def plain_decoder(lm, batch, **config):
    lm.engine.decoder = "transformers"
    try:
        return lm.generate(batch, **config)
    finally:
        lm.engine.decoder = "cotune"


def both_decoders(lm, batch, **config):
    return lm.generate(batch, **config), plain_decoder(lm, batch, **config)


@pytest.fixture(scope="module")
def iris_plain(smol, iris_batch):
    """The Iris batch through transformers' ``generate`` (computed once: two tests compare against it)."""
    batch, constraint = iris_batch
    return plain_decoder(smol, batch, max_tokens=48, constraint=constraint)


def test_constrained_greedy_equals_transformers_generate(smol, iris_batch, iris_plain):
    batch, constraint = iris_batch
    fast, plain = smol.generate(batch, max_tokens=48, constraint=constraint), iris_plain
    assert [c.text for c in fast] == [c.text for c in plain]
    ends = [(c.completion_tokens, c.finish_reason) for c in fast]
    assert ends == [(c.completion_tokens, c.finish_reason) for c in plain]


QUESTIONS = ["Name one fruit that is red.", "What is 2 + 2?", "Say hello.", "Describe the sea in a few sentences.",
             "What is the capital of France?", "List three colors.", "Write a haiku about snow."]  # fmt: skip


def test_free_greedy_equals_transformers_generate_as_rows_finish_apart(smol):
    batch = [[{"role": "user", "content": q}] for q in QUESTIONS]
    fast, plain = both_decoders(smol, batch, max_tokens=40)
    assert [c.text for c in fast] == [c.text for c in plain]
    assert [c.completion_tokens for c in fast] == [c.completion_tokens for c in plain]
    assert len({c.completion_tokens for c in fast}) > 2  # rows did leave the batch at different steps


def test_free_sampling_equals_transformers_generate(smol, iris_batch):
    batch, _ = iris_batch
    fast, plain = both_decoders(smol, batch[:6], max_tokens=24, temperature=0.9, top_p=0.95)
    assert [c.text for c in fast] == [c.text for c in plain]


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """A rank-8 LoRA adapter on the attention and MLP projections, with random (non-zero) weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("lora") / "adapter"
    path = registry.model_folder("smollm2-135m")
    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32), config)
    for name, param in model.named_parameters():  # scaled so the adapter changes answers without ruining them
        if "lora_B" in name:
            param.data.mul_(0.5)  # at 0.05 no answer of the batch changed (merged and PEFT layers alike)
    model.save_pretrained(str(folder))
    (folder / "cotune_adapter.json").write_text(json.dumps({"base_model": "smollm2-135m"}))
    return Path(folder)


def test_a_merged_adapter_answers_like_peft_layers_with_the_same_cache_keys(smol, lora, iris_batch):
    batch, constraint = iris_batch
    config = {"max_tokens": 32, "constraint": constraint}
    base_before = [c.text for c in smol.generate(batch, **config)]
    merged = smol.with_adapter(lora)
    merged_out = [c.text for c in merged.generate(batch, **config)]
    assert smol.engine.weights.merges == 1
    assert merged_out != base_before  # the adapter does change answers
    assert [c.text for c in smol.generate(batch, **config)] == base_before  # the base weights are untouched
    layered_lm = registry.load("smollm2-135m", dtype="float32", cache=False, merge_adapters=False)
    try:
        layered = layered_lm.with_adapter(lora)
        assert [c.text for c in layered.generate(batch, **config)] == merged_out
        for messages in batch[:3]:
            assert layered.cache_key(messages, merged.config) == merged.cache_key(messages, merged.config)
            assert str(lora) in merged.adapter_id
    finally:
        layered_lm.close()
    assert [c.text for c in merged.generate(batch, **config, rollout_id=1)] == merged_out
    assert smol.engine.weights.merges == 1  # the merged copy was kept, not rebuilt


def test_prompts_sent_again_start_from_their_stored_prefixes_and_answer_the_same(smol, iris_batch, iris_plain):
    batch, constraint = iris_batch
    store = smol.engine.prefixes
    store.clear()
    first = smol.generate(batch[:6], max_tokens=48, constraint=constraint)
    hits, reused = store.stats.hits, store.stats.reused_tokens
    again = smol.generate(batch, max_tokens=48, constraint=constraint)  # 6 prompts stored, 6 new
    assert store.stats.hits - hits >= 6 and store.stats.reused_tokens - reused >= 6 * 100
    plain = iris_plain  # the same batch and settings through transformers' generate
    assert [c.text for c in again] == [c.text for c in plain]
    assert [c.text for c in first] == [c.text for c in plain[:6]]
