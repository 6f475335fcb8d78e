"""KNNFewShot and KNNSelector on FakeLM with a constructed embedder whose nearest neighbours are known."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from cotune.data import Dataset, Example
from cotune.errors import ConfigError, UnknownChoiceError
from cotune.lm import FakeLM
from cotune.optimize.bootstrap import BootstrapFewShot
from cotune.optimize.knn import KNNFewShot, attach_embedder
from cotune.program import ChainOfThought, Program
from cotune.program.selectors import KNNSelector, demo_text
from cotune.retrieve.embed import TfidfEmbedder

ANGLES = [0, 30, 60, 90, 120, 180, 270]


class AngleEmbedder:
    """Embeds "angle N" as the unit vector at N degrees, so cosine similarity orders by angular distance.

    Records every call, to count how often (and what) it embeds.
    """

    def __init__(self):
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        rows = []
        for text in texts:
            degrees = math.radians(float(re.search(r"angle (-?\d+)", text).group(1)))
            rows.append([math.cos(degrees), math.sin(degrees)])
        return np.array(rows, dtype=np.float32)


class QA(Program):
    def __init__(self):
        self.answer = ChainOfThought("question -> answer")

    def forward(self, question):
        return self.answer(question=question)


def data(angles) -> Dataset:
    return Dataset(Example(question=f"angle {a}", answer=f"a{a}").with_inputs("question") for a in angles)


def metric(example, prediction) -> float:
    return float(prediction.get("answer") == example["answer"])


def angle_lm(right_below: int = 1000) -> FakeLM:
    """Answers "a<N>" with reasoning for angles below ``right_below``, a wrong answer otherwise."""

    def respond(messages):
        n = int(re.search(r"angle (-?\d+)", messages[-1]["content"]).group(1))
        return f"Reasoning: the angle is {n}.\nAnswer: {f'a{n}' if n < right_below else 'no idea'}"

    return FakeLM(respond)


def shown_questions(messages) -> list[str]:
    """The questions of the demos in a request (user turns before the last)."""
    return [m["content"].removeprefix("Question: ") for m in messages[1:-1] if m["role"] == "user"]


def labeled_knn(k=3, embedder=None) -> tuple[Program, AngleEmbedder]:
    embedder = embedder or AngleEmbedder()
    program = KNNFewShot(k, demos="labeled", embedder=embedder).compile(QA().bind(angle_lm()), trainset=data(ANGLES))
    return program, embedder


# -- nearest neighbours ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, k, nearest_first",
    [
        (50, 3, [60, 30, 90]),
        (100, 2, [90, 120]),
        (200, 3, [180, 270, 120]),
        (-20, 2, [0, 30]),  # -20 degrees is nearer 0 than 270 (= -90)
        (45, 1, [30]),  # a tie between 30 and 60: the earlier pool demo wins
        (10, 20, [0, 30, 60, 90, 270, 120, 180]),  # k beyond the pool: every demo, nearest first
    ],
)
def test_each_input_gets_its_k_nearest_demos(query, k, nearest_first):
    program, _ = labeled_knn(k)
    selector = program.answer.demo_selector
    got = [selector.pool[i]["question"] for i in selector.neighbours({"question": f"angle {query}"})]
    assert got == [f"angle {a}" for a in nearest_first]
    # In the prompt the nearest demo comes last, right before the question.
    messages = program.answer.messages(question=f"angle {query}")
    assert shown_questions(messages) == [f"angle {a}" for a in reversed(nearest_first)]


def test_demos_differ_per_input_at_inference():
    lm = angle_lm()
    program = KNNFewShot(2, demos="labeled", embedder=AngleEmbedder()).compile(QA().bind(lm), trainset=data(ANGLES))
    program(question="angle 5")
    program(question="angle 265")
    assert [shown_questions(m) for m, _ in lm.calls] == [["angle 30", "angle 0"], ["angle 180", "angle 270"]]


def test_a_demo_equal_to_the_input_is_never_shown():
    program, _ = labeled_knn(2)
    assert shown_questions(program.answer.messages(question="angle 60")) == ["angle 90", "angle 30"]


def test_the_pool_is_embedded_once_at_compile_and_each_query_once():
    program, embedder = labeled_knn(3)
    assert embedder.calls == [[demo_text(ex, ["question"]) for ex in data(ANGLES)]]
    program(question="angle 10")
    program(question="angle 11")
    assert embedder.calls[1:] == [["question: angle 10"], ["question: angle 11"]]


# -- where the demos come from --------------------------------------------------------------------------


def test_self_generated_pool_keeps_only_passing_runs_with_their_reasoning():
    opt = KNNFewShot(2, metric=metric, embedder=AngleEmbedder())
    program = opt.compile(QA().bind(angle_lm(right_below=100)), trainset=data(ANGLES))
    pool = program.answer.demos
    assert [d["question"] for d in pool] == ["angle 0", "angle 30", "angle 60", "angle 90"]
    assert all(d["reasoning"] == f"the angle is {d['question'].split()[-1]}." for d in pool)
    assert opt.pool_sizes_ == {"answer": {"bootstrapped": 4, "labeled": 0}}
    assert (opt.n_passed_, opt.n_run_) == (4, len(ANGLES))


def test_no_passing_run_falls_back_to_labeled_demos():
    events = []
    opt = KNNFewShot(2, metric=metric, embedder=AngleEmbedder())
    program = opt.compile(QA().bind(angle_lm(right_below=-1)), trainset=data(ANGLES), events=events.append)
    assert opt.pool_sizes_ == {"answer": {"bootstrapped": 0, "labeled": len(ANGLES)}}
    assert all("reasoning" not in d for d in program.answer.demos)
    assert "knn.labeled_fallback" in [e.name for e in events]


def test_a_configured_bootstrap_is_used_for_self_generation():
    bootstrap = BootstrapFewShot(metric, max_bootstrapped_demos=1, max_labeled_demos=9)  # limits are overridden
    opt = KNNFewShot(2, bootstrap=bootstrap, embedder=AngleEmbedder())
    program = opt.compile(QA().bind(angle_lm(right_below=100)), trainset=data(ANGLES))
    assert len(program.answer.demos) == 4 and opt.pool_sizes_["answer"]["labeled"] == 0


@pytest.mark.parametrize(
    "params, error",
    [
        ({"k": 0}, ConfigError),
        ({"demos": "random"}, UnknownChoiceError),
        ({"demos": "bootstrap"}, ConfigError),  # self-generation needs a metric
        ({"metric": metric, "bootstrap": BootstrapFewShot(metric)}, ConfigError),
    ],
)
def test_bad_settings_are_refused(params, error):
    with pytest.raises(error):
        KNNFewShot(**params).compile(QA(), trainset=data([1]))


def test_compile_leaves_the_input_program_alone_and_is_deterministic():
    program = QA().bind(angle_lm(right_below=100))
    before = program.dump_state()
    a = KNNFewShot(2, metric=metric, embedder=AngleEmbedder(), seed=3).compile(program, trainset=data(ANGLES))
    b = KNNFewShot(2, metric=metric, embedder=AngleEmbedder(), seed=3).compile(program, trainset=data(ANGLES))
    assert program.dump_state() == before and program.answer.demo_selector is None
    assert a.dump_state() == b.dump_state()


# -- save / load ----------------------------------------------------------------------------------------


def test_the_index_survives_save_and_load_without_embedding_the_pool_again(tmp_path):
    program, embedder = labeled_knn(3)
    queries = [{"question": f"angle {q}"} for q in (50, 200)]
    before = [program.answer.demos_for(q) for q in queries]
    path = program.save(tmp_path / "knn.json")

    fresh = QA().load(path, lm=angle_lm())
    selector = fresh.answer.demo_selector
    assert isinstance(selector, KNNSelector) and selector.k == 3
    np.testing.assert_array_equal(selector.vectors, program.answer.demo_selector.vectors)
    with pytest.raises(ConfigError, match="attach_embedder"):  # a custom embedder is code, not saved
        fresh.answer.demos_for(queries[0])

    counting = AngleEmbedder()
    attach_embedder(fresh, counting)
    assert [fresh.answer.demos_for(q) for q in queries] == before
    assert counting.calls == [["question: angle 50"], ["question: angle 200"]]  # queries only, one each


def test_a_tfidf_index_reloads_by_itself(tmp_path):
    train = Dataset(
        Example(question=q, answer=a).with_inputs("question")
        for q, a in [("capital of France", "Paris"), ("boiling water temperature", "100"),
                     ("capital of Spain", "Madrid"), ("freezing water temperature", "0")]
    )  # fmt: skip
    program = KNNFewShot(1, demos="labeled", embedder=TfidfEmbedder()).compile(QA(), trainset=train)
    query = {"question": "water temperature at sea level"}
    assert program.answer.demos_for(query)[0]["question"].endswith("water temperature")
    fresh = QA().load(program.save(tmp_path / "tfidf.json"), bind_saved_lm=False)
    assert fresh.answer.demos_for(query) == program.answer.demos_for(query)
    assert fresh.answer.demos_for({"question": "capital of Italy"})[0]["question"].startswith("capital")


def test_a_saved_index_must_match_the_demos():
    program, _ = labeled_knn(2)
    state = program.answer.dump_state()
    state["demos"] = state["demos"][:-1]
    with pytest.raises(ConfigError, match="vectors"):
        QA().answer.load_state(state)
    state = program.answer.dump_state()
    state["selector"]["kind"] = "mystery"
    with pytest.raises(UnknownChoiceError, match="demo selector"):
        QA().answer.load_state(state)


def test_reset_copy_and_plain_states_drop_the_selector():
    program, _ = labeled_knn(2)
    assert program.reset_copy().answer.demo_selector is None
    assert program.answer.load_state(QA().answer.dump_state()).demo_selector is None
