"""dtype "int8": a local model's Linear layers as int8 dynamic-quantized ones (`cotune.lm.engine.quantize`)."""

from __future__ import annotations

import pytest

from cotune.errors import ConfigError
from cotune.experiment.config import ExperimentConfig
from cotune.lm import registry
from cotune.lm.engine.quantize import is_int8, quantize_int8
from cotune.program import ChainOfThought
from cotune.program.format import parse
from cotune.program.grammar import constraint
from cotune.tasks import load_task
from cotune.tasks.iris import signature as iris_signature


def test_quantize_replaces_every_linear_and_keeps_the_rest():
    import torch

    model = torch.nn.Sequential(
        torch.nn.Embedding(10, 8), torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)
    )
    x = torch.tensor([[1, 2, 3]])
    before = model(x)
    quantized = quantize_int8(model, "cpu")
    assert is_int8(quantized) and not any(type(m) is torch.nn.Linear for m in quantized.modules())
    assert isinstance(quantized[0], torch.nn.Embedding)
    after = quantized(x)
    assert after.shape == before.shape and not torch.equal(after, before)  # rounded weights, close answers
    assert torch.allclose(after, before, atol=0.05)


def test_int8_off_the_cpu_or_on_peft_layers_is_refused_before_loading():
    with pytest.raises(ConfigError, match="dtype 'int8' runs on the CPU only, not on 'cuda'"):
        quantize_int8(object(), "cuda")
    with pytest.raises(ConfigError, match="dtype 'int8' needs merge_adapters=True"):
        registry.load("smollm2-135m", dtype="int8", merge_adapters=False, cache=False)


def test_experiment_config_names_a_bad_dtype_and_the_choices():
    with pytest.raises(
        ConfigError, match="dtype: unknown dtype 'int4'; choose one of: auto, bfloat16, float16, float32, int8"
    ):
        ExperimentConfig.from_dict({"dtype": "int4"})
    assert ExperimentConfig.from_dict({"dtype": "int8"}).dtype == "int8"


# -- on SmolLM2-135M -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol8():
    lm = registry.load("smollm2-135m", dtype="int8", cache=False)
    yield lm
    lm.close()


@pytest.mark.integration
def test_int8_smollm2_answers_in_format_and_keys_its_cache_apart(smol8):
    assert smol8.dtype == "int8" and is_int8(smol8.engine.model)
    assert not is_int8(smol8.engine.weights.float_base)  # kept in float32, to merge adapters into
    iris = load_task("iris")
    classify = ChainOfThought(iris_signature())
    batch = [classify.messages(**ex.inputs()) for ex in list(iris.dev)[:8]]
    out = smol8.generate(batch, max_tokens=48, constraint=constraint(classify.signature, budget_tokens=24))
    for completion in out:  # every constrained answer parses into one of the three species
        assert parse(classify.signature, completion.text)["species"] in ("setosa", "versicolor", "virginica")
        assert completion.finish_reason == "stop"
    assert smol8.spec()["dtype"] == "int8"
    float_key = registry.load("smollm2-135m", dtype="float32", cache=False)
    try:
        assert float_key.cache_key(batch[0], smol8.config) != smol8.cache_key(batch[0], smol8.config)
        assert "dtype" not in float_key.spec()
    finally:
        float_key.close()
    assert registry.from_spec(smol8.spec(), like=smol8).engine is smol8.engine  # a saved int8 LM comes back int8


@pytest.mark.integration
def test_an_adapter_on_int8_is_merged_in_float32_then_quantized(smol8, lora):
    batch = [[{"role": "user", "content": q}] for q in ("Name one fruit that is red.", "Say hello.", "What is 2 + 2?")]
    base = smol8.engine.model
    weight = base.model.layers[0].self_attn.q_proj.weight().dequantize().clone()
    before = [c.text for c in smol8.generate(batch, max_tokens=16)]
    tuned = smol8.with_adapter(lora)
    after = [c.text for c in tuned.generate(batch, max_tokens=16)]
    merged = smol8.engine.weights.model_for(tuned.adapter_id, tuned.adapter)
    assert is_int8(merged) and merged is not smol8.engine.model and smol8.engine.weights.merges == 1
    assert after != before  # the adapter does change answers
    # the int8 base is untouched (its answers are not compared: int8 activations are quantized per batch, so
    # like bf16 an answer may depend on what else is in the batch and on prefixes stored from earlier calls)
    assert smol8.engine.model is base and smol8.engine.weights.model_for(None, None) is base
    assert base.model.layers[0].self_attn.q_proj.weight().dequantize().equal(weight)
