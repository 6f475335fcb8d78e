"""LoRA training on the real SmolLM2-135M (integration: a few steps on CPU, well under a minute each)."""

from __future__ import annotations

import json

import pytest

from cotune.errors import ConfigError, TrainingError
from cotune.training import ChatExample, LoRAConfig, TrainingConfig, data_hash, read_adapter_metadata, train_lora
from cotune.training.config import flat_settings

SYSTEM = "Given the petal length of an iris flower in cm, name its species.\n\nReply in exactly this format:\nSpecies: <name>"


def iris_example(length: float) -> ChatExample:
    species = "setosa" if length < 2.5 else ("versicolor" if length < 4.9 else "virginica")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Petal Length: {length}"}]
    return ChatExample.create(messages, f"Reasoning: a petal of {length} cm.\nSpecies: {species}", "classify")


EXAMPLES = [iris_example(x) for x in (1.4, 1.5, 4.0, 4.5, 5.6, 6.1, 1.3, 5.1)]


@pytest.mark.integration
def test_loss_goes_down_the_adapter_saves_with_metadata_and_changes_the_model(smol, tmp_path):
    events = []
    lora, training = (
        LoRAConfig(r=8, alpha=16),
        TrainingConfig(epochs=3, batch_size=4, learning_rate=2e-3, warmup_ratio=0.0),
    )
    result = train_lora(EXAMPLES, base_model_path=smol.model_path, output_dir=tmp_path / "ad", lora=lora,
                        training=training, base_model=smol.model, events=events.append)  # fmt: skip

    assert result.steps == 6 and len(result.losses) == 6
    assert result.final_loss < result.losses[0] / 2, result.losses
    assert result.n_examples == 8 and result.peak_memory_bytes > 0 and result.device == "cpu"
    losses = [e.fields["loss"] for e in events if e.name == "progress.advance"]
    assert len(losses) == 6  # the progress bar carries the loss of every step

    folder = tmp_path / "ad"
    assert {"adapter_config.json", "adapter_model.safetensors", "cotune_adapter.json"} <= {
        p.name for p in folder.iterdir()
    }
    meta = read_adapter_metadata(folder)
    assert meta["base_model"] == "smollm2-135m" and meta["base_model_path"] == smol.model_path
    assert meta["data_hash"] == data_hash(EXAMPLES) and meta["hyperparameters"] == flat_settings(lora, training)
    assert meta["final_loss"] == pytest.approx(result.final_loss) and meta["steps"] == 6
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == 8  # unmerged PEFT adapter

    prompt = iris_example(4.7).chat
    base = smol(prompt, max_tokens=24).text
    tuned_lm = smol.with_adapter(str(folder))
    tuned = tuned_lm(prompt, max_tokens=24).text
    assert tuned != base and "Species:" in tuned, (base, tuned)
    assert smol(prompt, max_tokens=24).text == base  # the base model itself is untouched

    # continuing from the adapter starts where the first run ended, not from the base model's loss
    more = train_lora(EXAMPLES, base_model_path=smol.model_path, output_dir=tmp_path / "more",
                      lora=lora, training=training.replace(epochs=1, batch_size=8), init_adapter=folder)  # fmt: skip
    assert more.losses[0] < result.losses[0] / 2
    assert read_adapter_metadata(tmp_path / "more")["init_adapter"] == str(folder)


@pytest.mark.integration
def test_training_failures_name_their_cause(smol, tmp_path):
    with pytest.raises(TrainingError, match="PEFT refused the LoRA setup"):
        train_lora(EXAMPLES[:1], base_model_path=smol.model_path, output_dir=tmp_path / "x",
                   lora=LoRAConfig(target_modules=["no_such_layer"]), training=TrainingConfig(epochs=1))  # fmt: skip
    with pytest.raises(TrainingError, match="longer than max_length=16"):
        train_lora(EXAMPLES[:1], base_model_path=smol.model_path, output_dir=tmp_path / "y",
                   training=TrainingConfig(max_length=16, epochs=1))  # fmt: skip


def test_refusals_that_need_no_model(tmp_path):
    with pytest.raises(TrainingError, match="no training examples"):
        train_lora([], base_model_path=tmp_path, output_dir=tmp_path / "out")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(TrainingError, match="mine exists and is not an adapter folder"):
        train_lora(EXAMPLES, base_model_path=tmp_path, output_dir=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(TrainingError, match="has no config.json"):
        train_lora(
            EXAMPLES, base_model_path=tmp_path, output_dir=tmp_path / "out", training=TrainingConfig(device="cpu")
        )
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="device='cuda' but torch sees no CUDA device"):
            train_lora(
                EXAMPLES, base_model_path=tmp_path, output_dir=tmp_path / "out", training=TrainingConfig(device="cuda")
            )
    with pytest.raises(ConfigError, match="unknown device 'gpu'; choose one of: auto, cpu, cuda"):
        TrainingConfig(device="gpu")
    with pytest.raises(TrainingError, match="no cotune_adapter.json"):
        read_adapter_metadata(tmp_path)


def test_batches_cover_every_example_once_and_group_similar_lengths():
    import random

    from cotune.training.lora import _batches

    draw = random.Random(1)
    lengths = [draw.randint(10, 500) for _ in range(37)]
    batches = _batches(lengths, 4, random.Random(0), by_length=True)
    assert sorted(i for b in batches for i in b) == list(range(37))
    assert [len(b) for b in batches].count(4) == 9
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    shuffled = list(range(37))
    random.Random(2).shuffle(shuffled)
    naive = sum(max(lengths[i] for i in shuffled[k : k + 4]) * len(shuffled[k : k + 4]) for k in range(0, 37, 4))
    assert padded < naive  # less padding than batches in random order
    assert batches != _batches(lengths, 4, random.Random(1), by_length=True)  # the order changes with the seed


