"""MedPrompt end to end: on FakeLM (unit) and on the real SmolLM2-135M with a BBH task (integration)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cotune.errors import ConfigError, UnknownChoiceError
from cotune.evaluate import evaluate
from cotune.lm import FakeLM
from cotune.optimize.knn import KNNFewShot
from cotune.optimize.medprompt import MedPrompt
from cotune.optimize.registry import build_optimizer
from cotune.program.ensemble import ChoiceShuffleEnsemble
from cotune.program.selectors import KNNSelector
from cotune.retrieve.embed import TfidfEmbedder
from cotune.tasks.multiple_choice import MultipleChoiceQA, choice_match, mc_example

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def sum_question(a: int, b: int, options: list[int]):
    return mc_example(f"What is {a} plus {b}?", [str(o) for o in options], str(a + b))


def adder_lm() -> FakeLM:
    """Adds right when the sum is below 10 (and finds it among the options); otherwise always says (A)."""

    def respond(messages):
        text = messages[-1]["content"]
        a, b = map(int, re.search(r"What is (\d+) plus (\d+)", text).groups())
        shown = re.findall(r"^\(([A-Z])\) (.*)$", text, re.MULTILINE)
        if a + b < 10:
            letter = next(letter for letter, option in shown if option == str(a + b))
            return f"Reasoning: {a} plus {b} is {a + b}.\nAnswer: ({letter})"
        return "Reasoning: too hard.\nAnswer: (A)"

    return FakeLM(respond)


TRAIN = [
    sum_question(1, 2, [3, 4, 5]),
    sum_question(2, 2, [5, 4, 3]),
    sum_question(7, 8, [14, 15, 16]),  # too hard, gold not at (A): fails
    sum_question(6, 6, [12, 13, 11]),  # too hard, but gold at (A): passes by position luck
    sum_question(3, 5, [7, 9, 8]),
]
TEST = [sum_question(2, 3, [6, 5, 4]), sum_question(9, 9, [17, 18, 19])]


def medprompt(**params) -> MedPrompt:
    return MedPrompt(choice_match, **({"k": 2, "m": 3, "embedder": TfidfEmbedder()} | params))


def test_compile_returns_an_ensemble_over_knn_selected_self_generated_demos():
    opt = medprompt()
    best = opt.compile(MultipleChoiceQA().bind(adder_lm()), trainset=TRAIN)
    assert isinstance(best, ChoiceShuffleEnsemble) and best.m == 3
    choose = best.program.choose
    assert isinstance(choose.demo_selector, KNNSelector) and choose.demo_selector.k == 2
    # Only runs whose answer passed: 1+2, 2+2, 3+5, and 6+6 by position luck.
    assert [d["question"] for d in choose.demos] == [TRAIN[i]["question"] for i in (0, 1, 3, 4)]
    assert all(d["reasoning"] and d["answer"].startswith("(") for d in choose.demos)
    assert opt.pool_sizes_ == {"choose": {"bootstrapped": 4, "labeled": 0}}
    assert (opt.n_passed_, opt.n_run_) == (4, 5)


def test_ensemble_votes_and_costs_m_calls_per_question():
    lm = adder_lm()
    best = medprompt().compile(MultipleChoiceQA().bind(lm), trainset=TRAIN)
    calls_before = len(lm.calls)
    result = evaluate(best, TEST, choice_match, num_threads=1)
    easy, hard = (row.prediction for row in result.rows)
    assert easy["answer"] == "B" and easy["agreement"] == 1.0  # 2+3=5 found in every order
    assert hard["agreement"] < 1  # position bias spreads its votes
    assert len(lm.calls) - calls_before == result.usage.calls == 3 * len(TEST)
    # Every run shows k=2 demos before the question.
    assert all(len(step.messages) == 1 + 2 * 2 + 1 for row in result.rows for step in row.trace)


def test_saved_medprompt_program_loads_and_answers_the_same(tmp_path):
    lm = adder_lm()
    best = medprompt().compile(MultipleChoiceQA().bind(lm), trainset=TRAIN)
    path = best.save(tmp_path / "medprompt.json")
    fresh = ChoiceShuffleEnsemble(MultipleChoiceQA()).load(path, lm=lm)
    assert fresh.m == 3 and isinstance(fresh.program.choose.demo_selector, KNNSelector)
    for ex in TEST:
        assert dict(fresh(**ex.inputs())) == dict(best(**ex.inputs()))


def test_input_program_is_unchanged():
    program = MultipleChoiceQA().bind(adder_lm())
    before = program.dump_state()
    medprompt().compile(program, trainset=TRAIN)
    assert program.dump_state() == before and program.choose.demo_selector is None


def test_tasks_without_options_are_refused():
    from cotune.data import Example

    plain = [Example(question="2+2?", answer="4").with_inputs("question")]
    with pytest.raises(ConfigError, match="options"):
        medprompt().compile(MultipleChoiceQA(), trainset=plain)


def test_build_optimizer_by_cli_name():
    assert isinstance(build_optimizer("knn", choice_match, k=3), KNNFewShot)
    med = build_optimizer("medprompt", choice_match, k=3, m=2)
    assert isinstance(med, MedPrompt) and (med.k, med.m) == (3, 2)
    with pytest.raises(UnknownChoiceError, match="knn, medprompt"):
        build_optimizer("medprom", choice_match)


# -- the real model -------------------------------------------------------------------------------------


@pytest.mark.integration
def test_medprompt_end_to_end_on_smollm2_and_bbh(tmp_path, monkeypatch):
    folder = (DATA / "bbh").resolve()
    if not folder.is_dir():
        pytest.skip(f"shared data set 'bbh' not found at {folder}")
    from cotune.lm.registry import load
    from cotune.tasks import load_task

    monkeypatch.setenv("COTUNE_REQUEST_CACHE", str(tmp_path / "requests.sqlite"))
    lm = load("smollm2-135m")
    task = load_task("bbh:hyperbaton", data_dir=folder, train=4, dev=0, test=2)
    program = task.program().bind(lm)
    program.choose.config["max_tokens"] = 96

    opt = MedPrompt(task.metric, k=2, m=2)  # default embedder: MiniLM (TF-IDF without it)
    best = opt.compile(program, trainset=task.train)
    pool = opt.pool_sizes_["choose"]
    assert pool["bootstrapped"] + pool["labeled"] > 0  # self-generated demos, or labeled ones if none passed
    assert len(best.program.choose.demos) == pool["bootstrapped"] + pool["labeled"]

    result = evaluate(best, task.test, task.metric, num_threads=2, max_errors=0)
    assert result.n == 2 and result.errors == 0
    for row in result.rows:
        assert len(row.trace) == 2  # two option orders, two calls
        demos = [step.messages[1:-1] for step in row.trace]
        assert demos[0] == demos[1] and demos[0]  # the options move, the question's kNN demos do not
        if row.error_kind is None:
            assert len(row.prediction["votes"]) == 2 and 0 <= row.prediction["agreement"] <= 1
            assert row.prediction["answer"] in ("", "A", "B")
    # The saved program (demos, kNN index, ensemble settings) answers the same (from the request cache).
    fresh = ChoiceShuffleEnsemble(task.program()).load(best.save(tmp_path / "best.json"), lm=lm)
    again = evaluate(fresh, task.test, task.metric, num_threads=2)
    assert [r.prediction for r in again.rows] == [r.prediction for r in result.rows]
    assert again.usage.cache_hits == again.usage.calls
