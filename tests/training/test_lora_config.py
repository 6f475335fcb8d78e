import dataclasses
import warnings

import pytest

from cotune.errors import ConfigError, UnknownChoiceError
from cotune.training import LoRAConfig, TrainingConfig
from cotune.training.config import flat_settings, split_lora_settings


def test_defaults_are_valid_and_documented():
    lora, training = LoRAConfig(), TrainingConfig()
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules, lora.top_layers) == (
        32,
        64.0,
        0.0,
        "all-linear",
        None,
    )
    assert (training.epochs, training.learning_rate, training.effective_batch_size) == (6, 1e-3, 4)
    for cls in (LoRAConfig, TrainingConfig):
        helps = cls.help()
        assert set(helps) == {f.name for f in dataclasses.fields(cls)}
        assert all(len(text) > 10 for text in helps.values())


def test_the_shape_and_the_training_settings_are_apart():
    assert [f.name for f in dataclasses.fields(LoRAConfig)] == ["r", "alpha", "dropout", "target_modules", "top_layers"]
    assert [f.name for f in dataclasses.fields(TrainingConfig)] == [
        "epochs", "learning_rate", "batch_size", "gradient_accumulation_steps", "max_length", "warmup_ratio",
        "weight_decay", "max_grad_norm", "seed", "bf16", "device", "num_threads", "gradient_checkpointing",
        "share_prefix", "group_by_length",
    ]  # fmt: skip
    assert TrainingConfig(batch_size=4, gradient_accumulation_steps=2).effective_batch_size == 8


@pytest.mark.parametrize(
    "cls, field, value, message",
    [
        (LoRAConfig, "r", 0, "r must be >= 1, got 0 (r must be an integer >= 1)"),
        (LoRAConfig, "r", 2.5, "r must be an integer >= 1, got 2.5"),
        (LoRAConfig, "alpha", 0, "alpha must be > 0, got 0 (alpha must be a number > 0)"),
        (LoRAConfig, "dropout", 1.0, "dropout must be in [0, 1), got 1.0"),
        (LoRAConfig, "dropout", -0.1, "dropout must be in [0, 1), got -0.1"),
        (LoRAConfig, "target_modules", (), "target_modules must be one of 'all-linear' or a non-empty list of non-empty text, got ()"),
        (LoRAConfig, "target_modules", ["q_proj", ""], "non-empty list of non-empty text, got ('q_proj', '')"),
        (LoRAConfig, "target_modules", "attention", "target_modules: unknown target_modules 'attention'; choose one of: all-linear"),
        (LoRAConfig, "top_layers", 0, "top_layers must be >= 1, got 0 (top_layers must be an integer >= 1 or None)"),
        (TrainingConfig, "epochs", 0, "epochs must be >= 1, got 0 (epochs must be an integer >= 1)"),
        (TrainingConfig, "learning_rate", 0.0, "learning_rate must be in (0, 1], got 0.0"),
        (TrainingConfig, "learning_rate", 3.0, "learning_rate must be in (0, 1], got 3.0"),
        (TrainingConfig, "batch_size", 0, "batch_size must be >= 1, got 0"),
        (TrainingConfig, "gradient_accumulation_steps", -1, "gradient_accumulation_steps must be >= 1, got -1"),
        (TrainingConfig, "max_length", 8, "max_length must be >= 16, got 8"),
        (TrainingConfig, "warmup_ratio", 1.0, "warmup_ratio must be in [0, 1), got 1.0"),
        (TrainingConfig, "weight_decay", -1.0, "weight_decay must be >= 0, got -1.0"),
        (TrainingConfig, "max_grad_norm", 0.0, "max_grad_norm must be > 0, got 0.0 (max_grad_norm must be a number > 0 or None)"),
        (TrainingConfig, "seed", -1, "seed must be >= 0, got -1"),
        (TrainingConfig, "num_threads", 0, "num_threads must be >= 1, got 0"),
        (TrainingConfig, "bf16", "yes", "bf16 must be true or false, got 'yes'"),
        (TrainingConfig, "device", "tpu", "device: unknown device 'tpu'; choose one of: auto, cpu, cuda"),
    ],
)  # fmt: skip
def test_a_bad_value_is_refused_naming_the_field_and_the_rule(cls, field, value, message):
    with pytest.raises(ConfigError) as info:
        cls(**{field: value})
    assert str(info.value).startswith(f"invalid {cls.__name__}: ")
    assert message in str(info.value)


def test_all_bad_fields_are_reported_together():
    with pytest.raises(ConfigError) as info:
        TrainingConfig(epochs=0, learning_rate=-1.0, device="tpu")
    message = str(info.value)
    assert "epochs must be" in message and "learning_rate must be" in message and "unknown device 'tpu'" in message


