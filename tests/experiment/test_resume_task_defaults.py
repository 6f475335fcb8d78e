"""A run resumed after its task's run defaults changed goes on with the settings it started with: the saved
config holds the defaults of its start, and today's are not merged in again."""

from __future__ import annotations

from cotune.experiment.config import ExperimentConfig
from cotune.experiment.runner import default_optimizer_factory
from cotune.optimize.strategy import StepKind
from cotune.tasks import load_task


def test_a_saved_iris_config_from_before_balance_classes_resumes_without_it(tmp_path):
    today = ExperimentConfig.from_dict({"task": "iris", "out_dir": str(tmp_path)})
    assert today.weights.params["balance_classes"] is True  # Iris's run defaults since theta_balance.json
    before = today.to_dict()
    del before["weights"]["params"]["balance_classes"]  # what a run saved before that default wrote

    resumed = ExperimentConfig.saved(before)
    assert "balance_classes" not in resumed.weights.params
    assert ExperimentConfig.from_dict(before).weights.params["balance_classes"] is True  # a new run: today's
    metric = load_task("iris").metric
    tuner = default_optimizer_factory(resumed, metric)(StepKind.WEIGHTS, 0, tmp_path / "w")
    assert tuner.balance_classes is False and tuner.num_rollouts == 16  # the rest of its saved settings stay
    assert ExperimentConfig.saved(today.to_dict()) == today
