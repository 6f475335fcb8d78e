"""One optimizer registry: the CLI, YAML configs and the runner know the same names and build the same classes."""

from __future__ import annotations

import io

import pytest
from fake_tasks import metric
from rich.console import Console

from cotune.errors import ConfigError, UnknownChoiceError
from cotune.experiment.config import ExperimentConfig
from cotune.experiment.runner import default_optimizer_factory
from cotune.optimize.bootstrap import BootstrapFewShot
from cotune.optimize.finetune import BootstrapFinetune
from cotune.optimize.gpo import GPO
from cotune.optimize.knn import KNNFewShot
from cotune.optimize.random_search import BootstrapFewShotWithRandomSearch
from cotune.optimize.registry import OPTIMIZERS, build_optimizer, nest, optimizer_class, optimizer_names
from cotune.params import describe
from cotune.training.config import LoRAConfig, TrainingConfig


def cli_names(tmp_path) -> list[str]:
    """The names `cotune optimize -O` accepts, as its error for an unknown one lists them."""
    from cotune.cli.optimize_cmds import run_optimize

    quiet = Console(file=io.StringIO())
    with pytest.raises(UnknownChoiceError) as info:
        run_optimize(task="iris", optimizer="nope", model="fake", out_path=tmp_path / "p.json", params={},
                     data_dir=None, threads=1, seed=0, cache=False, evaluate_on=None, console=quiet, out=quiet)  # fmt: skip
    return info.value.choices


def yaml_names() -> list[str]:
    """The names a YAML config accepts in its prompt and weights steps, as its errors list them."""
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict({"prompt": {"optimizer": "nope"}, "weights": {"optimizer": "nope"}})
    names = []
    for line in str(info.value).splitlines():
        if "optimizer: unknown" in line:
            names += line.split("choose one of: ")[1].split(", ")
    return sorted(names)


def runner_names(tmp_path) -> list[str]:
    """The names the runner's optimizer factory builds, each into its registered class."""
    built = []
    for name in optimizer_names():
        step = "weights" if OPTIMIZERS[name].kind == "weights" else "prompt"
        cfg = ExperimentConfig.from_dict({step: {"optimizer": name}, "threads": 2})
        optimizer = default_optimizer_factory(cfg, metric)("w" if step == "weights" else "p", 0, tmp_path)
        assert type(optimizer) is OPTIMIZERS[name].load()
        built.append(name)
    return sorted(built)


def test_cli_yaml_and_runner_know_the_same_optimizers(tmp_path):
    names = optimizer_names()
    assert names == ["bfrs", "bootstrap", "finetune", "gpo", "knn", "medprompt"]
    assert cli_names(tmp_path) == yaml_names() == runner_names(tmp_path) == names


def test_yaml_params_reach_any_registered_optimizer(tmp_path):
    cfg = ExperimentConfig.from_dict({"prompt": {"optimizer": "knn", "params": {"k": 7}}})
    knn = default_optimizer_factory(cfg, metric)("p", 3, tmp_path)
    assert isinstance(knn, KNNFewShot) and knn.k == 7 and knn.seed == 3 and knn.metric is metric

    gpo = default_optimizer_factory(ExperimentConfig.from_dict({"prompt": {"optimizer": "gpo", "gpo_steps": 2,
                                                                "params": {"candidates_per_step": 1}}}), metric)("p", 0, tmp_path)  # fmt: skip
    assert isinstance(gpo, GPO) and (gpo.num_steps, gpo.candidates_per_step, gpo.num_threads) == (2, 1, 64)


def test_the_existing_yaml_form_still_builds_the_papers_steps(tmp_path):
    cfg = ExperimentConfig.from_dict({"threads": 3, "prompt": {"num_candidates": 4, "max_labeled_demos": 2},
                                      "weights": {"metric_threshold": 0.5, "lora": {"r": 8}}})  # fmt: skip
    factory = default_optimizer_factory(cfg, metric)
    bfrs = factory("p", 5, tmp_path)
    assert isinstance(bfrs, BootstrapFewShotWithRandomSearch) and bfrs.num_candidates == 4
    boot = bfrs.bootstrap
    assert isinstance(boot, BootstrapFewShot)
    assert (boot.max_bootstrapped_demos, boot.max_labeled_demos, boot.num_threads, boot.seed) == (3, 2, 3, 5)
    tune = factory("w", 5, tmp_path / "node")
    assert isinstance(tune, BootstrapFinetune) and tune.metric_threshold == 0.5
    # Iris's measured run defaults fill the LoRA fields the YAML leaves out (r is the YAML's); the seed is the run's
    assert tune.lora == LoRAConfig(r=8, top_layers=8) and tune.seed == 5
    assert tune.training == TrainingConfig(epochs=10, learning_rate=3e-3)
    assert tune.output_dir == str(tmp_path / "node")


