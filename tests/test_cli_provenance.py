"""Findings 4, 7, 10, 11 (issue 12) at the command line: the split seed is not the optimizer seed, saved
programs work from any directory, outputs are not overwritten silently, Ctrl-C keeps finished rows."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

import cotune.cli.commands as commands
import cotune.cli.optimize_cmds as optimize_cmds
from cotune.errors import ConfigError
from cotune.lm import FakeLM


def consoles():
    buf = io.StringIO()
    return Console(file=buf, width=200), Console(file=io.StringIO(), width=200), buf


@pytest.fixture
def fake_model(monkeypatch):
    """Every model the CLI loads is a FakeLM naming one species; the adapter asked for is recorded."""
    loaded = []

    def load_model(model, *, cache, console, adapter=None):
        loaded.append(adapter)
        return FakeLM(["Reasoning: small petals.\nSpecies: setosa"], name=model, adapter=adapter)

    monkeypatch.setattr(commands, "load_model", load_model)
    monkeypatch.setattr(optimize_cmds, "load_model", load_model)
    return loaded


def optimize(tmp_path, seed, **kw):
    console, out, _ = consoles()
    path = kw.pop("out_path", tmp_path / f"p{seed}.json")
    optimize_cmds.run_optimize(
        task="iris",
        optimizer="bootstrap",
        model="fake",
        out_path=path,
        params={},
        data_dir=None,
        threads=1,
        seed=seed,
        cache=False,
        evaluate_on=None,
        console=console,
        out=out,
        **kw,
    )
    return path


def test_the_optimizer_seed_does_not_reshuffle_the_split(tmp_path, fake_model, monkeypatch):
    import cotune.tasks as tasks

    seen = []
    real = tasks.load_task
    monkeypatch.setattr(tasks, "load_task", lambda *a, **kw: seen.append(kw.get("seed")) or real(*a, **kw))
    meta = json.loads(optimize(tmp_path, seed=1).read_text())["metadata"]
    assert seen == [0] and meta["seed"] == 1 and meta["split_seed"] == 0
    assert meta["split_sizes"] == {"train": 50, "dev": 50, "test": 50}


def as_hf(path):
    """The saved program as if optimized on a local model (FakeLM specs cannot be reloaded)."""
    state = json.loads(path.read_text())
    state["lm"] = {"backend": "hf", "model": "fake", "adapter": None}
    path.write_text(json.dumps(state))
    return path


def evaluate_cli(program, **kw):
    console, out, buf = consoles()
    commands.run_eval(
        task="iris",
        model=None,
        split="test",
        limit=None,
        program_path=program,
        out_path=None,
        data_dir=None,
        threads=1,
        cache=False,
        console=console,
        out=out,
        **kw,
    )
    return " ".join(buf.getvalue().split())


def test_eval_warns_when_testing_on_training_examples(tmp_path, fake_model):
    program = as_hf(optimize(tmp_path, seed=0))
    assert "warning" not in evaluate_cli(program)  # its own split by default
    text = evaluate_cli(program, split_seed=1)
    assert "were in the train/dev split this program was optimized on (split seed 0)" in text
    assert "--split-seed 0" in text


def test_a_saved_adapter_is_found_from_any_directory(tmp_path, fake_model, monkeypatch):
    folder = tmp_path / "out"
    (folder / "adapter").mkdir(parents=True)
    state = json.loads(optimize(tmp_path, seed=0).read_text())
    state["lm"] = {"backend": "hf", "model": "fake", "adapter": "adapter"}  # as `cotune finetune` saves it
    (folder / "program.json").write_text(json.dumps(state))
    monkeypatch.chdir(tmp_path)
    evaluate_cli(Path("out/program.json"))
    assert Path(fake_model[-1]).resolve() == (folder / "adapter").resolve()


def test_outputs_are_not_overwritten_without_force(tmp_path, fake_model):
    path = optimize(tmp_path, seed=0)
    with pytest.raises(ConfigError, match=r"p0.json already exists .* pass --force"):
        optimize(tmp_path, seed=0, out_path=path)
    optimize(tmp_path, seed=0, out_path=path, force=True)

    out_dir = tmp_path / "ft"
    (out_dir / "adapter").mkdir(parents=True)
    console, out, _ = consoles()
    with pytest.raises(ConfigError, match="already exist.*--force"):
        optimize_cmds.run_finetune(
            task="iris",
            model="fake",
            out_dir=out_dir,
            lora={},
            traces=None,
            threshold=None,
            data_dir=None,
            threads=1,
            seed=0,
            cache=False,
            evaluate_on=None,
            console=console,
            out=out,
        )


def test_ctrl_c_in_eval_keeps_the_finished_rows(tmp_path, fake_model, monkeypatch):
    program = as_hf(optimize(tmp_path, seed=0))
    calls = {"n": 0}
    real = commands.evaluate

    def interrupted(*args, events=None, **kw):
        def sink(e):
            if e.name == "progress.advance":
                calls["n"] += 1
                if calls["n"] == 4:
                    raise KeyboardInterrupt

        return real(*args, events=sink, **kw)

    monkeypatch.setattr(commands, "evaluate", interrupted)
    console, out, _ = consoles()
    with pytest.raises(KeyboardInterrupt):
        commands.run_eval(
            task="iris",
            model=None,
            split="test",
            limit=None,
            program_path=program,
            out_path=tmp_path / "rows.json",
            data_dir=None,
            threads=1,
            cache=False,
            console=console,
            out=out,
        )
    saved = json.loads((tmp_path / "rows.json").read_text())
    assert 4 <= saved["n"] < 50 and len(saved["rows"]) == saved["n"]


def test_run_set_reaches_any_config_field_and_merges_into_the_yaml(tmp_path):
    from cotune.cli.options import parse_params as _params

    path = tmp_path / "exp.yaml"
    path.write_text("task: iris\nprompt:\n  num_candidates: 4\nweights:\n  lora: {r: 8}\n")
    settings = _params(["prompt.optimizer=knn", "prompt.params.k=5", "weights.training.epochs=3", "seeds=[0, 1]"],
                       "--set")  # fmt: skip
    cfg = commands.experiment_config(path, {"threads": 2} | settings)
    assert (cfg.prompt.optimizer, cfg.prompt.params, cfg.prompt.num_candidates) == ("knn", {"k": 5}, 4)
    # the YAML's and --set's LoRA and training fields over Iris's run defaults (top 8 layers, 10 epochs at 3e-3)
    assert cfg.weights.params["lora"] == {"r": 8, "top_layers": 8}
    assert cfg.weights.params["training"] == {"epochs": 3, "learning_rate": 3e-3}
    assert cfg.seeds == [0, 1] and cfg.threads == 2
    old = _params(["prompt.optimizer=knn", "prompt.params.k=5", "weights.lora.epochs=3", "seeds=[0, 1]"], "--set")
    with pytest.warns(FutureWarning, match="lora.epochs is a training setting: write training.epochs"):
        assert commands.experiment_config(path, {"threads": 2} | old) == cfg  # the spelling before the split
    with pytest.raises(ConfigError, match=r"prompt: optimizer 'knn' has no hyperparameter kk"):
        commands.experiment_config(None, _params(["prompt.optimizer=knn", "prompt.params.kk=5"], "--set"))
    with pytest.raises(ConfigError, match="prompt: optimizer 'bfrs' has no hyperparameter bogus; choose from: "):
        commands.experiment_config(None, _params(["prompt.bogus=1"], "--set"))


def test_finetune_param_reaches_any_hyperparameter_and_is_checked_before_the_model_loads(tmp_path, fake_model):
    console, out, _ = consoles()

    def finetune(**params):
        optimize_cmds.run_finetune(task="iris", model="fake", out_dir=tmp_path / "ft", lora={"r": 8}, traces=None,
                                   threshold=None, data_dir=None, threads=1, seed=0, cache=False, evaluate_on=None,
                                   console=console, out=out, params=params)  # fmt: skip

    with pytest.raises(ConfigError, match="multitask must be true or false, got 'maybe'"):
        finetune(multitask="maybe")
    with pytest.raises(ConfigError, match=r"invalid LoRAConfig: r must be >= 1, got 0"):
        finetune(**{"lora.r": 0})  # -P lora.r=0 wins over --lora-r 8
    assert fake_model == []  # no model was loaded for a bad setting


def test_finetune_takes_the_tasks_run_defaults_for_what_no_option_sets(tmp_path, monkeypatch):
    import cotune.optimize.registry as registry

    seen = {}

    class Built(Exception):
        pass

    def capture(name, metric, **params):
        seen.update(params)
        raise Built

    monkeypatch.setattr(registry, "build_optimizer", capture)
    console, out, _ = consoles()

    def finetune(**options):
        with pytest.raises(Built):
            optimize_cmds.run_finetune(task="iris", model="fake", out_dir=tmp_path / "ft", lora={"r": 8},
                                       training={"epochs": 4}, traces=None, threshold=None, data_dir=None, threads=1,
                                       seed=0, cache=False, evaluate_on=None, console=console, out=out,
                                       **options)  # fmt: skip
        return dict(seen)

    iris = finetune()
    assert (iris["num_rollouts"], iris["rollout_temperature"], iris["stop_at_first_pass"], iris["keep_demos"]) == (
        16, 2.0, True, False)  # fmt: skip
    assert iris["lora"] == {"top_layers": 8, "r": 8} and iris["seed"] == 0  # --lora-r over the run defaults
    assert iris["training"] == {"epochs": 4, "learning_rate": 3e-3}  # --epochs wins
    with pytest.warns(FutureWarning, match="lora.learning_rate is a training setting: write training.learning_rate"):
        old = finetune(params={"lora.learning_rate": 1e-4})  # -P in the spelling before the split
    assert old["lora"] == {"top_layers": 8, "r": 8} and old["training"] == {"epochs": 4, "learning_rate": 1e-4}
    mine = finetune(rollouts=2, stop_at_first_pass=False, keep_demos=True)
    assert (mine["num_rollouts"], mine["stop_at_first_pass"], mine["keep_demos"]) == (2, False, True)
