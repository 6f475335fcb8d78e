"""A micro-batch's shared prompt prefix runs once in training: same losses, same adapter, fewer tokens."""

from __future__ import annotations

import pytest

from cotune.training import ChatExample, LoRAConfig, TrainingConfig, forward, train_lora
from cotune.training import shared_prefix as shared_mod
from cotune.training.sft_data import IGNORE_INDEX, TokenizedExample
from cotune.training.shared_prefix import shared_length

SYSTEM = ("Given the petal length of an iris flower in cm, name its species. The species is exactly one of: "
          "setosa, versicolor, virginica.\n\nReply in exactly this format:\nSpecies: <name>")  # fmt: skip


def example(length: float) -> ChatExample:
    species = "setosa" if length < 2.5 else ("versicolor" if length < 4.9 else "virginica")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Petal Length: {length}"}]
    return ChatExample.create(messages, f"Species: {species}", "classify")


EXAMPLES = [example(x) for x in (1.4, 1.5, 4.0, 4.5, 5.6, 6.1, 1.3, 5.1, 12.25, 3.0)]  # lengths differ: padding


def tokens(prompt: list[int], completion: list[int]) -> TokenizedExample:
    return TokenizedExample(prompt + completion, [IGNORE_INDEX] * len(prompt) + completion)


def test_shared_length_stops_before_the_first_position_the_loss_reads():
    a, b = tokens(list(range(30)), [90, 91]), tokens(list(range(25)) + [77] * 5, [92])
    assert shared_length([a, b]) == 25
    short = tokens(list(range(20)), [93])  # its first completion token is at 20: position 19 predicts it
    assert shared_length([a, b, short]) == 19
    assert shared_length([a, tokens([5] + list(range(1, 30)), [90])]) == 0  # differ at the first token
    assert shared_length([a, b], min_shared=26) == 0
    assert shared_length([a]) == 0


def train(folder, out, monkeypatch, *, share: bool, **lora):
    calls = []
    real = shared_mod.prefix_logits

    def counted(model, shared, *args, **kwargs):
        calls.append(shared)
        return real(model, shared, *args, **kwargs)

    monkeypatch.setattr(forward, "prefix_logits", counted)
    monkeypatch.setattr("cotune.training.trunk.prefix_logits", counted)
    # float32: the two paths agree to float rounding, not to bf16 rounding (the default on a CUDA GPU with bf16)
    training = TrainingConfig(
        epochs=2, batch_size=3, learning_rate=5e-3, warmup_ratio=0.0, share_prefix=share, bf16=False
    )
    events = []
    result = train_lora(EXAMPLES, base_model_path=folder, output_dir=out, lora=LoRAConfig(r=4, alpha=8, **lora),
                        training=training, events=events.append)  # fmt: skip
    monkeypatch.undo()
    assert next(e for e in events if e.name == "finetune.start").fields["shared_prefix"] is share
    return result, calls


@pytest.mark.integration
@pytest.mark.parametrize("top_layers", [None, 2], ids=["every-layer", "top-2-over-the-trunk"])
def test_sharing_the_prefix_trains_exactly_like_running_every_row_whole(tiny_model, tmp_path, monkeypatch, top_layers):
    folder = tiny_model()
    shared, calls = train(folder, tmp_path / "shared", monkeypatch, share=True, top_layers=top_layers)
    assert calls and min(calls) >= shared_mod.MIN_SHARED  # the check and every step's batches of 2-3 rows
    plain, none = train(folder, tmp_path / "plain", monkeypatch, share=False, top_layers=top_layers)
    assert none == []
    assert shared.steps == plain.steps == 8
    assert shared.losses == pytest.approx(plain.losses, rel=1e-4, abs=1e-6)
    assert shared.losses[-1] < shared.losses[0]

    from safetensors.torch import load_file

    a = load_file(tmp_path / "shared" / "adapter_model.safetensors")
    b = load_file(tmp_path / "plain" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-4 for k in a)


@pytest.mark.integration
def test_smollm2_shared_prefix_logits_and_gradients_equal_the_plain_forward(smol_path):
    """On the real model (30 layers, grouped-query attention), one micro-batch of Iris-like prompts."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotune.training.sft_data import tokenize

    tokenizer = AutoTokenizer.from_pretrained(smol_path)
    model = AutoModelForCausalLM.from_pretrained(smol_path, dtype=torch.float32)
    # LoRA on the top layers (the backward stops there), randomly initialized so every adapter weight matters.
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], layers_to_transform=list(range(24, 30)),
                      init_lora_weights=False)  # fmt: skip
    model = get_peft_model(model, lora)
    batch = [tokenize(e, tokenizer, 256) for e in EXAMPLES[:4]]
    n = shared_length(batch)
    assert n >= 40  # the system prompt and the chat template's start
    config = TrainingConfig(bf16=False)  # float32, as the model is loaded: no autocast on a CUDA GPU either
    grads = []
    projected = []  # positions each call of the output head projects
    hook = model.get_output_embeddings().register_forward_hook(
        lambda m, a, out: projected.append(a[0].shape[:-1].numel())
    )
    for share in (True, False):
        model.zero_grad()
        logits, targets = forward.batch_logits(model, batch, [0, 1, 2, 3], None, tokenizer.pad_token_id or 0, config,
                                               "cpu", share)  # fmt: skip
        if share:  # the prefix call projects no position (its cache is all the rows need), the rows only theirs
            assert projected == [0, len(targets)]
        torch.nn.functional.cross_entropy(logits, targets).backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad})
        if share:
            first = logits.detach()
        else:
            assert logits.shape == first.shape and (logits - first).abs().max() < 1e-3
    assert all(torch.allclose(grads[0][k], grads[1][k], rtol=1e-3, atol=1e-5) for k in grads[0])
    hook.remove()
