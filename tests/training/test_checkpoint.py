"""A LoRA training stopped halfway resumes from its checkpoint: the same losses and the same adapter as a
training that never stopped, and a checkpoint of another training is not taken up."""

from __future__ import annotations

import pytest
from test_lora_training import EXAMPLES  # eight Iris-like chat examples

from cotune.training import LoRAConfig, TrainingConfig, train_lora
from cotune.training import checkpoint as checkpoint_mod
from cotune.training.checkpoint import checkpoint_path

TRAINING = TrainingConfig(epochs=2, batch_size=2, learning_rate=5e-3, warmup_ratio=0.25, bf16=False)  # 8 steps
LORA = LoRAConfig(r=4, alpha=8)


class Stop(Exception):
    """Stands for a kill in the middle of training."""


def stopping_after(steps: int, events: list):
    def sink(event):
        events.append(event)
        if event.name == "progress.advance" and event.fields["done"] == steps:
            raise Stop

    return sink


@pytest.mark.integration
def test_a_stopped_training_resumes_to_the_adapter_it_would_have_trained(tiny_model, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    folder = tiny_model()
    whole = train_lora(EXAMPLES, base_model_path=folder, output_dir=tmp_path / "whole", lora=LORA, training=TRAINING)
    assert not checkpoint_path(tmp_path / "whole").exists()  # under the 2 minutes between saves: none written

    monkeypatch.setattr(checkpoint_mod, "EVERY_SECONDS", 0.0)  # a save after every step
    out, first = tmp_path / "resumed", []
    with pytest.raises(Stop):  # step 5 finishes, the stop comes before its save: steps 1-4 are kept
        train_lora(EXAMPLES, base_model_path=folder, output_dir=out, lora=LORA, training=TRAINING,
                   events=stopping_after(5, first))  # fmt: skip
    assert checkpoint_path(out).is_file() and not (out / "adapter_model.safetensors").exists()
    again = []
    resumed = train_lora(EXAMPLES, base_model_path=folder, output_dir=out, lora=LORA, training=TRAINING,
                         events=again.append)  # fmt: skip
    start = next(e for e in again if e.name == "finetune.start")
    assert start.fields["resumed_at_step"] == 4
    steps_run = [e.fields["done"] for e in again if e.name == "progress.advance"]
    assert steps_run == [4, 5, 6, 7, 8]  # the progress bar starts at the steps done
    assert resumed.steps == whole.steps == 8
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-5, abs=1e-7)
    a, b = load_file(out / "adapter_model.safetensors"), load_file(tmp_path / "whole" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-5 for k in a)
    assert not checkpoint_path(out).exists()  # removed once the adapter is saved


@pytest.mark.integration
def test_a_checkpoint_of_other_settings_is_not_taken_up(tiny_model, tmp_path, monkeypatch):
    folder = tiny_model()
    monkeypatch.setattr(checkpoint_mod, "EVERY_SECONDS", 0.0)
    out = tmp_path / "ad"
    with pytest.raises(Stop):
        train_lora(EXAMPLES, base_model_path=folder, output_dir=out, lora=LORA, training=TRAINING,
                   events=stopping_after(3, []))  # fmt: skip
    events = []
    result = train_lora(EXAMPLES, base_model_path=folder, output_dir=out, lora=LORA,
                        training=TRAINING.replace(learning_rate=1e-3), events=events.append)  # fmt: skip
    assert next(e for e in events if e.name == "finetune.start").fields["resumed_at_step"] == 0
    assert result.steps == 8 and not checkpoint_path(out).exists()


@pytest.mark.integration
def test_a_finished_adapter_of_the_same_training_is_not_trained_again(tiny_model, tmp_path):
    """A stop after the adapter was saved but before its step finished (the evaluation after a Θ step): the
    resumed run finds the adapter this training produced and takes its result; other settings train anew."""
    folder = tiny_model()
    out = tmp_path / "ad"
    first = train_lora(EXAMPLES, base_model_path=folder, output_dir=out, lora=LORA, training=TRAINING)
    written = (out / "adapter_model.safetensors").stat().st_mtime_ns
    events = []
    again = train_lora(EXAMPLES, base_model_path=folder, output_dir=out, lora=LORA, training=TRAINING,
                       events=events.append)  # fmt: skip
    assert [e.name for e in events] == ["finetune.reused"]
    assert again == first and (out / "adapter_model.safetensors").stat().st_mtime_ns == written
    events.clear()
    other = train_lora(EXAMPLES[:6], base_model_path=folder, output_dir=out, lora=LORA, training=TRAINING,
                       events=events.append)  # fmt: skip
    assert "finetune.start" in [e.name for e in events] and other.n_examples == 6 and other.steps == 6
