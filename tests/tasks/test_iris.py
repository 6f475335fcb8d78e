from __future__ import annotations

import re
from collections import Counter

import pytest

from cotune.errors import ConfigError
from cotune.evaluate import evaluate
from cotune.lm import FakeLM
from cotune.program import ChainOfThought, Predict
from cotune.tasks import load_task
from cotune.tasks.iris import INPUTS, SPECIES, normalize_species, species_match


@pytest.fixture(scope="module")
def task():
    return load_task("iris", seed=0)


def _key(ex):
    return tuple(ex[k] for k in (*INPUTS, "species"))


def test_program_is_one_unbound_direct_predictor(task):
    program = task.program()
    [(name, predictor)] = program.named_predictors()
    assert name == "classify" and predictor.lm is None
    assert isinstance(predictor, Predict) and not isinstance(predictor, ChainOfThought)  # no reasoning field
    assert predictor.signature.input_names == list(INPUTS)
    assert predictor.signature.output_names == ["species"]
    assert all(s in predictor.instruction for s in SPECIES)


def test_each_call_gives_a_fresh_program(task):
    a, b = task.program(), task.program()
    a.classify.instruction = "changed"
    assert b.classify.instruction != "changed"


def test_program_runs_on_fake_lm_and_scores(task):
    example = next(ex for ex in task.test if ex.species == "setosa")
    lm = FakeLM(["Species: Iris setosa"])
    result = evaluate(task.program().bind(lm), [example], task.metric, num_threads=1)
    assert result.score == 1.0
    assert result.rows[0].prediction["species"] == "setosa"  # the choice field reads "Iris setosa" as its choice
    [step] = result.rows[0].trace
    assert step.predictor == "classify" and "Petal Length: " + example.petal_length in step.messages[-1]["content"]


@pytest.mark.parametrize(
    "answer,gold,score",
    [
        ("setosa", "setosa", 1.0),
        ("Iris setosa", "setosa", 1.0),
        ("Setosa.", "setosa", 1.0),
        ("**Virginica**", "virginica", 1.0),
        ("Iris-versicolor", "versicolor", 1.0),
        ("versicolour", "versicolor", 1.0),
        ("It is most likely virginica, because the petals are long.", "virginica", 1.0),
        ("setosa", "virginica", 0.0),
        ("setosa or virginica", "setosa", 0.0),  # names two species: no credit
        ("not sure", "setosa", 0.0),
        ("", "setosa", 0.0),
        ("setosas", "setosa", 0.0),
    ],
)
def test_species_match(answer, gold, score):
    assert species_match({"species": gold}, {"species": answer}) == score


@pytest.mark.parametrize("prediction", [{}, {"reasoning": "setosa"}, {"species": None}, None])
def test_species_match_without_a_species_scores_zero(prediction):
    assert species_match({"species": "setosa"}, prediction) == 0.0


def test_normalize_species_rejects_ambiguity():
    assert normalize_species("virginica? no, versicolor") is None
    assert normalize_species("VIRGINICA") == "virginica"


def test_splits_are_the_paper_sizes_and_partition_the_data(task):
    assert (len(task.train), len(task.dev), len(task.test)) == (50, 50, 50)
    from cotune.tasks.iris import examples

    everything = Counter(_key(ex) for ex in examples())
    assert Counter(_key(ex) for split in (task.train, task.dev, task.test) for ex in split) == everything


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_splits_are_stratified(task, split):
    counts = Counter(ex.species for ex in task.split(split))
    assert set(counts) == set(SPECIES) and all(16 <= c <= 17 for c in counts.values())


def test_inputs_are_one_decimal_strings_and_marked(task):
    ex = task.train[0]
    assert set(ex.inputs()) == set(INPUTS) and set(ex.labels()) == {"species"}
    assert all(re.fullmatch(r"\d+\.\d", ex[k]) for k in INPUTS)


def test_splits_are_seeded():
    a, b, c = load_task("iris", seed=1), load_task("iris", seed=1), load_task("iris", seed=2)
    assert [_key(x) for x in a.train] == [_key(x) for x in b.train]
    assert [_key(x) for x in a.train] != [_key(x) for x in c.train]


def test_smaller_train_keeps_dev_and_test(task):
    small = load_task("iris", seed=0, train=15, dev=35)
    assert (len(small.train), len(small.dev)) == (15, 35)
    assert list(small.test) == list(task.test)
    assert list(small.dev) == list(task.dev)[:35]


def test_sizes_beyond_150_are_refused():
    with pytest.raises(ConfigError, match="need 160 examples"):
        load_task("iris", train=60)
