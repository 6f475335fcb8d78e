"""How long MedPrompt will take, said before it starts: the runs counted (`MedPrompt.planned_runs`), the
seconds per run measured on the program (`cotune.optimize.work_estimate`), and what shortens it."""

from __future__ import annotations

import re
import threading

import pytest

from cotune.lm import FakeLM
from cotune.lm.cache import RequestCache
from cotune.optimize.bootstrap import BootstrapFewShot
from cotune.optimize.medprompt import MedPrompt
from cotune.optimize.registry import build_optimizer
from cotune.optimize.work_estimate import measure_medprompt, plan_medprompt, seconds_per_run
from cotune.retrieve.embed import TfidfEmbedder
from cotune.tasks.multiple_choice import MultipleChoiceQA, choice_match, mc_example


def question(i: int, n_options: int = 6):
    options = [f"option {j} of {i}" for j in range(n_options)]
    return mc_example(f"Which is right in question {i}?", options, options[i % n_options])


TRAIN = [question(i) for i in range(12)]
TEST = [question(100 + i) for i in range(30)]


def medprompt(**params) -> MedPrompt:
    return MedPrompt(choice_match, **({"embedder": TfidfEmbedder(), "num_threads": 1} | params))


def test_planned_runs_counts_self_generation_and_one_run_per_option_order():
    assert medprompt().planned_runs(TRAIN, TEST) == {"self-generation": 12, "ensemble": 30 * 5}
    assert medprompt(m=3).planned_runs(TRAIN) == {"self-generation": 12, "ensemble": 0}
    # two options have only two orders; three have six
    few = [question(0, 2), question(1, 3)]
    assert medprompt(m=5).planned_runs(TRAIN, few)["ensemble"] == 2 + 5
    assert medprompt(m=1).planned_runs(TRAIN, few)["ensemble"] == 2
    # later rounds re-run only the failures: the count is an upper bound
    rounds = medprompt(bootstrap=BootstrapFewShot(choice_match, num_rollouts=3))
    assert rounds.planned_runs(TRAIN, TEST)["self-generation"] == 36


def test_the_estimate_is_runs_times_measured_seconds_and_offers_smaller_ensembles():
    work = plan_medprompt(medprompt(), TRAIN, TEST, plain=2.0, with_demos=3.0)
    assert [(p.name, p.runs, p.seconds) for p in work.phases] == [
        ("self-generation", 12, 24.0),
        ("ensemble", 150, 450.0),
    ]
    assert work.seconds == 474.0
    assert work.shorter == (("-P m=3", 24.0 + 90 * 3.0), ("-P m=1", 24.0 + 30 * 3.0))
    assert plan_medprompt(medprompt(m=2), TRAIN, TEST, plain=2.0, with_demos=3.0).shorter == (("-P m=1", 114.0),)
    cached = plan_medprompt(medprompt(), TRAIN, TEST, plain=2.0, with_demos=3.0, cached=4)
    assert cached.phases[0].runs == 8 and cached.shorter[-1] == ("-P m=1", 16.0 + 90.0)
    alone = plan_medprompt(medprompt(m=1), TRAIN, [], plain=2.0, with_demos=3.0)  # no evaluation afterwards
    assert [p.name for p in alone.phases] == ["self-generation"] and alone.shorter == ()


class Clock:
    """A clock the fake model moves: each call takes 1 s plus 1 s per 100 words of prompt."""

    def __init__(self):
        self.now, self.lock = 0.0, threading.Lock()

    def __call__(self) -> float:
        return self.now

    def lm(self, cache=None) -> FakeLM:
        def respond(messages):
            words = sum(len(m["content"].split()) for m in messages)
            with self.lock:
                self.now += 1.0 + words / 100
            letter = re.findall(r"^\(([A-Z])\)", messages[-1]["content"], re.MULTILINE)[0]
            return f"Reasoning: first.\nAnswer: ({letter})"

        return FakeLM(respond, cache=cache)


