"""ChoiceShuffleEnsemble on FakeLM: permutations, mapping answers back, voting, cost, save/load."""

from __future__ import annotations

import itertools
import math
import re
import threading
import time

import pytest

from cotune.errors import ConfigError, ParseError
from cotune.evaluate import evaluate
from cotune.lm import FakeLM
from cotune.lm.cache import RequestCache
from cotune.program.choices import LETTERS
from cotune.program.ensemble import ChoiceShuffleEnsemble, choice_permutations, program_for_state
from cotune.program.saved import read_state
from cotune.tasks.multiple_choice import MultipleChoiceQA, choice_match, mc_example

OPTIONS = ["red", "green", "blue", "yellow"]


def shown_options(messages) -> list[str]:
    """The option texts in the order the last user message shows them."""
    return re.findall(r"^\([A-Z]\) (.*)$", messages[-1]["content"], re.MULTILINE)


def always(letter: str) -> FakeLM:
    """A model with pure position bias: it always answers ``letter``."""
    return FakeLM(lambda messages: f"Reasoning: no idea.\nAnswer: ({letter})")


def knows(answer: str) -> FakeLM:
    """A model that finds the option reading ``answer`` wherever it is shown."""

    def respond(messages):
        letter = "ABCDEFGH"[shown_options(messages).index(answer)]
        return f"Reasoning: it is {answer}.\nAnswer: ({letter})"

    return FakeLM(respond)


def ensemble(lm: FakeLM, m: int = 5, seed: int = 0) -> ChoiceShuffleEnsemble:
    return ChoiceShuffleEnsemble(MultipleChoiceQA(), m=m, seed=seed).bind(lm)


# -- permutations ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, m, expected", [(4, 5, 5), (2, 5, 2), (3, 6, 6), (3, 10, 6), (1, 3, 1), (10, 8, 8)])
def test_permutations_are_distinct_identity_first_and_capped_at_n_factorial(n, m, expected):
    orders = choice_permutations(n, m, seed=3)
    assert orders[0] == tuple(range(n))
    assert len(orders) == expected == len(set(orders))
    assert all(sorted(o) == list(range(n)) for o in orders)


def test_permutations_are_deterministic_under_the_seed():
    assert choice_permutations(5, 5, seed=1) == choice_permutations(5, 5, seed=1)
    assert choice_permutations(5, 5, seed=1) != choice_permutations(5, 5, seed=2)


# -- voting ---------------------------------------------------------------------------------------------


def test_position_bias_votes_for_different_originals_and_agreement_drops():
    lm = always("A")
    pred = ensemble(lm, m=5)(question="Which colour?", options=OPTIONS)
    orders = [shown_options(messages) for messages, _ in lm.calls]
    # Each run's "(A)" is mapped back to whatever option was shown first in that run.
    assert pred.votes == ["ABCD"[OPTIONS.index(order[0])] for order in orders]
    assert len(set(pred.votes)) > 1
    assert pred.agreement == pred.votes.count(pred.answer) / 5 < 1
    assert orders[0] == OPTIONS  # the first run shows the original order


def test_content_answers_survive_every_shuffle():
    lm = knows("blue")
    pred = ensemble(lm, m=5)(question="Which colour is the sky?", options=OPTIONS)
    assert pred.answer == "C" and pred.votes == ["C"] * 5 and pred.agreement == 1.0
    assert len({tuple(shown_options(m)) for m, _ in lm.calls}) == 5  # five different prompts


def test_tie_goes_to_the_first_vote():
    # Two options, always "(B)": identity votes B (original index 1), the swap votes A -> 1:1 tie.
    pred = ensemble(always("B"), m=5)(question="?", options=["x", "y"])
    assert pred.votes == ["B", "A"] and pred.answer == "B" and pred.agreement == 0.5


