"""The frozen-trunk cache (``LoRAConfig.top_layers``): exact, checked, and a real speed-up on SmolLM2.

Tiny randomly initialized models (the `tiny_model` fixture) make the exactness checks fast; the
integration test trains the real SmolLM2-135M on its top layers and serves the adapter.
"""

from __future__ import annotations

import shutil

import pytest

from cotune.errors import ConfigError, TrainingError
from cotune.training import ChatExample, LoRAConfig, TrainingConfig, train_lora
from cotune.training import lora as lora_mod
from cotune.training import trunk as trunk_mod
from cotune.training.trunk import TrunkCache, decoder_layers, first_trained_layer, top_only, trunk_states

SYSTEM = "Given the petal length of an iris flower in cm, name its species.\n\nReply in exactly this format:\nSpecies: <name>"


def example(length: float) -> ChatExample:
    species = "setosa" if length < 2.5 else ("versicolor" if length < 4.9 else "virginica")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Petal Length: {length}"}]
    return ChatExample.create(messages, f"Species: {species}", "classify")


EXAMPLES = [example(x) for x in (1.4, 1.5, 4.0, 4.5, 5.6, 6.1, 1.3, 5.1, 12.25, 3.0)]  # lengths differ: padding


def run(folder, out, monkeypatch=None, no_cache=False, **lora):
    if no_cache:
        monkeypatch.setattr(lora_mod, "checked_trunk", lambda *a, **k: None)
    # float32: the paths agree to float rounding, not to bf16 rounding (the default on a CUDA GPU with bf16)
    training = TrainingConfig(epochs=2, batch_size=3, learning_rate=5e-3, warmup_ratio=0.0, bf16=False)
    events = []
    result = train_lora(EXAMPLES, base_model_path=folder, output_dir=out, lora=LoRAConfig(r=4, alpha=8, **lora),
                        training=training, events=events.append)  # fmt: skip
    start = next(e for e in events if e.name == "finetune.start")
    return result, start.fields["frozen_trunk_layers"]


@pytest.mark.integration
def test_cached_trunk_trains_exactly_like_the_full_forward(tmp_path, tiny_model, monkeypatch):
    folder = tiny_model()
    cached, frozen = run(folder, tmp_path / "cached", top_layers=2)
    assert frozen == 2  # layers 0-1 ran once per example
    full, frozen_full = run(folder, tmp_path / "full", monkeypatch, no_cache=True, top_layers=2)
    assert frozen_full == 0
    assert cached.steps == full.steps == 8
    assert cached.losses == pytest.approx(full.losses, rel=1e-4, abs=1e-6)
    assert cached.losses[-1] < cached.losses[0]

    from safetensors.torch import load_file

    a, b = (
        load_file(tmp_path / "cached" / "adapter_model.safetensors"),
        load_file(tmp_path / "full" / "adapter_model.safetensors"),
    )
    assert a.keys() == b.keys() and all(".layers.2." in k or ".layers.3." in k for k in a)
    assert all((a[k] - b[k]).abs().max() < 1e-4 for k in a)


@pytest.mark.integration
def test_a_model_that_transforms_its_inputs_is_caught_and_trains_through_every_layer(tmp_path, tiny_model, monkeypatch):
    folder = tiny_model("gpt2")  # GPT-2 adds position embeddings to inputs_embeds
    with pytest.warns(RuntimeWarning, match="does not reproduce this model's forward"):
        checked, frozen = run(folder, tmp_path / "checked", top_layers=2, target_modules=("c_attn",))
    assert frozen == 0
    full, _ = run(folder, tmp_path / "full", monkeypatch, no_cache=True, top_layers=2, target_modules=("c_attn",))
    assert checked.losses == pytest.approx(full.losses, rel=1e-5)


