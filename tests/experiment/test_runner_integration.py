"""Π→Θ→Π on the real SmolLM2-135M, end to end through the experiment runner, on a small Iris split."""

import pytest

from cotune.experiment.config import ExperimentConfig, PromptStep, WeightStep
from cotune.experiment.rundir import RunDir
from cotune.experiment.runner import Runner

pytestmark = pytest.mark.integration


def test_p_w_p_on_iris_end_to_end_and_resume(tmp_path):
    cfg = ExperimentConfig(
        task="iris",
        model="smollm2-135m",
        strategies=["p-w-p"],
        train_size=10,
        dev_size=6,
        test_size=6,
        out_dir=str(tmp_path),
        name="iris",
        threads=8,
        max_tokens=48,
        prompt=PromptStep(num_candidates=2, max_bootstrapped_demos=2, max_labeled_demos=2),
        # threshold 0: fine-tune on every trace that parsed, so the test does not hinge on how many
        # answers a 135M model gets right; the pipeline (traces → LoRA → adapter → Π again) is what is tested
        weights=WeightStep(
            metric_threshold=0.0,
            lora={"r": 8, "alpha": 16},
            training={"epochs": 1, "batch_size": 4, "max_length": 384},
        ),
    )
    run = Runner(cfg).start()
    results = run.results()

    assert [n["strategy"] for n in results["nodes"]] == ["zero-shot", "p", "p-w", "p-w-p"]
    by = {n["strategy"]: n for n in results["nodes"]}
    adapter = by["p-w"]["adapter"]
    assert adapter and (run.node_dir(0, "p-w") / "adapter" / "adapter_model.safetensors").exists()
    assert by["p-w-p"]["adapter"] == adapter  # the second Π step runs on the fine-tuned weights
    assert by["p-w"]["train_seconds"] > 0
    for node in results["nodes"]:
        assert node["test"]["n"] == 6 and 0.0 <= node["test"]["score"] <= 1.0
    assert (run.path / "best-program.json").exists()

    # a finished run resumes to the same results without redoing anything
    _, again = Runner.resume(run.path)
    skipped = [e for e in RunDir.open(again.path).events() if e["event"] == "node.skipped"]
    assert len(skipped) == 4
    assert again.results()["table"] == results["table"]