def test_unreadable_answers_cast_no_vote_and_count_as_dissent():
    answers = iter(["Answer: (A)", "Answer: none of them", "Answer: (A)"])
    lm = FakeLM(lambda messages: next(answers))
    ens = ChoiceShuffleEnsemble(MultipleChoiceQA(cot=False), m=3).bind(lm)
    pred = ens(question="?", options=["x", "y", "z"])
    assert pred.votes[1] is None and pred.votes[0] == "A" and pred.votes[2] is not None
    assert pred.answer == "A"  # most votes, or a tie won by the first vote
    assert pred.agreement == pred.votes.count("A") / 3 < 1


def test_every_run_failing_to_parse_is_a_parse_failure():
    ens = ChoiceShuffleEnsemble(MultipleChoiceQA(), m=3).bind(FakeLM(["Reasoning: hmm"]))
    with pytest.raises(ParseError):
        ens(question="?", options=["x", "y", "z"])
    ex = mc_example("?", ["x", "y", "z"], "x")
    result = evaluate(ens, [ex], choice_match, num_threads=1)
    assert result.parse_failures == 1 and result.errors == 0


def test_options_must_be_a_list_input():
    with pytest.raises(ConfigError, match="options"):
        ensemble(always("A"))(question="?", options="(A) x (B) y")
    with pytest.raises(ConfigError, match="m must be"):
        ChoiceShuffleEnsemble(MultipleChoiceQA(), m=0)


def test_m1_is_the_inner_program():
    lm = knows("green")
    pred = ensemble(lm, m=1)(question="?", options=OPTIONS)
    assert pred.answer == "B" and pred.votes == ["B"] and len(lm.calls) == 1


# -- cost, cache, traces --------------------------------------------------------------------------------


def test_usage_shows_m_calls_per_question_in_the_trace():
    data = [mc_example(f"q{i}", OPTIONS, "blue") for i in range(3)]
    result = evaluate(ensemble(knows("blue"), m=4), data, choice_match, num_threads=2)
    assert result.score == 1.0
    assert result.usage.calls == 12
    assert set(result.usage_by_predictor) == {"program.choose"}
    assert all(len(row.trace) == 4 for row in result.rows)


def test_the_original_order_runs_first_then_the_others_reach_the_lm_at_once():
    # The original order's demos are pinned first; each later call waits until all three are in flight: run one
    # after another, the first of them would wait in vain.
    together = threading.Barrier(3, timeout=10)
    seen = []

    def respond(messages):
        seen.append(shown_options(messages))
        if len(seen) > 1:
            together.wait()
        return "Reasoning: -\nAnswer: (A)"

    pred = ensemble(FakeLM(respond), m=4)(question="?", options=OPTIONS)
    assert len(pred.votes) == 4 and not together.broken and seen[0] == OPTIONS


def test_the_trace_lists_the_runs_in_order_of_the_orders_not_as_they_finished():
    orders = ChoiceShuffleEnsemble(MultipleChoiceQA(), m=4).permutations(OPTIONS)
    first_shown = [OPTIONS[order[0]] for order in orders]

    def respond(messages):  # the later an order, the sooner its answer comes back
        time.sleep(0.05 * (3 - first_shown.index(shown_options(messages)[0])))
        return "Reasoning: -\nAnswer: (A)"

    data = [mc_example("?", OPTIONS, "red")]
    result = evaluate(ensemble(FakeLM(respond), m=4), data, choice_match, num_threads=1)
    traced = [shown_options(step.messages)[0] for step in result.rows[0].trace]
    assert traced == first_shown and result.rows[0].prediction["votes"] == [LETTERS[OPTIONS.index(o)] for o in traced]


def test_a_failed_request_in_one_order_fails_the_question_after_every_order_ended():
    ended, calls = [], itertools.count()

    def respond(messages):
        ended.append(shown_options(messages)[0])
        if next(calls) == 1:  # one of the orders run together
            raise ConnectionError("server down")
        return "Reasoning: -\nAnswer: (A)"

    with pytest.raises(ConnectionError, match="server down"):
        ensemble(FakeLM(respond), m=4)(question="?", options=OPTIONS)
    assert len(ended) == 4


