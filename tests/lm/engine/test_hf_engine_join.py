"""`HFEngine` batches that take joiners (continuous batching): greedy, seeded sampling, stop strings and grammar
constraints give each joiner what it gets alone. A tiny randomly initialized Llama with SmolLM2's tokenizer
(conftest's ``tiny_engine``)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cotune.lm.base import GenerationConfig  # noqa: E402
from cotune.lm.constraint import Constraint  # noqa: E402

ANSWER = ("ebnf", 'root ::= "Reasoning: " [a-z ]{0,30} "\\nAnswer: " ("yes" | "no")')


@pytest.fixture(scope="module")
def engine(tiny_engine):
    return tiny_engine


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


QUESTIONS = ["Is the sky blue?", "Two plus two?", "Name a colour.", "What is a cat? Say it in a few words.", "Hi"]


@pytest.fixture
def run(drive):
    """``run(engine, config, payloads, joins)``: `drive` with every row under ``config``; the texts."""

    def texts(engine, config, rows, joins=None):
        joins = {k: [(*p, config) for p in v] for k, v in (joins or {}).items()}
        return [c.text for c in drive(engine, [(*p, config) for p in rows], joins)]

    return texts


def payloads(questions, seed0=0):
    return [(user(q), seed0 + i) for i, q in enumerate(questions)]


@pytest.mark.parametrize(
    "config",
    [
        GenerationConfig(max_tokens=12),
        GenerationConfig(max_tokens=12, stop=("ing",)),  # ends some joiners early
        GenerationConfig(max_tokens=12, temperature=1.0, top_p=0.9),
        GenerationConfig(max_tokens=24, constraint=Constraint(grammar=(ANSWER,), json_schema="{}")),
        GenerationConfig(max_tokens=24, temperature=1.0, constraint=Constraint(grammar=(ANSWER,), json_schema="{}")),
        GenerationConfig(
            max_tokens=24,
            temperature=1.0,
            top_p=0.9,
            constraint=Constraint(grammar=(ANSWER,), json_schema="{}", budget_tokens=4, budget_exit="\nAnswer:"),
        ),
    ],
    ids=["greedy", "stop-string", "sampled", "grammar", "grammar-sampled", "grammar-budget-top-p"],
)
def test_joiners_get_what_they_get_alone(engine, run, config):
    every = payloads(QUESTIONS)
    got = run(engine, config, every[:2], joins={1: every[2:4], 4: every[4:]})
    want = [run(engine, config, [p])[0] for p in every]
    assert got == want
    if config.stop:
        assert sum(len(text) < len(want[0]) for text in got) >= 2  # rows ended at their stop string
    if config.constraint is not None:
        assert all("\nAnswer: " in text for text in got)


def test_engine_counters_show_the_joins(engine, run):
    before = (engine.counters.joined_rows, engine.counters.join_steps)
    every = payloads(QUESTIONS)
    run(engine, GenerationConfig(max_tokens=8), every[:2], joins={0: every[2:3], 2: every[3:]})
    assert (engine.counters.joined_rows, engine.counters.join_steps) == (before[0] + 3, before[1] + 2)


def test_a_request_sent_while_a_batch_decodes_joins_it_through_the_worker(engine, run):
    import time

    config = GenerationConfig(max_tokens=300)  # long enough to be running when the second request arrives
    key = engine.batch_key(config, None, None)
    joined, batches = engine.stats.joined, engine.stats.batches
    first = engine.submit(key, [(*p, config) for p in payloads(QUESTIONS[:2])])
    time.sleep(0.05)
    assert not first[0].done()
    second = engine.submit(key, [(*p, config) for p in payloads(QUESTIONS[2:3], seed0=2)])
    texts = [f.result(60).text for f in first + second]
    assert engine.stats.joined - joined == 1 and engine.stats.batches - batches == 1
    assert texts == [run(engine, config, [p])[0] for p in payloads(QUESTIONS[:3])]
