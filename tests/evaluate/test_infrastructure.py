"""Finding 3 (issue 12): infrastructure errors (connection, timeout, 5xx, out of memory) are not model errors.
They stop the step and are never scored 0; parse failures stay failed predictions with score 0."""

import pytest

import cotune as ct
from cotune.errors import InfrastructureError, LMConnectionError, LMError, is_infrastructure_error
from cotune.evaluate import evaluate
from cotune.lm import FakeLM


def data(n):
    return [ct.Example(question=str(i), answer=str(i)).with_inputs("question") for i in range(n)]


def metric(ex, pred):
    return float(pred["answer"] == ex["answer"])


class QA(ct.Program):
    def __init__(self):
        self.answer = ct.Predict("question -> answer")

    def forward(self, question):
        return self.answer(question=question)


def flaky(down: set[int]):
    """Right answers, except that questions in ``down`` hit an unreachable server."""

    def respond(messages):
        q = int(messages[-1]["content"].split(": ")[1])
        if q in down:
            raise LMConnectionError("server at http://127.0.0.1:9/v1 is not reachable after 5 attempts")
        return f"Answer: {q}"

    return respond


@pytest.mark.parametrize("max_errors", [10, None])
def test_an_outage_fails_the_evaluation_instead_of_scoring_zero(max_errors):
    program = QA().bind(FakeLM(flaky({1, 3, 5})))
    with pytest.raises(InfrastructureError, match="not reachable") as info:
        evaluate(program, data(6), metric, num_threads=1, max_errors=max_errors)
    partial = info.value.result
    assert all(r.error_kind != "infrastructure" or r.score == 0 for r in partial.rows)
    assert all(r.index not in (1, 3, 5) or r.error_kind == "infrastructure" for r in partial.rows)


def test_parse_failures_stay_scored_failures():
    program = QA().bind(FakeLM(["\n\n"]))
    res = evaluate(program, data(3), metric, num_threads=1)
    assert res.score == 0 and res.parse_failures == 3


@pytest.mark.parametrize(
    "error, infra",
    [
        (LMConnectionError("down"), True),
        (LMError("HTTP 400"), True),
        (MemoryError(), True),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory"), True),
        (ValueError("a bug in the program"), False),
        (KeyError("answer"), False),
    ],
)
def test_which_errors_are_infrastructure(error, infra):
    assert is_infrastructure_error(error) is infra


def test_bootstrap_does_not_take_an_outage_for_failed_traces():
    from cotune.optimize.bootstrap import BootstrapFewShot

    program = QA().bind(FakeLM(flaky({0, 1, 2, 3})))
    with pytest.raises(InfrastructureError):
        BootstrapFewShot(metric, num_threads=2).compile(program, trainset=data(6))


def test_random_search_does_not_score_an_outage():
    from cotune.optimize.random_search import BootstrapFewShotWithRandomSearch

    program = QA().bind(FakeLM(flaky({7})))
    opt = BootstrapFewShotWithRandomSearch(metric, num_candidates=3, num_threads=2)
    with pytest.raises(InfrastructureError):
        opt.compile(program, trainset=data(4), valset=data(8)[4:])


def test_gpo_does_not_score_an_outage():
    from cotune.optimize.gpo import GPO

    def respond(messages):
        if "New Instruction:" in messages[0]["content"]:
            return "New Instruction: Answer with digits."
        return flaky({2})(messages)

    program = QA().bind(FakeLM(respond))
    gpo = GPO(metric, num_steps=1, candidates_per_step=1, retrieval="none", num_threads=1)
    with pytest.raises(InfrastructureError):
        gpo.compile(program, trainset=data(4), valset=data(4))


def test_better_together_does_not_score_an_outage():
    from cotune.optimize.base import Optimizer
    from cotune.optimize.better_together import BetterTogether

    class Noop(Optimizer):
        def compile(self, program, *, trainset, valset=None, events=None):
            return program.deepcopy()

    program = QA().bind(FakeLM(flaky({3})))
    bt = BetterTogether(metric, prompt=Noop(), weights=Noop(), strategy="p")
    with pytest.raises(InfrastructureError):
        bt.compile(program, trainset=data(10), valset=data(4))