def test_seconds_per_run_is_measured_and_cache_hits_measure_nothing(tmp_path):
    clock = Clock()
    program = MultipleChoiceQA().bind(clock.lm(cache=RequestCache(tmp_path / "c.sqlite")))
    first = seconds_per_run(program, TRAIN[:4], choice_match, num_threads=1, clock=clock)
    assert first == pytest.approx(clock.now / 4) and first > 1.0
    assert seconds_per_run(program, TRAIN[:4], choice_match, num_threads=1, clock=clock) is None  # all cached
    # half of them cached: the time is shared among the calls sent, not spread over the cached ones
    before = clock.now
    half = seconds_per_run(program, TRAIN[2:6], choice_match, num_threads=1, clock=clock)
    assert half == pytest.approx((clock.now - before) / 2)


def test_measuring_times_prompts_with_k_demos_each_and_self_generation_reuses_the_timed_runs(tmp_path):
    clock = Clock()
    lm = clock.lm(cache=RequestCache(tmp_path / "c.sqlite"))
    opt = medprompt(k=3, m=5)
    work = measure_medprompt(opt, MultipleChoiceQA().bind(lm), TRAIN, TEST, num_threads=2, clock=clock)
    plain, ensemble = work.phases
    assert (plain.runs, ensemble.runs) == (12 - 4, 150)  # the four runs timed are in the request cache now
    assert ensemble.seconds_per_run > plain.seconds_per_run > 1.0  # three demos make the prompt longer
    shown = [messages for messages, _ in lm.calls if len(messages) == 1 + 2 * 3 + 1]  # system, 3 demos, question
    assert len(shown) == 2
    # each timed question is shown its own demos, as kNN shows each its nearest: a batch sharing them would
    # compute them once for all rows and time too little
    assert shown[0][1:-1] != shown[1][1:-1]
    sent = len(lm.calls)
    opt.compile(MultipleChoiceQA().bind(lm), trainset=TRAIN)
    assert len(lm.calls) - sent == len(TRAIN) - 4  # the warm-up batch and the timed batch came from the cache


def test_the_demo_pool_has_passing_runs_with_their_reasoning_then_labeled_examples():
    from cotune.evaluate import evaluate
    from cotune.optimize.work_estimate import _pool

    program = MultipleChoiceQA().bind(Clock().lm())
    rows = evaluate(program, TRAIN[:3], choice_match, num_threads=1).rows  # only question 0's gold is (A)
    [(name, predictor)] = program.named_predictors()
    pool = _pool(predictor, name, rows, TRAIN, medprompt(), size=4)
    assert [d.get("reasoning") for d in pool] == ["first.", None, None, None]
    assert [d["question"] for d in pool] == [TRAIN[i]["question"] for i in (0, 0, 1, 2)]


def test_without_a_request_cache_the_timed_runs_are_run_again():
    clock = Clock()
    work = measure_medprompt(medprompt(), MultipleChoiceQA().bind(clock.lm()), TRAIN, TEST, num_threads=2, clock=clock)
    assert [p.runs for p in work.phases] == [12, 150]


def test_nothing_measured_when_everything_is_cached(tmp_path):
    clock = Clock()
    lm = clock.lm(cache=RequestCache(tmp_path / "c.sqlite"))
    assert measure_medprompt(medprompt(), MultipleChoiceQA().bind(lm), TRAIN, TEST, num_threads=1, clock=clock)
    assert measure_medprompt(medprompt(), MultipleChoiceQA().bind(lm), TRAIN, TEST, num_threads=1, clock=clock) is None


def test_threads_reach_the_default_self_generation(monkeypatch):
    import cotune.optimize.medprompt as medprompt_module

    built = []
    real = medprompt_module.KNNFewShot

    def knn(*args, **kwargs):
        built.append(kwargs["bootstrap"].num_threads)
        return real(*args, **kwargs)

    monkeypatch.setattr(medprompt_module, "KNNFewShot", knn)
    opt = build_optimizer("medprompt", choice_match, num_threads=3, seed=0, embedder=TfidfEmbedder(), k=2, m=2)
    opt.compile(MultipleChoiceQA().bind(FakeLM(["Reasoning: r.\nAnswer: (A)"])), trainset=TRAIN[:4])
    assert built == [3]
