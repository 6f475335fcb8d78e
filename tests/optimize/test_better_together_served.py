"""BetterTogether p,w,p against a served model, end to end on 127.0.0.1 with SmolLM2-135M.

`cotune serve --runtime-lora` (the same server, in a thread) runs the model; the program talks to it over
HTTP only. The Θ step collects its traces from the server, trains LoRA on a local copy of the same base
model, loads the adapter into the running server through vLLM's runtime LoRA API, and the last Π step's
requests go to that adapter (counted by the server per model name).
"""

from __future__ import annotations

import pytest

from cotune.lm.base import GenerationConfig
from cotune.lm.remote.openai_compat import OpenAICompatible
from cotune.optimize.better_together import BetterTogether
from cotune.optimize.bootstrap import BootstrapFewShot
from cotune.optimize.finetune import BootstrapFinetune
from cotune.optimize.random_search import BootstrapFewShotWithRandomSearch
from cotune.serve.server import start_server
from cotune.training import LoRAConfig, TrainingConfig


@pytest.mark.integration
def test_better_together_pwp_through_a_server_that_loads_the_adapter_at_runtime(tmp_path):
    import cotune.lm
    from cotune.tasks import load_task

    task = load_task("iris", train=6, dev=2, test=1)
    served = cotune.lm.load("smollm2-135m", cache=False)
    counts_at_start = {}

    def events(e):
        if e.name == "step.start" and e.fields["index"] == 3:
            counts_at_start.update(server.requests_by_model)

    with served, start_server(served, runtime_lora=True) as server:
        lm = OpenAICompatible("smollm2-135m", base_url=server.url, cache=False, timeout=300,
                              config=GenerationConfig(max_tokens=40))  # fmt: skip
        program = task.program().bind(lm)
        for p in program.predictors():
            p.reasoning_budget = 8  # the JSON closes within max_tokens even when a sample rambles
        demos = BootstrapFewShot(task.metric, max_bootstrapped_demos=1, max_labeled_demos=1, num_threads=8)
        prompt = BootstrapFewShotWithRandomSearch(task.metric, num_candidates=2, bootstrap=demos, num_threads=8)
        weights = BootstrapFinetune(
            task.metric, base_model="smollm2-135m", lora=LoRAConfig(r=8, alpha=16),
            training=TrainingConfig(epochs=1, batch_size=4),
            num_rollouts=3, rollout_temperature=1.0, stop_at_first_pass=True, output_dir=tmp_path / "theta", num_threads=8,
        )  # fmt: skip
        bt = BetterTogether(task.metric, prompt=prompt, weights=weights, strategy="p,w,p", num_threads=8)
        tuned = bt.compile(program, trainset=task.train, valset=task.dev, events=events)

        adapter = tuned.lm.adapter
        assert [s.strategy for s in bt.steps_] == ["zero-shot", "p", "p-w", "p-w-p"]
        assert adapter and adapter.startswith("smollm2-135m-lora-") and adapter in server.models
        theta = bt.steps_[2].info  # each step runs a fresh clone: what it learned is kept in the step's info
        assert theta["adapter_path_"] == str(tmp_path / "theta" / "adapter") and theta["n_passed_"] > 0
        assert tuned.lm.base_url == server.url and program.lm.adapter is None
        counts = server.requests_by_model
        # The last Π step (and its scoring) ran on the adapter only; the base model got no request then.
        assert counts[adapter] > counts_at_start.get(adapter, 0) and counts_at_start.get(adapter, 0) > 0
        assert counts["smollm2-135m"] == counts_at_start["smollm2-135m"]
