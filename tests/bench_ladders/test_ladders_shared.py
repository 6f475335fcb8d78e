"""What both ladders share (benchmarks/ladders.py): the Wilson 95% interval, the pooled summary, the answer
distribution and the chance verdict, and the embedder that computes only on the model's thread."""

from __future__ import annotations

import pytest

from .fakes import BagOfWords, ComputeCountingLM


def test_wilson_interval_matches_the_formula_and_stays_inside_0_1(bench):
    wilson = bench["ladders"].wilson
    low, high = wilson(50, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert 0 < wilson(0, 10)[1] < 0.3 and 0.7 < wilson(10, 10)[0] < 1  # not the normal interval's [0, 0]
    with pytest.raises(ValueError, match="n=0"):
        wilson(0, 0)
    with pytest.raises(ValueError, match="got 11"):
        wilson(11, 10)


def test_pooled_summary_adds_the_questions_of_every_task_per_model_and_rung(bench):
    ladders = bench["ladders"]

    def row(rung, model, correct, n):
        return {"rung": rung, "model": model, "tokens_per_question": 10.0, "calls_per_question": 1.0} | (
            ladders.interval_fields(correct, n)
        )

    rows = [row("zero-shot", "small", 10, 50), row("zero-shot", "small", 30, 50), row("zero-shot", "big", 9, 10)]
    summary = ladders.pooled(rows, ["zero-shot", "never run"])
    small, big = summary
    assert (small["model"], small["n"], small["test_accuracy"], small["tasks"]) == ("small", 100, 0.4, 2)
    assert small["ci95"] == [round(x, 4) for x in ladders.wilson(40, 100)]
    assert (big["model"], big["n"]) == ("big", 10)  # never pooled with another model's questions


def test_answer_distribution_counts_unparsed_runs_and_lumps_the_free_text_tail(bench):
    distribution = bench["ladders"].answer_distribution
    assert distribution([{"answer": "A"}, {"answer": " A "}, None, {"answer": ""}, {"answer": "B"}]) == {
        "A": 2,
        "(none)": 2,
        "B": 1,
    }
    assert distribution([{"answer": str(i % 5)} for i in range(12)], top=2) == {"0": 3, "1": 3, "(other)": 6}


def test_at_chance_when_the_interval_reaches_guessing(bench):
    ladders = bench["ladders"]
    test = [{"options": ["a", "b"]}, {"options": ["a", "b", "c", "d"]}]
    assert ladders.chance_level(test) == pytest.approx(0.375)
    assert ladders.at_chance(ladders.interval_fields(20, 50), 0.375)  # 40% of 50: indistinguishable from guessing
    assert not ladders.at_chance(ladders.interval_fields(35, 50), 0.375)


def test_on_model_thread_embeds_only_unseen_texts_and_only_through_the_model_thread(bench):
    inner, lm = BagOfWords(), ComputeCountingLM()
    embedder = bench["ladders"].OnModelThread(inner, lm)
    first = embedder.embed(["red apple", "green pear"])
    again = embedder.embed(["green pear", "red apple"])
    assert (lm.computed, inner.asked) == (1, [["red apple", "green pear"]])  # seen texts: from memory
    assert (again[0] == first[1]).all() and (again[1] == first[0]).all()
    embedder.embed(["red apple", "blue plum", "blue plum"])
    assert (lm.computed, inner.asked[-1]) == (2, ["blue plum"])
    assert embedder.embed([]).shape[0] == 0