def test_round_trip_and_unknown_fields():
    lora = LoRAConfig(r=8, target_modules=["q_proj", "v_proj"])
    assert lora.target_modules == ("q_proj", "v_proj") and lora.to_dict()["target_modules"] == ["q_proj", "v_proj"]
    assert LoRAConfig.from_dict(lora.to_dict()) == lora
    training = TrainingConfig(epochs=2, max_grad_norm=None)
    assert TrainingConfig.from_dict(training.to_dict()) == training
    assert training.replace(epochs=3).epochs == 3
    with pytest.raises(UnknownChoiceError, match="unknown LoRAConfig field 'rank'; choose one of: alpha, dropout, r,"):
        LoRAConfig.from_dict({"rank": 8})
    with pytest.raises(UnknownChoiceError, match="unknown TrainingConfig field 'lr'; choose one of: batch_size, bf16,"):
        training.replace(lr=0.1)
    with pytest.raises(ConfigError, match="epochs must be >= 1, got 0"):
        training.replace(epochs=0)


def test_a_training_setting_given_to_the_shape_names_where_it_belongs():
    with pytest.raises(ConfigError, match=r"^LoRAConfig has no field 'epochs': it is a setting of TrainingConfig, "
                                          r"write TrainingConfig\(epochs=3\)$"):  # fmt: skip
        LoRAConfig(epochs=3)
    with pytest.raises(ConfigError, match=r"LoRAConfig has no field 'learning_rate': .* TrainingConfig"):
        LoRAConfig.from_dict({"r": 8, "learning_rate": 1e-4})
    with pytest.raises(ConfigError, match=r"TrainingConfig has no field 'r': it is a setting of LoRAConfig"):
        TrainingConfig(r=8)


def test_both_as_one_mapping_keep_the_order_of_the_config_before_the_split():
    flat = flat_settings(LoRAConfig(r=8), TrainingConfig(epochs=2))
    assert list(flat) == [
        "r", "alpha", "dropout", "target_modules", "top_layers", "epochs", "learning_rate", "batch_size",
        "gradient_accumulation_steps", "max_length", "warmup_ratio", "weight_decay", "max_grad_norm", "seed", "bf16",
        "device", "num_threads", "gradient_checkpointing", "share_prefix", "group_by_length",
    ]  # fmt: skip
    assert (flat["r"], flat["epochs"]) == (8, 2)


def test_training_keys_under_lora_move_to_training_with_a_warning_naming_the_new_spelling():
    old = {"lora": {"r": 8, "epochs": 3, "learning_rate": 2e-4}, "num_rollouts": 3}
    with pytest.warns(FutureWarning) as caught:
        new = split_lora_settings(old)
    assert new == {"lora": {"r": 8}, "training": {"epochs": 3, "learning_rate": 2e-4}, "num_rollouts": 3}
    assert [str(w.message) for w in caught] == [
        "lora.epochs is a training setting: write training.epochs",
        "lora.learning_rate is a training setting: write training.learning_rate",
    ]
    assert old["lora"] == {"r": 8, "epochs": 3, "learning_rate": 2e-4}  # the caller's mapping is left as it was


def test_an_explicit_training_value_wins_over_a_moved_key():
    with pytest.warns(FutureWarning) as caught:
        new = split_lora_settings({"lora": {"epochs": 3, "batch_size": 2}, "training": {"epochs": 5}})
    assert new == {"lora": {}, "training": {"epochs": 5, "batch_size": 2}}
    assert len(caught) == 2  # the overridden key warns too: its spelling is still the old one


def test_new_spellings_pass_without_a_warning():
    params = {"lora": {"r": 8}, "training": {"epochs": 3}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert split_lora_settings(params) == params
        assert split_lora_settings({"lora": LoRAConfig(r=8)}) == {"lora": LoRAConfig(r=8)}
        assert split_lora_settings({}) == {}


def test_a_moved_key_beside_a_training_config_object_is_refused_not_dropped():
    with pytest.warns(FutureWarning), pytest.raises(ConfigError, match=r"lora holds training settings \(epochs\)"):
        split_lora_settings({"lora": {"epochs": 3}, "training": TrainingConfig(epochs=5)})


def test_bf16_training_is_for_cuda_devices_that_compute_it_natively(monkeypatch):
    from cotune import hardware

    monkeypatch.setattr(hardware, "bf16_is_fast", lambda device: True)  # a CPU with AMX, a GPU with bf16
    assert TrainingConfig().trains_in_bf16("cuda") and TrainingConfig().trains_in_bf16("cuda:1")
    assert not TrainingConfig().trains_in_bf16("cpu")  # float32 measured faster on a CPU even with bf16 instructions
    assert not TrainingConfig(bf16=False).trains_in_bf16("cuda")
    monkeypatch.setattr(hardware, "bf16_is_fast", lambda device: False)
    assert not TrainingConfig().trains_in_bf16("cuda")
