"""Fixtures of the local-engine tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cotune.lm import registry


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """A rank-8 LoRA adapter with random (non-zero) weights on SmolLM2's attention and MLP projections."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("lora") / "adapter"
    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    base = AutoModelForCausalLM.from_pretrained(str(registry.model_folder("smollm2-135m")), dtype=torch.float32)
    model = get_peft_model(base, config)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.mul_(0.5)
    model.save_pretrained(str(folder))
    (folder / "cotune_adapter.json").write_text(json.dumps({"base_model": "smollm2-135m"}))
    return Path(folder)


def tiny_config(transformers, **settings):
    """A two-layer Llama of width 32: ``settings`` give its vocabulary, context and special tokens."""
    shape = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    return transformers.LlamaConfig(**(shape | {"eos_token_id": None} | settings))


@pytest.fixture(scope="module")
def tiny_llama():
    """A tiny randomly initialized Llama (no weights loaded; pad token 0), for decoding tests."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = tiny_config(transformers, vocab_size=96, max_position_embeddings=256, bos_token_id=None, pad_token_id=0)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    """An `HFEngine` on a tiny randomly initialized Llama with SmolLM2's tokenizer (its files only: no weights are
    loaded), float32 on the CPU."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from cotune.lm.engine.hf_engine import HFEngine

    source = registry.model_folder("smollm2-135m")
    if not (source / "tokenizer.json").exists():
        pytest.skip("SmolLM2's tokenizer is not installed")
    folder = tmp_path_factory.mktemp("tiny")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (source / name).exists():
            shutil.copy(source / name, folder / name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    torch.manual_seed(0)
    config = tiny_config(
        transformers,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(str(folder))
    engine = HFEngine(folder, device="cpu", dtype="float32")
    yield engine
    engine.close()


@pytest.fixture
def drive():
    """``drive(engine, rows, joins)``: ``engine._run`` on ``rows`` (payloads: messages, seed, config) of the
    cotune decoder, driven here, sending ``joins[k]`` (payloads) at its k-th open step; the completions."""
    from cotune.lm.engine.batching import Open

    def run(engine, rows, joins=None):
        joins = dict(joins or {})
        steps = engine._run((None, None, None), list(rows))
        opened, sent = 0, None
        try:
            while True:
                kind = steps.send(sent)
                sent = None
                if isinstance(kind, Open):
                    sent, opened = joins.pop(opened, None), opened + 1
        except StopIteration as done:
            assert not joins, f"joins never sent: {joins}"  # the test must really have joined them
            return done.value

    return run
