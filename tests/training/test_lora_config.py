import dataclasses

import pytest

from cotune.errors import ConfigError, UnknownChoiceError
from cotune.training import LoRAConfig


def test_defaults_are_valid_and_documented():
    config = LoRAConfig()
    assert (config.r, config.alpha, config.dropout, config.target_modules) == (32, 64.0, 0.0, "all-linear")
    assert (config.epochs, config.learning_rate, config.effective_batch_size) == (6, 1e-3, 4)
    helps = LoRAConfig.help()
    assert set(helps) == {f.name for f in dataclasses.fields(LoRAConfig)}
    assert all(len(text) > 10 for text in helps.values())


@pytest.mark.parametrize(
    "field, value, why",
    [
        ("r", 0, "integer >= 1"),
        ("r", 2.5, "integer >= 1"),
        ("alpha", 0, "> 0"),
        ("dropout", 1.0, "[0, 1)"),
        ("dropout", -0.1, "[0, 1)"),
        ("target_modules", (), "all-linear"),
        ("target_modules", "attention", "all-linear"),
        ("epochs", 0, "integer >= 1"),
        ("learning_rate", 0.0, "> 0 and <= 1"),
        ("learning_rate", 3.0, "> 0 and <= 1"),
        ("batch_size", 0, "integer >= 1"),
        ("gradient_accumulation_steps", -1, "integer >= 1"),
        ("max_length", 8, "integer >= 16"),
        ("warmup_ratio", 1.0, "[0, 1)"),
        ("weight_decay", -1.0, ">= 0"),
        ("max_grad_norm", 0.0, "> 0 or None"),
        ("seed", -1, "integer >= 0"),
        ("num_threads", 0, "integer >= 1"),
        ("bf16", "yes", "True or False"),
        ("device", "tpu", "auto, cpu, cuda"),
    ],
)
def test_a_bad_value_is_refused_naming_the_field_and_the_range(field, value, why):
    with pytest.raises(ConfigError) as info:
        LoRAConfig(**{field: value})
    assert f"{field}={value!r}" in str(info.value)
    assert why in str(info.value)


def test_all_bad_fields_are_reported_together():
    with pytest.raises(ConfigError) as info:
        LoRAConfig(r=0, epochs=0, learning_rate=-1.0)
    message = str(info.value)
    assert "r=0" in message and "epochs=0" in message and "learning_rate=-1.0" in message


def test_round_trip_and_unknown_fields():
    config = LoRAConfig(r=8, target_modules=["q_proj", "v_proj"], max_grad_norm=None)
    assert config.target_modules == ("q_proj", "v_proj")
    assert LoRAConfig.from_dict(config.to_dict()) == config
    assert config.replace(epochs=2).epochs == 2
    with pytest.raises(UnknownChoiceError, match="unknown LoRAConfig field 'rank'; choose one of: .*r,"):
        LoRAConfig.from_dict({"rank": 8})
    with pytest.raises(ConfigError, match="epochs=0"):
        config.replace(epochs=0)


def test_bf16_training_is_for_cuda_devices_that_compute_it_natively(monkeypatch):
    from cotune import hardware

    monkeypatch.setattr(hardware, "bf16_is_fast", lambda device: True)  # a CPU with AMX, a GPU with bf16
    assert LoRAConfig().trains_in_bf16("cuda") and LoRAConfig().trains_in_bf16("cuda:1")
    assert not LoRAConfig().trains_in_bf16("cpu")  # float32 measured faster on a CPU even with bf16 instructions
    assert not LoRAConfig(bf16=False).trains_in_bf16("cuda")
    monkeypatch.setattr(hardware, "bf16_is_fast", lambda device: False)
    assert not LoRAConfig().trains_in_bf16("cuda")
