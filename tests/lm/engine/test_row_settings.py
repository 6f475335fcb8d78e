"""Rows of different generation settings in one decoding batch (`cotune.lm.engine.row_settings`): token limits,
stop strings, grammars, greedy and seeded sampling mixed, in the first rows and in joiners, each row getting what it
gets alone. A tiny randomly initialized Llama with SmolLM2's tokenizer (conftest's ``tiny_engine``)."""

from __future__ import annotations

import threading
import time

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cotune.lm.base import GenerationConfig  # noqa: E402
from cotune.lm.constraint import Constraint  # noqa: E402
from cotune.lm.engine.hf import HFLM  # noqa: E402
from cotune.lm.engine.row_settings import RowProcessors, SettingsProcessors  # noqa: E402

ANSWER = ("ebnf", 'root ::= "Reasoning: " [a-z ]{0,30} "\\nAnswer: " ("yes" | "no")')
GRAMMAR = Constraint(grammar=(ANSWER,), json_schema="{}")
BUDGET = Constraint(grammar=(ANSWER,), json_schema="{}", budget_tokens=4, budget_exit="\nAnswer:")


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def stop(tiny_engine):
    """A stop string the free greedy row 2 writes in the middle of its 20 tokens (so a stop that really ends it)."""
    steps = tiny_engine._run((None, None, None), [(user("Name a colour."), 0, GenerationConfig(max_tokens=20))])
    try:
        while True:
            next(steps)
    except StopIteration as done:
        text = done.value[0].text
    assert len(text) > 12
    return text[len(text) // 2 : len(text) // 2 + 3]


@pytest.fixture(scope="module")
def rows(stop):
    """Payloads (messages, seed, config) of eight different settings."""
    configs = [
        GenerationConfig(max_tokens=6),
        GenerationConfig(max_tokens=20),
        GenerationConfig(max_tokens=20, stop=(stop,)),
        GenerationConfig(max_tokens=24, constraint=GRAMMAR),  # constrained greedy
        GenerationConfig(max_tokens=12, temperature=1.0, top_p=0.9),
        GenerationConfig(max_tokens=24, temperature=1.0, constraint=GRAMMAR),  # the grammar draws the samples
        GenerationConfig(max_tokens=24, temperature=1.0, top_p=0.9, constraint=BUDGET),
        GenerationConfig(max_tokens=10, temperature=0.7, min_p=0.1, stop=(stop,)),
    ]
    questions = ["Is the sky blue?", "Two plus two?", "Name a colour.", "What is a cat?", "Hi", "Say yes.", "No?", "?"]
    return [(user(q), 100 + i, c) for i, (q, c) in enumerate(zip(questions, configs, strict=True))]


def outcome(completions):
    return [(c.text, c.completion_tokens, c.finish_reason) for c in completions]


@pytest.fixture(scope="module")
def alone(tiny_engine, rows):
    """What each row gets in a batch of its own."""
    out = []
    for row in rows:
        steps = tiny_engine._run((None, None, None), [row])
        try:
            while True:
                next(steps)
        except StopIteration as done:
            out += outcome(done.value)
    return out


def test_rows_of_every_setting_in_one_batch_get_what_they_get_alone(tiny_engine, drive, rows, alone):
    counters = tiny_engine.counters
    before = (counters.batches, counters.mixed_batches, counters.joined_rows)
    got = outcome(drive(tiny_engine, rows))
    assert got == alone
    assert (counters.batches, counters.mixed_batches, counters.joined_rows) == (before[0] + 1, before[1] + 1, before[2])
    # Each row kept its own settings: its token limit, its stop string, its grammar.
    assert got[0][1:] == (6, "length") and got[1][1:] == (20, "length")
    assert got[2][2] == "stop" and got[2][1] < 20
    assert all("\nAnswer: " in got[i][0] for i in (3, 5, 6))
    assert not any(text.startswith("Reasoning: ") for text, _, _ in got[:3])  # the free rows were not masked


def test_joiners_of_other_settings_get_what_they_get_alone(tiny_engine, drive, rows, alone):
    counters = tiny_engine.counters
    before = (counters.batches, counters.mixed_batches, counters.joined_rows, counters.join_steps)
    # A greedy batch takes a constrained, a stopped and sampled rows, then more of the first rows' settings.
    order = [1, 3, 2, 4, 5, 0, 6, 7]
    got = outcome(drive(tiny_engine, [rows[1]], {0: [rows[3], rows[2]], 2: [rows[4], rows[5], rows[0]], 3: rows[6:]}))
    assert got == [alone[i] for i in order]
    after = (counters.batches, counters.mixed_batches, counters.joined_rows, counters.join_steps)
    assert after == (before[0] + 1, before[1] + 1, before[2] + 7, before[3] + 3)


def test_requests_of_other_settings_join_a_running_batch_and_are_answered_as_they_end(tiny_engine):
    lm = HFLM.from_engine(tiny_engine, cache=False)
    stats = tiny_engine.stats
    joined, batches = stats.joined, stats.batches
    results: dict[str, str] = {}
    calls = {
        "long": ("Tell me a story.", {"max_tokens": 300}),  # long enough to be running when the others arrive
        "grammar": ("What is a cat?", {"max_tokens": 24, "constraint": GRAMMAR}),
        "sampled": ("Hi", {"max_tokens": 8, "temperature": 1.0, "stop": ["\n"]}),
    }

    def call(name: str) -> None:
        question, config = calls[name]
        results[name] = lm(user(question), **config).text

    threads = {name: threading.Thread(target=call, args=(name,)) for name in calls}
    threads["long"].start()
    time.sleep(0.05)
    assert "long" not in results
    for name in ("grammar", "sampled"):
        threads[name].start()
    for name in ("grammar", "sampled"):
        threads[name].join(120)
    assert threads["long"].is_alive()  # they were answered as they ended, not with the batch's longest row
    threads["long"].join(120)
    assert (stats.batches - batches, stats.joined - joined) == (1, 2)
    for name, (question, config) in calls.items():  # each alone, afterwards: the same text (the sample too)
        assert lm(user(question), **config).text == results[name], name
    assert "\nAnswer: " in results["grammar"]


class Recorder:
    """A processor that records what it sees and adds ``bump`` to its rows' scores."""

    def __init__(self, bump: float):
        self.bump, self.calls = bump, []

    def step(self, live, last, scores):
        self.calls.append((list(live), None if last is None else list(last), scores.shape[0]))
        return scores + self.bump


def test_row_processors_give_each_group_its_own_rows_numbered_from_zero():
    made: dict[GenerationConfig, Recorder] = {}

    def make(settings, seeds):
        made[settings] = Recorder(float(settings.max_tokens))
        return SettingsProcessors([made[settings]], rows=len(seeds))

    a, b, c = (GenerationConfig(max_tokens=n) for n in (1, 2, 3))
    processors = RowProcessors(make)
    processors.add_rows([a, b, a.replace(rollout_id=4)], [0, 1, 2])  # the rollout id only changes the seed
    scores = processors.step([0, 1, 2], None, torch.zeros(3, 4))
    assert scores[:, 0].tolist() == [1.0, 2.0, 1.0]
    assert made[a].calls == [([0, 1], None, 2)] and made[b].calls == [([0], None, 1)]
    processors.add_rows([c, b], [3, 4])  # joiners: a group of their own, and one more row of b's
    scores = processors.step([1, 2, 3, 4], [10, 11, None, None], torch.zeros(4, 4))
    assert scores[:, 0].tolist() == [2.0, 1.0, 3.0, 2.0]
    assert made[a].calls[-1] == ([1], [11], 1) and made[b].calls[-1] == ([0, 1], [10, None], 2)
    assert made[c].calls == [([0], [None], 1)]
    assert len(processors.groups) == 3
    scores = processors.step([2], [7], torch.zeros(1, 4))  # one group left
    assert made[a].calls[-1] == ([1], [7], 1) and scores.tolist() == [[1.0] * 4]
