"""The TRL trainer: bad input refused before any model loads, the launch protocol with stand-in processes, and
one integration run (two CPU processes over gloo vs one process, on the real SmolLM2-135M)."""

from __future__ import annotations

import importlib.util
import json
import sys
import time

import pytest

from cotune.errors import ConfigError, TrainingError, UnknownChoiceError
from cotune.experiment.config import ExperimentConfig
from cotune.training import ChatExample, LoRAConfig, TrainingConfig, TrainResult, read_adapter_metadata
from cotune.training.scoped import torch_threads
from cotune.training.trainer import TRAINERS, build_trainer, resolve_trainer
from cotune.training.trl_job import Job
from cotune.training.trl_trainer import TRLTrainer


def iris_example(length: float) -> ChatExample:  # short, so the integration test stays short
    species = "setosa" if length < 2.5 else ("versicolor" if length < 4.9 else "virginica")
    messages = [
        {"role": "system", "content": "Name the iris species."},
        {"role": "user", "content": f"Petal: {length}"},
    ]
    return ChatExample.create(messages, f"Species: {species}", "classify")


EXAMPLES = [iris_example(x) for x in (1.4, 1.5, 4.0, 4.5, 5.6, 6.1, 1.3, 5.1)]
# One thread a process: on a CPU shared with other jobs, more threads than cores is several times slower.
# float32 (as on any CPU): one and two processes agree to float rounding, not to bf16 rounding.
LORA = LoRAConfig(r=8, alpha=16, target_modules=["q_proj", "v_proj"])
TRAINING = TrainingConfig(epochs=1, batch_size=4, learning_rate=5e-3, warmup_ratio=0.0, max_length=64, device="cpu",
                          num_threads=1, bf16=False)  # fmt: skip


@pytest.fixture
def without_trl(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else find_spec(name, *a))


@pytest.mark.parametrize("processes", [0, -1, 1.5, True, "2"])
def test_processes_must_be_a_positive_integer(processes):
    with pytest.raises(ConfigError, match=f"processes must be an integer >= 1, got {processes!r}"):
        TRLTrainer(processes=processes)
    with pytest.raises(ConfigError, match="processes must be an integer >= 1"):
        build_trainer("trl", processes=processes)


def test_unknown_trainer_lists_the_choices():
    assert sorted(TRAINERS) == ["local", "trl"]
    for make in (resolve_trainer, build_trainer):
        with pytest.raises(UnknownChoiceError, match="unknown trainer 'deepspeed'; choose one of: local, trl"):
            make("deepspeed")


def test_several_processes_need_a_trainer_that_runs_them():
    with pytest.raises(ConfigError, match="trainer 'local' trains in one process; processes=2 needs trainer: trl"):
        build_trainer("local", processes=2)
    assert build_trainer("trl", processes=2) == TRLTrainer(processes=2)
    assert resolve_trainer("trl").name == "trl" and resolve_trainer("trl").processes == 1


@pytest.mark.parametrize("make", [lambda: TRLTrainer(), lambda: resolve_trainer("trl"), lambda: build_trainer("trl")])
def test_without_trl_the_error_gives_the_pip_command(without_trl, make):
    with pytest.raises(ConfigError, match=r"trainer 'trl' needs the trl package: pip install 'cotune\[trl\]'"):
        make()


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"trainer": "trl", "processes": 0}, "weights.processes must be >= 1, got 0"),
        ({"trainer": "deepspeed"}, "weights.trainer: unknown trainer 'deepspeed'; choose one of: local, trl"),
        ({"processes": 2}, "weights.trainer: trainer 'local' trains in one process; processes=2 needs trainer: trl"),
    ],
)
def test_run_config_refuses_bad_trainer_fields(weights, message):  # the `cotune run` YAML's weights section
    with pytest.raises(ConfigError, match="invalid experiment config") as info:
        ExperimentConfig.from_dict({"weights": weights})
    assert message in str(info.value)


def test_run_config_builds_the_finetune_optimizer_with_the_trainer():
    cfg = ExperimentConfig.from_dict({"weights": {"trainer": "trl", "processes": 2}})
    assert cfg.weights.optimizer_params()["trainer"] == TRLTrainer(processes=2)
    assert "trainer" not in ExperimentConfig.from_dict({}).weights.optimizer_params()  # the default stays "local"


def test_run_config_without_trl_says_how_to_install(without_trl):
    with pytest.raises(ConfigError, match=r"weights.trainer: trainer 'trl' needs the trl package: pip install"):
        ExperimentConfig.from_dict({"weights": {"trainer": "trl"}})


def test_no_examples_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="no training examples"):
        TRLTrainer().train([], base_model_path=tmp_path, output_dir=tmp_path / "out", lora=LORA, training=TRAINING)


def test_job_round_trips_through_its_file_form():
    job = Job(EXAMPLES[:2], "/m", "/out", LORA.replace(target_modules=["q_proj"]), TRAINING, "smol", None, 2, True)
    assert job.to_dict()["lora"]["target_modules"] == ["q_proj"] and job.to_dict()["training"]["epochs"] == 1
    assert Job.from_dict(json.loads(json.dumps(job.to_dict()))) == job


def test_the_trl_trainer_batches_as_the_local_one_does(tmp_path):
    """``group_by_length`` reaches TRL's sampler: random batches by default, length-grouped when asked."""
    pytest.importorskip("trl")
    from cotune.training.trl_sft import _sft_config

    for grouped, strategy in ((False, "random"), (True, "group_by_length")):
        job = Job(EXAMPLES[:2], "/m", "/out", LORA, TRAINING.replace(group_by_length=grouped), "smol", None, 1, True)
        assert _sft_config(job, "cpu", False, str(tmp_path)).train_sampling_strategy == strategy