def test_a_tasks_run_defaults_fill_only_the_fields_a_config_leaves_out():
    from cotune.tasks import task_info

    iris = ExperimentConfig.from_dict({"task": "iris", "weights": {"num_rollouts": 4, "training": {"epochs": 3}}})
    params = iris.weights.params
    assert params["num_rollouts"] == 4 and params["lora"] == {"top_layers": 8}
    assert params["training"] == {"epochs": 3, "learning_rate": 3e-3}
    assert params["rollout_temperature"] == task_info("iris").run_defaults["weights"]["rollout_temperature"] == 2.0
    assert params["stop_at_first_pass"] and not params["keep_demos"]
    gsm8k = ExperimentConfig.from_dict({"task": "gsm8k"})  # no run defaults: the optimizer's own
    assert gsm8k.weights.params == {}
    assert ExperimentConfig.from_dict(iris.to_dict()) == iris  # a saved config is complete: resume keeps it


@pytest.mark.parametrize(
    "weights",
    [{"lora": {"epochs": 3}}, {"params": {"lora": {"epochs": 3}}}, {"params": {"lora.epochs": 3}}],
    ids=["beside-optimizer", "under-params", "dotted"],
)
def test_a_training_key_under_lora_in_yaml_moves_and_wins_over_the_tasks_run_defaults(weights):
    """Iris's run defaults say training.epochs 10; the YAML's old spelling lora.epochs 3 is the later source, so
    it wins (each source is moved to the new spelling before they are merged)."""
    with pytest.warns(FutureWarning, match="lora.epochs is a training setting: write training.epochs"):
        old = ExperimentConfig.from_dict({"task": "iris", "weights": weights})
    assert old.weights.params["lora"] == {"top_layers": 8}
    assert old.weights.params["training"] == {"epochs": 3, "learning_rate": 3e-3}
    assert old == ExperimentConfig.from_dict({"task": "iris", "weights": {"training": {"epochs": 3}}})


def test_build_optimizer_moves_a_training_key_under_lora_and_an_explicit_training_value_wins():
    with pytest.warns(FutureWarning) as caught:
        tune = build_optimizer("finetune", metric, lora={"r": 8, "epochs": 3, "batch_size": 2}, training={"epochs": 5})
    assert [str(w.message) for w in caught] == [f"lora.{k} is a training setting: write training.{k}"
                                                for k in ("epochs", "batch_size")]  # fmt: skip
    assert tune.lora == LoRAConfig(r=8) and tune.training == TrainingConfig(epochs=5, batch_size=2)
    with pytest.raises(ConfigError, match=r"finetune.training has no field r; choose from: epochs"):
        build_optimizer("finetune", metric, training={"r": 8})


def test_yaml_refuses_bad_parameters_at_load_time_with_the_valid_ones():
    with pytest.raises(ConfigError, match=r"prompt: optimizer 'knn' has no hyperparameter kk; choose from: k, "):
        ExperimentConfig.from_dict({"prompt": {"optimizer": "knn", "params": {"kk": 5}}})
    with pytest.raises(ConfigError, match=r"prompt: KNNFewShot: k must be >= 1, got 0"):
        ExperimentConfig.from_dict({"prompt": {"optimizer": "knn", "params": {"k": 0}}})
    with pytest.raises(ConfigError, match=r"prompt.optimizer: unknown prompt optimizer 'finetune'"):
        ExperimentConfig.from_dict({"prompt": {"optimizer": "finetune"}})


def test_nested_parameters_by_dots_or_mappings():
    assert nest({"a.b": 1, "a": {"c": 2}, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}
    dotted = build_optimizer("bfrs", metric, **{"bootstrap.num_rollouts": 2}, num_threads=3, seed=4)
    mapped = build_optimizer("bfrs", metric, bootstrap={"num_rollouts": 2}, num_threads=3, seed=4)
    assert repr(dotted) == repr(mapped)
    boot = dotted.bootstrap
    assert (boot.num_rollouts, boot.max_bootstrapped_demos, boot.max_labeled_demos) == (2, 3, 3)  # BFRS's defaults
    assert (boot.metric, boot.num_threads, boot.seed) == (metric, 3, 4)
    assert build_optimizer("knn", metric, seed=1).seed == 1  # knn takes no num_threads: dropped
    with pytest.raises(ConfigError, match="bfrs.bootstrap.*no hyperparameter max_demos"):
        build_optimizer("bfrs", metric, **{"bootstrap.max_demos": 2})
    with pytest.raises(ConfigError, match=r"finetune.lora has no field rank; choose from: r, alpha"):
        build_optimizer("finetune", metric, lora={"rank": 8})
    with pytest.raises(UnknownChoiceError, match="bfrs, bootstrap, finetune, gpo, knn, medprompt"):
        build_optimizer("bfrss", metric)


def test_teacher_reruns_have_one_name_and_the_old_one_points_to_it():
    """Bootstrap and fine-tuning both call the teacher's re-runs rollouts; a config with the old bootstrap name
    is told the new one."""
    for name in ("bootstrap", "finetune"):
        assert {"num_rollouts", "rollout_temperature"} <= set(describe(optimizer_class(name)))
    with pytest.raises(ConfigError, match=r"no hyperparameter max_rounds \(max_rounds is now num_rollouts\)"):
        build_optimizer("bootstrap", metric, max_rounds=2)
    with pytest.raises(ConfigError, match=r"round_temperature is now rollout_temperature"):
        build_optimizer("bfrs", metric, **{"bootstrap.round_temperature": 0.5})
