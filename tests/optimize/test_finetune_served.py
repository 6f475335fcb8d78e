"""BootstrapFinetune on a program bound to an OpenAI-compatible server (`cotune serve --runtime-lora` over
FakeLM on 127.0.0.1): traces come from the server, training is recorded instead of run, the adapter is
loaded into the server and the tuned program's requests go to it. Real training: the integration test
in tests/optimize/test_better_together_served.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_tasks import Parity, metric, parity_data, parity_lm

from cotune.errors import ConfigError
from cotune.evaluate import evaluate
from cotune.lm.remote.openai_compat import OpenAICompatible
from cotune.optimize.finetune import BootstrapFinetune
from cotune.serve.server import start_server
from cotune.training import LoRAConfig, TrainResult, data_hash


@pytest.fixture
def trained(monkeypatch):
    """Replace LoRA training by a recorder that writes an adapter folder (config + weights)."""
    calls = []

    def fake_train_lora(examples, *, base_model_path, output_dir, lora, training, base_model, init_adapter, events):
        calls.append({"base_model_path": base_model_path, "base_model": base_model, "n": len(examples)})
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "adapter_config.json").write_text("{}")
        (out / "adapter_model.safetensors").write_bytes(repr(examples).encode())
        return TrainResult(str(out), [2.0, 1.0], 1.0, 0.1, 2, len(examples), 100, 0, "cpu", data_hash(examples))

    monkeypatch.setattr("cotune.training.trainer.train_lora", fake_train_lora)
    return calls


def local_copy(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


@pytest.fixture
def fake():
    lm = parity_lm("01234")
    lm._name = "parity-135m"
    return lm


def test_traces_from_the_server_adapter_loaded_into_it_and_used(trained, fake, tmp_path):
    base = local_copy(tmp_path, "parity-135m")
    events = []
    with start_server(fake, runtime_lora=True) as server:
        lm = OpenAICompatible("parity-135m", base_url=server.url, cache=False, constrained=False)
        program = Parity().bind(lm)
        tuner = BootstrapFinetune(metric, lora=LoRAConfig(r=4), base_model=base, output_dir=tmp_path / "out")
        tuned = tuner.compile(program, trainset=parity_data(range(100, 110)), events=events.append)
        assert server.requests_by_model == {"parity-135m": 20}  # 10 runs of two predictors, all on the base

        assert trained == [{"base_model_path": str(base), "base_model": str(base), "n": 10}]
        name = tuned.lm.adapter
        assert name.startswith("parity-135m-lora-") and name in server.models
        assert tuner.adapter_path_ == str(tmp_path / "out" / "adapter") and program.lm.adapter is None
        assert isinstance(tuned.lm, OpenAICompatible) and tuned.lm.base_url == server.url
        loaded = [e for e in events if e.name == "finetune.adapter_loaded"]
        assert [e.fields["adapter"] for e in loaded] == [name]

        evaluate(tuned, parity_data([7, 8]), metric, num_threads=1)
        assert server.requests_by_model == {"parity-135m": 20, name: 4}


def test_a_server_without_runtime_lora_is_refused_before_any_trace(trained, fake, tmp_path):
    with start_server(fake) as server:
        lm = OpenAICompatible("parity-135m", base_url=server.url, cache=False, constrained=False)
        tuner = BootstrapFinetune(metric, base_model=local_copy(tmp_path, "parity-135m"))
        with pytest.raises(ConfigError) as e:
            tuner.compile(Parity().bind(lm), trainset=parity_data([100]))
        assert server.requests_by_model == {}
    for part in (server.url, "/v1/load_lora_adapter", "--enable-lora", "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
        assert part in str(e.value)
    assert trained == [] and fake.calls == []


def test_a_local_base_model_that_is_not_the_servers_is_refused_naming_both(trained, fake, tmp_path):
    other = local_copy(tmp_path, "Qwen2.5-0.5B")
    with start_server(fake, runtime_lora=True) as server:
        lm = OpenAICompatible("parity-135m", base_url=server.url, cache=False, constrained=False)
        with pytest.raises(ConfigError, match=f"serves \"parity-135m\", but base_model is '{other}'"):
            BootstrapFinetune(metric, base_model=other).compile(Parity().bind(lm), trainset=parity_data([100]))
    assert trained == [] and fake.calls == []


@pytest.mark.parametrize(
    "kwargs, adapter, match",
    [
        ({}, None, "pass base_model= \\(CLI: --base-model\\)"),
        ({"base_model": "BASE", "init": "continue"}, "old", "init='continue' needs the local folder"),
        ({"base_model": "/no/such/model"}, None, "no model file or folder at /no/such/model"),
    ],
)
def test_served_student_needs_a_local_copy_of_its_base(trained, fake, tmp_path, kwargs, adapter, match):
    kwargs = {k: str(local_copy(tmp_path, "parity-135m")) if v == "BASE" else v for k, v in kwargs.items()}
    with start_server(fake, runtime_lora=True) as server:
        lm = OpenAICompatible("parity-135m", base_url=server.url, cache=False, adapter=adapter)
        with pytest.raises(ConfigError, match=match):
            BootstrapFinetune(metric, **kwargs).compile(Parity().bind(lm), trainset=parity_data([100]))
    assert trained == [] and fake.calls == []


def test_one_adapter_per_predictor_each_loaded_under_its_own_name(trained, fake, tmp_path):
    with start_server(fake, runtime_lora=True) as server:
        lm = OpenAICompatible("parity-135m", base_url=server.url, cache=False, constrained=False)
        tuner = BootstrapFinetune(metric, base_model=local_copy(tmp_path, "parity-135m"), multitask=False,
                                  output_dir=tmp_path / "out")  # fmt: skip
        tuned = tuner.compile(Parity().bind(lm), trainset=parity_data(range(100, 106)))
        names = {n: p.lm.adapter for n, p in tuned.named_predictors()}
        assert len(set(names.values())) == 2 and set(names.values()) <= set(server.models)
        assert set(tuner.adapter_path_) == {"digit", "label"}
