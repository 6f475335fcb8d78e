"""A metric that raises is the user's bug, not the model's miss: evaluation stops at the first one, naming
the example and where the metric failed, in `evaluate` and in the optimizers built on it (BFRS with a
small trainset, GPO with ``max_errors=None``), instead of scoring 0 and carrying on."""

from __future__ import annotations

import pytest

import cotune as ct
from cotune.errors import EvaluationError, InfrastructureError, LMConnectionError
from cotune.evaluate import evaluate
from cotune.lm import FakeLM
from cotune.optimize.gpo import GPO
from cotune.optimize.random_search import BootstrapFewShotWithRandomSearch


def data(numbers):
    return [ct.Example(question=str(n), answer=str(n)).with_inputs("question") for n in numbers]


def echo_lm():
    return FakeLM(lambda m: "Answer: " + m[-1]["content"].split(": ")[1])


def typo_metric(example, prediction):
    return float(prediction["answr"] == example["answer"])  # the user's typo: KeyError on every example


class QA(ct.Program):
    def __init__(self):
        self.answer = ct.Predict("question -> answer", instruction="Answer the question.")

    def forward(self, question):
        return self.answer(question=question)


def test_the_first_metric_error_stops_the_evaluation_naming_the_example_and_the_line():
    lm = echo_lm()
    with pytest.raises(EvaluationError, match=r"metric 'typo_metric' raised on example 0") as info:
        evaluate(QA().bind(lm), data(range(30)), typo_metric, num_threads=1, max_errors=None)
    message = str(info.value)
    assert "KeyError: 'answr'" in message  # the traceback's last line
    assert "test_metric_errors.py" in message and "in typo_metric" in message  # where it raised
    assert "'question': '0'" in message  # the example
    assert not isinstance(info.value, InfrastructureError)
    assert len(lm.calls) < 30  # stopped, not run to the end
    assert info.value.result is not None and info.value.result.n >= 1


def test_a_metric_that_fails_on_one_example_stops_too():
    def picky(example, prediction):
        if example["question"] == "3":
            raise ValueError("cannot compare 3")
        return 1.0

    with pytest.raises(EvaluationError, match=r"example 3 .*ValueError: cannot compare 3"):
        evaluate(QA().bind(echo_lm()), data(range(6)), picky, num_threads=1)


def test_a_metric_whose_own_lm_is_down_is_an_infrastructure_error():
    def judge(example, prediction):
        raise LMConnectionError("judge server at http://127.0.0.1:9/v1 is not reachable")

    with pytest.raises(InfrastructureError, match="judge server"):
        evaluate(QA().bind(echo_lm()), data(range(3)), judge, num_threads=1)


def test_program_errors_still_count_against_max_errors():
    class Flaky(QA):
        def forward(self, question):
            if question == "1":
                raise RuntimeError("tool down")
            return super().forward(question)

    res = evaluate(Flaky().bind(echo_lm()), data(range(4)), lambda ex, p: 1.0, num_threads=1)
    assert res.errors == 1 and res.score == 0.75


def test_bfrs_with_a_small_trainset_fails_on_a_raising_metric():
    # zero-shot and labeled candidates: scored on a valset smaller than evaluate's max_errors (10)
    opt = BootstrapFewShotWithRandomSearch(typo_metric, num_candidates=2, num_threads=2)
    with pytest.raises(EvaluationError, match=r"metric 'typo_metric' raised .*KeyError: 'answr'"):
        opt.compile(QA().bind(echo_lm()), trainset=data(range(8)), valset=data(range(100, 108)))
    assert not hasattr(opt, "best_score_")


def test_gpo_fails_on_a_raising_metric():
    opt = GPO(typo_metric, num_steps=2, candidates_per_step=2, retrieval="recency", num_threads=2, minibatch_size=4)
    with pytest.raises(EvaluationError, match=r"metric 'typo_metric' raised .*KeyError: 'answr'"):
        opt.compile(QA().bind(echo_lm()), trainset=data(range(8)), valset=data(range(100, 108)))
