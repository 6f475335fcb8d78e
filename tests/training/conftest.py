"""Shared by the training tests: the real SmolLM2-135M (float32, no request cache) and tiny random models."""

import pytest


@pytest.fixture(scope="module")
def smol():
    from cotune.lm import registry

    lm = registry.load("smollm2-135m", dtype="float32", cache=False)
    yield lm
    lm.close()


@pytest.fixture(scope="module")
def smol_path():
    """The folder of the real SmolLM2-135M, converted where needed."""
    from cotune.lm import registry

    lm = registry.load("smollm2-135m", dtype="float32", cache=False)
    yield lm.model_path
    lm.close()


@pytest.fixture
def tiny_model(tmp_path, smol_path):
    """``tiny_model(family="llama"|"gpt2")``: a 4-layer random model with SmolLM2's tokenizer, saved as a local
    model folder (fast exactness checks of the training paths)."""

    def make(family: str = "llama"):
        import torch
        from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(smol_path)
        sizes = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512)  # fmt: skip
        torch.manual_seed(0)
        if family == "llama":
            model = LlamaForCausalLM(LlamaConfig(**sizes))
        else:
            model = GPT2LMHeadModel(
                GPT2Config(
                    vocab_size=len(tokenizer),
                    n_embd=32,
                    n_layer=4,
                    n_head=4,
                    n_positions=512,
                    resid_pdrop=0.0,
                    embd_pdrop=0.0,
                    attn_pdrop=0.0,
                )
            )
        folder = tmp_path / family
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder

    return make