def test_each_run_is_its_own_cached_request(tmp_path):
    lm = always("A")
    lm.cache = RequestCache(tmp_path / "cache.sqlite")
    ens = ensemble(lm, m=4)
    first = ens(question="?", options=OPTIONS)
    second = ens(question="?", options=OPTIONS)
    assert len(lm.calls) == 4  # the second question was answered from the cache, run by run
    assert first.votes == second.votes and len(set(first.votes)) > 1


# -- state ----------------------------------------------------------------------------------------------


def test_save_and_load_keep_the_settings_and_the_inner_prompts(tmp_path):
    ens = ChoiceShuffleEnsemble(MultipleChoiceQA(), m=3, seed=7)
    ens.program.choose.instruction = "Pick well."
    path = ens.save(tmp_path / "ensemble.json")
    fresh = ChoiceShuffleEnsemble(MultipleChoiceQA()).load(path, lm=always("A"))
    assert (fresh.m, fresh.seed, fresh.program.choose.instruction) == (3, 7, "Pick well.")
    assert [n for n, _ in fresh.named_predictors()] == ["program.choose"]

    state = read_state(path)
    rebuilt = program_for_state(MultipleChoiceQA(), state).load_state(state)
    assert isinstance(rebuilt, ChoiceShuffleEnsemble) and rebuilt.m == 3
    assert program_for_state(MultipleChoiceQA(), MultipleChoiceQA().dump_state()).__class__ is MultipleChoiceQA


def test_deepcopy_gives_independent_inner_predictors():
    ens = ensemble(always("A"), m=2)
    copy = ens.deepcopy()
    copy.program.choose.instruction = "changed"
    assert ens.program.choose.instruction != "changed" and copy.m == 2


# -- demos chosen per question (kNN) ---------------------------------------------------------------------


class FirstOptionEmbedder:
    """Embeds a text by the first option it lists, so a kNN selector's choice follows the options' order."""

    ANGLE = {"red": 0, "green": 90, "blue": 180, "yellow": 270}

    def embed(self, texts):
        import numpy as np

        first = [re.search(r"\(A\) (\w+)", t).group(1) for t in texts]
        return np.array([[math.cos(math.radians(self.ANGLE[c])), math.sin(math.radians(self.ANGLE[c]))] for c in first])


def test_every_order_sees_the_demos_its_question_gets_only_the_options_move():
    from cotune.optimize.knn import KNNFewShot

    pool = [mc_example(f"about {c}?", [c, *(o for o in OPTIONS if o != c)], c) for c in OPTIONS]
    lm = knows("blue")
    inner = KNNFewShot(1, demos="labeled", embedder=FirstOptionEmbedder()).compile(
        MultipleChoiceQA().bind(lm), trainset=pool
    )
    # Asked on its own, a shuffled order gets another demo: the embedder sees its first option.
    alone = set()
    for first in OPTIONS:
        inner(question="?", options=[first, *(o for o in OPTIONS if o != first)])
        alone.add(shown_demo_questions(lm.calls[-1][0])[0])
    assert alone == {f"about {c}?" for c in OPTIONS}
    lm.calls.clear()

    pred = ChoiceShuffleEnsemble(inner, m=4)(question="Which colour?", options=OPTIONS)
    demos_shown = [shown_demo_questions(messages) for messages, _ in lm.calls]
    assert demos_shown == [["about red?"]] * 4  # the original order's nearest: its first option is red
    assert len({tuple(shown_options(messages)) for messages, _ in lm.calls}) == 4 and pred.answer == "C"
    # After the ensemble, the program ranks by the order it is given, as before.
    inner(question="?", options=["green", "red", "blue", "yellow"])
    assert shown_demo_questions(lm.calls[-1][0]) == ["about green?"]


def shown_demo_questions(messages) -> list[str]:
    """The questions of the demos in a request (user turns before the last), their first line."""
    return [m["content"].splitlines()[0].split(": ", 1)[1] for m in messages[1:-1] if m["role"] == "user"]