def test_random_batches_mix_labels_whose_names_differ_in_length():
    """Iris-like: 12 examples of each of three labels, each label's sequences one length. Grouped by length,
    every batch of a set smaller than the sorting window holds one label, every epoch; random batches (the
    default) mix them, and cover every example once."""
    import random

    from cotune.training.config import TrainingConfig
    from cotune.training.lora import _batches

    assert TrainingConfig().group_by_length is False
    lengths = [40] * 12 + [42] * 12 + [43] * 12
    rng = random.Random(0)
    grouped = [_batches(lengths, 4, rng, by_length=True) for _ in range(3)]
    assert all(len({lengths[i] for i in b}) == 1 for epoch in grouped for b in epoch)
    mixed = [_batches(lengths, 4, rng, by_length=False) for _ in range(3)]
    for epoch in mixed:
        assert sorted(i for b in epoch for i in b) == list(range(36))
    assert sum(len({lengths[i] for i in b}) > 1 for epoch in mixed for b in epoch) >= 15  # of 27 batches
    assert mixed[0] != mixed[1]


def test_learning_rate_warms_up_then_decays_to_zero():
    from cotune.training.lora import _linear_schedule

    factor = _linear_schedule(10, 0.2)
    values = [factor(step) for step in range(10)]
    assert values[0] < values[1] < values[2] == 1.0 > values[3] and values[-1] > 0
    assert values == sorted(values[:3]) + sorted(values[3:], reverse=True)


def test_completion_logits_with_and_without_logits_to_keep():
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from cotune.training.forward import completion_logits

    table = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(2, 3, 5)
    keep = torch.tensor([[False, True, True], [True, False, False]])

    def with_keep(input_ids, attention_mask, logits_to_keep):
        return SimpleNamespace(logits=table[logits_to_keep])

    def without_keep(input_ids, attention_mask):
        return SimpleNamespace(logits=table)

    for model in (with_keep, without_keep):
        out = completion_logits(model, None, None, keep)
        assert out.shape == (3, 5) and torch.equal(out, table[keep])


def test_training_leaves_process_wide_state_alone(tmp_path):
    import random

    torch = pytest.importorskip("torch")
    random.seed(123)
    torch.manual_seed(123)
    python_state, torch_state, threads = random.getstate(), torch.get_rng_state(), torch.get_num_threads()
    with pytest.raises(TrainingError, match="has no config.json"):  # fails after setup, before loading weights
        train_lora(EXAMPLES, base_model_path=tmp_path, output_dir=tmp_path / "out",
                   training=TrainingConfig(device="cpu", seed=7, num_threads=max(1, threads - 1) if threads > 1 else 2))  # fmt: skip
    assert random.getstate() == python_state
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert torch.get_num_threads() == threads


def test_thread_count_is_set_inside_the_block_and_restored_after_an_error():
    torch = pytest.importorskip("torch")
    from cotune.training.lora import torch_threads

    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    with pytest.raises(RuntimeError, match="boom"), torch_threads(wanted):
        assert torch.get_num_threads() == wanted
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_adapter_initialization_draws_from_its_own_seeded_generator():
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from cotune.training.scoped import init_lora_weights

    def adapter(seed):
        base = torch.nn.Sequential()
        base.add_module("proj", torch.nn.Linear(8, 8))
        model = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["proj"]))
        torch.manual_seed(99)
        state = torch.get_rng_state()
        init_lora_weights(model, seed)
        assert torch.equal(torch.get_rng_state(), state)  # the default generator was not drawn from
        layer = model.base_model.model.proj
        return layer.lora_A["default"].weight.detach().clone(), layer.lora_B["default"].weight.detach().clone()

    a0, b0 = adapter(0)
    again, _ = adapter(0)
    other, _ = adapter(1)
    assert torch.equal(a0, again) and not torch.equal(a0, other)
    assert a0.abs().sum() > 0 and b0.abs().sum() == 0  # A random, B zero: the adapter starts as a no-op
    bound = 1 / 8**0.5  # Kaiming-uniform with a=sqrt(5) over fan_in=8, as nn.Linear and PEFT draw it
    assert a0.abs().max() <= bound


@pytest.mark.integration
def test_same_seed_same_adapter_and_the_callers_random_state_is_untouched(smol, tmp_path):
    import random

    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    lora, training = (
        LoRAConfig(r=4, alpha=8),
        TrainingConfig(epochs=1, batch_size=2, learning_rate=1e-3, warmup_ratio=0.0),
    )
    random.seed(5)
    torch.manual_seed(5)
    python_state, torch_state = random.getstate(), torch.get_rng_state()
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        result = train_lora(EXAMPLES[:4], base_model_path=smol.model_path, output_dir=tmp_path / name,
                            lora=lora, training=training.replace(seed=seed))  # fmt: skip
        runs[name] = (result.losses, load_file(str(tmp_path / name / "adapter_model.safetensors")))
    assert random.getstate() == python_state and torch.equal(torch.get_rng_state(), torch_state)
    assert runs["a"][0] == runs["b"][0]
    assert all(torch.equal(runs["a"][1][k], runs["b"][1][k]) for k in runs["a"][1])
    assert any(not torch.equal(runs["a"][1][k], runs["c"][1][k]) for k in runs["a"][1] if "lora_A" in k)
