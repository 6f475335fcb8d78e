"""The contract every optimizer keeps, checked over all of them (scikit-learn's ``check_estimator`` idea).

1. ``__init__`` only stores its hyperparameters under the same names (``get_params`` reads them back and
   rebuilds an equal optimizer);
2. ``compile`` returns a new program and never mutates its input;
3. the same seed gives the same program (and the same learned attributes);
4. the result saves to JSON and loads back into a fresh program of the same class.

To add an optimizer, append a factory to ``FACTORIES``: it gets a `Setup` (the toy task's metric, model,
data) and returns a built optimizer for a given seed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from fake_tasks import Parity, metric, parity_data, parity_lm

from cotune.data import Dataset
from cotune.evaluate.metrics import Metric
from cotune.lm import FakeLM
from cotune.optimize.base import Optimizer
from cotune.optimize.better_together import BetterTogether
from cotune.optimize.bootstrap import BootstrapFewShot
from cotune.optimize.gpo import GPO
from cotune.optimize.knn import KNNFewShot
from cotune.optimize.labeled import LabeledFewShot
from cotune.optimize.random_search import BootstrapFewShotWithRandomSearch
from cotune.program import Program
from cotune.retrieve.embed import TfidfEmbedder


@dataclass
class Setup:
    """What a factory may use: the toy two-predictor task on a fake model."""

    metric: Metric
    lm: FakeLM
    trainset: Dataset
    valset: Dataset
    make_program: Callable[[], Program] = Parity


Factory = Callable[[Setup, int], Optimizer]

FACTORIES: list[tuple[str, Factory]] = [
    ("labeled", lambda s, seed: LabeledFewShot(k=3, seed=seed)),
    ("bootstrap", lambda s, seed: BootstrapFewShot(s.metric, max_bootstrapped_demos=2, max_labeled_demos=4, seed=seed)),
    (
        "bootstrap_rounds",
        lambda s, seed: BootstrapFewShot(
            s.metric, max_bootstrapped_demos=3, num_rollouts=2, teacher_labeled_demos=2, seed=seed
        ),
    ),
    ("bfrs", lambda s, seed: BootstrapFewShotWithRandomSearch(s.metric, num_candidates=6, seed=seed)),
    (
        "gpo",
        lambda s, seed: GPO(
            s.metric,
            optimizer_lm=FakeLM(lambda messages: "New Instruction: Say whether the number is even or odd."),
            num_steps=2,
            candidates_per_step=2,
            retrieval="none",
            num_threads=2,
            seed=seed,
        ),
    ),
    ("knn", lambda s, seed: KNNFewShot(k=2, metric=s.metric, embedder=TfidfEmbedder(), seed=seed)),
    (
        "better_together",
        lambda s, seed: BetterTogether(
            s.metric,
            prompt=BootstrapFewShotWithRandomSearch(s.metric, num_candidates=3, seed=seed),
            weights=LabeledFewShot(k=2, seed=seed),
            strategy="p,w,p",
        ),
    ),
]


@pytest.fixture
def setup() -> Setup:
    # Right on numbers ending in 0-4: some traces pass, some fail, so the search has choices to make.
    return Setup(metric, parity_lm("01234"), parity_data(range(100, 124)), parity_data(range(300, 310)))


def compile_with(opt: Optimizer, setup: Setup, program: Program | None = None) -> Program:
    program = program if program is not None else setup.make_program().bind(setup.lm)
    return opt.compile(program, trainset=setup.trainset, valset=setup.valset)


def learned(opt: Optimizer) -> dict:
    """The learned attributes (trailing underscore), without wall-clock fields."""
    out = {}
    for name, value in vars(opt).items():
        if name.endswith("_") and not name.startswith("_"):
            out[name] = _without_timing(value)
    return out


def _without_timing(value):
    if isinstance(value, dict):
        return {
            k: _without_timing(v)
            for k, v in value.items()
            if k not in ("seconds", "usage", "usage_per_call", "usage_by_predictor")
        }
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    if hasattr(value, "to_dict"):
        return _without_timing(value.to_dict())
    return value


@pytest.mark.parametrize("name, factory", FACTORIES, ids=[n for n, _ in FACTORIES])
class TestOptimizerContract:
    def test_init_only_stores_hyperparameters(self, name, factory, setup):
        opt = factory(setup, 0)
        params = opt.get_params()
        init_names = [p for p in inspect.signature(type(opt).__init__).parameters if p != "self"]
        assert list(params) == init_names, "every __init__ argument must be stored under its own name"
        clone = type(opt)(**params)
        assert clone.get_params() == params and repr(clone) == repr(opt)
        assert not learned(opt), "nothing is learned before compile"

    def test_compile_returns_a_new_program_and_leaves_the_input_alone(self, name, factory, setup):
        program = setup.make_program().bind(setup.lm)
        program.predictors()[-1].demos = [setup.trainset[0]]
        before = program.dump_state()
        predictors_before = [(p, list(p.demos), dict(p.config), p.instruction) for p in program.predictors()]
        opt = factory(setup, 0)
        result = compile_with(opt, setup, program)
        assert isinstance(result, Program) and result is not program
        assert program.dump_state() == before
        for p, demos, config, instruction in predictors_before:
            assert (p.demos, p.config, p.instruction) == (demos, config, instruction)
        assert not {id(p) for p in result.predictors()} & {id(p) for p in program.predictors()}
        assert learned(opt), "what compile learned lands in trailing-underscore attributes"

    def test_same_seed_same_result(self, name, factory, setup):
        a, b = factory(setup, 7), factory(setup, 7)
        result_a, result_b = compile_with(a, setup), compile_with(b, setup)
        assert result_a.dump_state() == result_b.dump_state()
        assert learned(a) == learned(b)

    def test_result_saves_and_loads_into_a_fresh_program(self, name, factory, setup, tmp_path):
        result = compile_with(factory(setup, 0), setup)
        path = result.save(tmp_path / "program.json")
        fresh = setup.make_program().load(path, lm=setup.lm)
        assert fresh.dump_state() == result.dump_state()
        ask = setup.valset[0].inputs()
        assert fresh(**ask) == result(**ask)


@pytest.mark.parametrize(
    "optimizer, selects",
    [
        (LabeledFewShot(k=2), False),
        (BootstrapFewShot(metric), False),
        (KNNFewShot(k=2, metric=metric), False),
        (BootstrapFewShotWithRandomSearch(metric), True),
        (GPO(metric), True),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Optimizer) else str(v),
)
def test_only_optimizers_that_choose_by_validation_score_give_up_part_of_the_trainset(optimizer, selects):
    from cotune.optimize.better_together import split_for_step

    data = parity_data(range(100, 150))
    train, val = split_for_step(optimizer, data, 0.7)
    assert optimizer.selects_on_valset is selects
    assert (len(train), len(val) if val is not None else None) == ((15, 35) if selects else (50, None))


def test_the_weight_step_trains_on_the_whole_trainset():
    from cotune.optimize.better_together import split_for_step
    from cotune.optimize.finetune import BootstrapFinetune

    data = parity_data(range(100, 150))
    assert split_for_step(BootstrapFinetune(metric), data, 0.7) == (data, None)
