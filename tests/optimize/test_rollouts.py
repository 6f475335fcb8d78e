import threading
import time
from collections import Counter

import pytest
from fake_tasks import Parity, metric, parity_data, parity_lm, seen_numbers

from cotune.errors import EvaluationError
from cotune.lm import FakeLM
from cotune.optimize.bootstrap import BootstrapFewShot
from cotune.optimize.rollouts import Rollouts


def slow_parity_lm(right_digits="02468"):
    base = parity_lm(right_digits)

    def slow(messages, config):
        time.sleep(0.02)  # long enough that both threads ask while the first run is in flight
        return base._fn(messages, config)

    return FakeLM(slow)


def test_rollouts_shared_by_threads_run_each_example_once():
    lm = slow_parity_lm()
    runs = Rollouts(Parity().bind(lm), metric, num_threads=4)
    data = list(enumerate(parity_data(range(10))))
    results = {}

    def ask(name, items):
        results[name] = runs.run(items, 0)

    threads = [threading.Thread(target=ask, args=("a", data[:8])), threading.Thread(target=ask, args=("b", data[4:]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(seen_numbers(lm)) == Counter(str(n) for n in range(10))  # each once
    assert [r.score for r in results["a"][4:]] == [r.score for r in results["b"][:4]]
    assert results["a"][4] is results["b"][0]


def test_rollouts_run_together_sample_under_their_own_ids_and_are_remembered():
    lm = parity_lm("02468")
    program = Parity().bind(lm)
    runs = Rollouts(program, metric, temperature=0.9, min_p=0.1, seed=2, num_threads=4)
    items = list(enumerate(parity_data([10, 11, 12])))
    by_rollout = runs.run_rollouts(items, [0, 1, 2])
    assert [[t.example_index for t in ts] for ts in by_rollout] == [[0, 1, 2]] * 3
    assert [(ts[0].rollout_id, ts[0].temperature, ts[0].seed) for ts in by_rollout] == [
        (0, None, 2),
        (2001, 0.9, 2),
        (2002, 0.9, 2),
    ]
    configs = Counter((c.temperature, c.rollout_id, c.min_p) for _, c in lm.calls)
    assert configs == {(0.0, 0, 0.0): 6, (0.9, 2001, 0.1): 6, (0.9, 2002, 0.1): 6}  # two predictors x 3 examples
    assert runs.run(items[1:], 2) == by_rollout[2][1:] and len(lm.calls) == 18  # already run: nothing sent
    assert by_rollout[0][0].program == program.fingerprint() and by_rollout[0][0].model == lm.spec()
    assert program.label.config == {} and program.digit.config == {}  # the teacher is left alone


def test_a_rollout_where_every_example_raised_is_a_bug_to_show():
    class Broken(Parity):
        def forward(self, number):
            raise RuntimeError("retriever down")

    runs = Rollouts(Broken().bind(parity_lm()), metric)
    with pytest.raises(EvaluationError, match="raised on all 2 examples; first: RuntimeError: retriever down"):
        runs.run(list(enumerate(parity_data([1, 2]))), 0)


def test_bootstrap_keeps_its_traces_as_records_of_example_rollout_score_and_steps():
    lm = parity_lm(right_when=lambda number, config, messages: config.rollout_id == 1 or number == "2")
    opt = BootstrapFewShot(metric, max_bootstrapped_demos=2, max_labeled_demos=0, num_rollouts=2)
    opt.compile(Parity().bind(lm), trainset=parity_data([2, 3]))
    assert [{k: t[k] for k in ("example", "rollout", "score")} for t in opt.traces_] == [
        {"example": 0, "rollout": 0, "score": 1.0},
        {"example": 1, "rollout": 1, "score": 1.0},
    ]
    assert [[s.predictor for s in t["steps"]] for t in opt.traces_] == [["digit", "label"]] * 2