# -- the launch protocol, with stand-in processes instead of `accelerate launch` ------------------------------
def _stand_in(monkeypatch, code: str) -> None:
    """Make `launch` run ``code`` (with FOLDER bound to the job folder) instead of accelerate."""
    from cotune.training import trl_launch

    monkeypatch.setattr(
        trl_launch, "_command", lambda job, folder, cpu: [sys.executable, "-c", f"FOLDER = {str(folder)!r}\n{code}"]
    )


def test_a_failing_process_raises_with_the_end_of_its_error_output(monkeypatch, tmp_path):
    from cotune.training.trl_launch import launch

    _stand_in(monkeypatch, "import sys\nprint('noise ' * 10, file=sys.stderr)\nsys.exit('gloo: connection refused')")
    with pytest.raises(TrainingError, match=r"(?s)2 processes failed \(exit code 1\).*gloo: connection refused"):
        launch(Job(EXAMPLES, str(tmp_path), str(tmp_path / "out"), LORA, TRAINING, processes=2))


def test_a_cotune_error_in_a_process_is_raised_as_it_was(monkeypatch, tmp_path):
    from cotune.training.trl_launch import launch

    _stand_in(monkeypatch, "open(FOLDER + '/error-1.txt', 'w').write('all 8 examples are longer than max_length=16')\n"
                           "raise SystemExit(1)")  # fmt: skip
    with pytest.raises(TrainingError, match="^all 8 examples are longer than max_length=16$"):
        launch(Job(EXAMPLES, str(tmp_path), str(tmp_path / "out"), LORA, TRAINING, processes=2))


def test_progress_lines_become_events_and_the_result_file_a_train_result(monkeypatch, tmp_path):
    from cotune.training.trl_launch import EVENT_PREFIX, launch

    result = TrainResult(str(tmp_path / "out"), [2.0, 1.0], 1.5, 3.0, 2, 8, 400, 1, "cpu", "abc")
    fields = {k: v for k, v in result.to_dict().items() if k != "seconds_per_step"}
    lines = [["start", {"steps": 2, "processes": 2}], ["step", {"loss": 2.0, "lr": 0.1}], ["step", {"loss": 1.0}],
             ["done", {"final_loss": 1.5}]]  # fmt: skip
    code = "import json\nprint('transformers chatter')\n"
    code += "".join(f"print({EVENT_PREFIX + json.dumps(line)!r})\n" for line in lines)
    code += f"open(FOLDER + '/result.json', 'w').write({json.dumps(fields)!r})\n"
    _stand_in(monkeypatch, code)
    events = []
    got = launch(Job(EXAMPLES, str(tmp_path), str(tmp_path / "out"), LORA, TRAINING, processes=2), events.append)
    assert got == result
    assert [e.name for e in events] == ["finetune.start", "progress.start", "progress.advance", "progress.advance",
                                        "progress.end", "finetune.done"]  # fmt: skip
    assert [e.fields["loss"] for e in events if e.name == "progress.advance"] == [2.0, 1.0]


def test_the_entry_point_wants_one_job_file(capsys):
    from cotune.training.trl_launch import main

    assert main([]) == 2
    assert "usage: python -m cotune.training.trl_launch JOB.json" in capsys.readouterr().err


# -- integration ---------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_two_cpu_processes_train_like_one_and_the_adapter_changes_the_model(smol, tmp_path):
    """8 examples, 2 steps of 4: one process with batches of 4 vs `accelerate launch` with two gloo processes
    with batches of 2 each. Same global batches, so the same losses: measured equal to 1e-6 (4.6503, 2.7591);
    the tolerance leaves room for the order of the gradient sum."""
    pytest.importorskip("trl")
    kwargs = dict(base_model_path=smol.model_path, base_model=smol.model)
    t0 = time.perf_counter()
    one = TRLTrainer().train(EXAMPLES, output_dir=tmp_path / "one", lora=LORA, training=TRAINING, **kwargs)
    events = []
    two = TRLTrainer(processes=2).train(EXAMPLES, output_dir=tmp_path / "two", lora=LORA,
                                        training=TRAINING.replace(batch_size=2), events=events.append, **kwargs)  # fmt: skip
    seconds = time.perf_counter() - t0

    assert one.steps == two.steps == 2 and one.n_examples == two.n_examples == 8
    assert two.losses == pytest.approx(one.losses, rel=1e-3), (one.losses, two.losses)
    assert two.final_loss == pytest.approx(one.final_loss, rel=1e-3)
    assert [e.fields["loss"] for e in events if e.name == "progress.advance"] == pytest.approx(two.losses, abs=1e-4)
    meta = read_adapter_metadata(tmp_path / "two")
    assert meta["trainer"]["processes"] == 2 and meta["base_model"] == "smollm2-135m"
    assert meta["losses"] == two.losses and meta["hyperparameters"]["batch_size"] == 2
    assert json.loads((tmp_path / "two" / "adapter_config.json").read_text())["r"] == 8  # unmerged PEFT adapter

    prompt = iris_example(4.7).chat
    with torch_threads(1):
        base = smol(prompt, max_tokens=12).text
        tuned = smol.with_adapter(str(tmp_path / "two"))(prompt, max_tokens=12).text
    assert tuned != base, (base, tuned)
    print(f"1 vs 2 processes: losses {one.losses} vs {two.losses}; training both took {seconds:.1f} s")