@pytest.mark.integration
def test_layer_list_and_first_trained_layer(tmp_path, tiny_model):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model())
    parent, name, layers = decoder_layers(model)
    assert name == "layers" and len(layers) == 4
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], layers_to_transform=[3]))
    assert first_trained_layer(peft) == 3
    with top_only(peft, 3):
        assert list(getattr(parent, name)) == [layers[3]]
    assert getattr(parent, name) is layers  # restored
    full = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tmp_path / "llama"), LoraConfig(r=2, target_modules=["q_proj"])
    )
    assert first_trained_layer(full) == 0
    head = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tmp_path / "llama"),
        LoraConfig(r=2, target_modules=["q_proj"], layers_to_transform=[3], modules_to_save=["lm_head"]),
    )
    assert first_trained_layer(head) is None  # a trained head outside the layers: no cache
    from transformers import AutoTokenizer

    from cotune.training.sft_data import tokenize

    tokenized = [tokenize(e, AutoTokenizer.from_pretrained(tmp_path / "llama"), 256) for e in EXAMPLES]
    assert TrunkCache.build(peft, 3, tokenized, 0, "cpu", 4, max_bytes=1000) is None  # over the memory budget
    cache = TrunkCache.build(peft, 3, tokenized, 0, "cpu", 4)
    assert [s.shape for s in cache.states] == [torch.Size([len(t), 32]) for t in tokenized]


@pytest.mark.integration
def test_the_trunk_runs_a_shared_prefix_once_and_gets_each_sequences_own_states(tmp_path, tiny_model, monkeypatch):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotune.training.sft_data import tokenize
    from cotune.training.shared_prefix import shared_length

    folder = tiny_model()
    peft = get_peft_model(
        AutoModelForCausalLM.from_pretrained(folder),
        LoraConfig(r=2, target_modules=["q_proj"], layers_to_transform=[3]),
    )
    tokenized = [tokenize(e, AutoTokenizer.from_pretrained(folder), 256) for e in EXAMPLES]
    assert shared_length(tokenized) > 16  # the system prompt: one batch of all ten runs it once
    calls = []

    def spy(model, ids, mask, shared, torch):
        calls.append((len(ids), shared))
        return trunk_states(model, ids, mask, shared, torch)

    monkeypatch.setattr(trunk_mod, "trunk_states", spy)
    batched = TrunkCache.build(peft, 3, tokenized, 0, "cpu", 4)
    assert calls == [(10, shared_length(tokenized))]  # one batch, its prefix shared, no fallback
    alone = [TrunkCache.build(peft, 3, [t], 0, "cpu", 4).states[0] for t in tokenized]  # no prefix, no padding
    assert [s.shape for s in batched.states] == [s.shape for s in alone]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(batched.states, alone, strict=True))


@pytest.mark.integration
def test_too_many_top_layers_names_the_model_depth(tmp_path, tiny_model):
    with pytest.raises(TrainingError, match="top_layers=9, but the model has 4 decoder layers; choose 1..4"):
        run(tiny_model(), tmp_path / "x", top_layers=9)


def test_top_layers_must_be_a_positive_integer():
    with pytest.raises(
        ConfigError, match=r"top_layers must be >= 1, got 0 \(top_layers must be an integer >= 1 or None\)"
    ):
        LoRAConfig(top_layers=0)
    assert LoRAConfig(top_layers=4).to_dict()["top_layers"] == 4


@pytest.mark.integration
def test_smollm2_top_layers_adapter_serves_and_changes_answers(smol_path, tmp_path):
    from cotune.lm import registry

    training = TrainingConfig(epochs=3, batch_size=4, learning_rate=3e-3, warmup_ratio=0.0)
    events = []
    result = train_lora(EXAMPLES, base_model_path=smol_path, output_dir=tmp_path / "ad",
                        lora=LoRAConfig(r=8, alpha=16, top_layers=6), training=training, events=events.append)  # fmt: skip
    assert next(e for e in events if e.name == "finetune.start").fields["frozen_trunk_layers"] == 24
    assert result.final_loss < result.losses[0] / 2, result.losses
    lm = registry.load("smollm2-135m", dtype="float32", cache=False)
    try:
        prompt = example(4.7).chat
        base = lm(prompt, max_tokens=8).text
        tuned = lm.with_adapter(str(tmp_path / "ad"))(prompt, max_tokens=8).text
        assert tuned.startswith("Species:") and tuned != base, (base, tuned)
    finally:
        lm.close()
    shutil.rmtree(tmp_path / "ad")
