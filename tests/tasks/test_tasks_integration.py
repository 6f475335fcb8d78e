"""Each built-in task's program on the real SmolLM2-135M, two test examples each.

The 135M model is weak, and each call is capped at 48 new tokens to keep this quick on 2 CPU cores, so
these tests check that rows come back well-formed (a prediction or a recorded parse failure), not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cotune.evaluate import evaluate
from cotune.tasks import load_task

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
OUTPUT = {"iris": "species", "gsm8k": "answer", "hotpotqa": "answer"}


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from cotune.lm.registry import load

    # Module-scoped, so the per-test cache isolation of tests/conftest.py is not in place yet: isolate here.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COTUNE_REQUEST_CACHE", str(tmp_path_factory.mktemp("cache") / "requests.sqlite"))
        yield load("smollm2-135m")


def _task(name: str):
    if name == "iris":
        return load_task("iris")
    folder = (DATA / name).resolve()
    if not folder.is_dir():
        pytest.skip(f"shared data set {name!r} not found at {folder}")
    return load_task(name, data_dir=folder)


@pytest.mark.parametrize("name", ["iris", "gsm8k", "hotpotqa"])
def test_task_program_runs_on_smollm2(lm, name):
    task = _task(name)
    program = task.program().bind(lm)
    for predictor in program.predictors():
        predictor.config["max_tokens"] = 48
    names = [n for n, _ in program.named_predictors()]

    result = evaluate(program, task.test[:2], task.metric, num_threads=2, max_errors=0)

    assert result.n == 2 and result.errors == 0
    assert result.usage.calls >= 2 and result.usage.prompt_tokens > 0
    for row in result.rows:
        assert row.trace and all(step.predictor in names for step in row.trace)
        if row.error_kind == "parse":
            assert row.prediction is None and isinstance(row.raw, str)
        else:
            assert row.error_kind is None and OUTPUT[name] in row.prediction
            assert 0.0 <= row.score <= 1.0
            assert [s.predictor for s in row.trace] == names  # every predictor ran, in program order
    for metric in task.metrics.values():  # the extra metrics accept real predictions too
        for row in result.rows:
            assert 0.0 <= metric(task.test[row.index], row.prediction or {}) <= 1.0
