"""Hyperparameters declared once (the ``__init__`` annotations) and checked by the base class before compile."""

from __future__ import annotations

import pytest
from fake_tasks import Parity, metric, parity_data, parity_lm

from cotune.data import Example
from cotune.errors import ConfigError, UnknownChoiceError
from cotune.evaluate.metrics import passes
from cotune.lm import FakeLM
from cotune.optimize.base import Optimizer
from cotune.optimize.better_together import BetterTogether
from cotune.optimize.bootstrap import BootstrapFewShot
from cotune.optimize.random_search import BootstrapFewShotWithRandomSearch
from cotune.optimize.registry import build_optimizer, optimizer_class, optimizer_names
from cotune.params import describe
from cotune.program import Predict, Program


@pytest.mark.parametrize(
    "name, params, message",
    [
        (
            "bootstrap",
            {"num_rollouts": 0},
            "BootstrapFewShot: num_rollouts must be >= 1, got 0 (num_rollouts must be an integer >= 1)",
        ),
        ("bootstrap", {"max_labeled_demos": 1.5}, "max_labeled_demos must be an integer >= 0, got 1.5"),
        ("bootstrap", {"metric_threshold": 1.5}, "metric_threshold must be in [0, 1], got 1.5"),
        ("bfrs", {"num_candidates": True}, "num_candidates must be an integer >= 1, got True"),
        ("gpo", {"temperature": -1}, "temperature must be >= 0, got -1 (temperature must be a number >= 0)"),
        ("finetune", {"rollout_min_p": 1.0}, "rollout_min_p must be in [0, 1), got 1.0"),
        ("medprompt", {"m": 0}, "MedPrompt: m must be >= 1, got 0"),
    ],
)
def test_bad_values_are_named_with_their_valid_range(name, params, message):
    with pytest.raises(ConfigError) as info:
        build_optimizer(name, metric, **params)
    assert message in str(info.value)


def test_bad_choices_list_the_valid_ones_and_several_problems_come_together():
    with pytest.raises(UnknownChoiceError, match="unknown update 'rewrite'; choose one of: edit, generation"):
        build_optimizer("gpo", metric, update="rewrite")
    with pytest.raises(ConfigError) as info:
        build_optimizer("gpo", metric, num_steps=0, minibatch_size=-2)
    assert "num_steps must be >= 1, got 0" in str(info.value) and "minibatch_size must be >= 1, got -2" in str(
        info.value
    )


def test_every_registered_optimizer_checks_before_any_model_call():
    lm = parity_lm()
    for name in optimizer_names():
        opt = optimizer_class(name)(metric=metric)
        if "num_threads" in describe(type(opt)):
            opt.num_threads = 0
        else:  # kNN and MedPrompt: the bootstrap they hold runs the threads
            opt.bootstrap = BootstrapFewShot(metric, num_threads=0)
        with pytest.raises(ConfigError, match="num_threads must be >= 1, got 0"):
            opt.compile(Parity().bind(lm), trainset=parity_data([2]), valset=parity_data([4]))
    assert lm.calls == []


def test_declarations_read_as_words():
    words = describe(BootstrapFewShot)
    assert words["num_rollouts"] == "an integer >= 1" and words["metric_threshold"] == "a number in [0, 1] or None"
    assert words["teacher"] == "a Program or None" and words["metric"] == "a function"
    assert describe(BootstrapFewShotWithRandomSearch)["bootstrap"] == "a BootstrapFewShot or None"


def test_bfrs_holds_a_bootstrap_and_checks_it():
    opt = BootstrapFewShotWithRandomSearch(metric, bootstrap=BootstrapFewShot(metric, num_rollouts=0))
    with pytest.raises(ConfigError, match="BootstrapFewShot: num_rollouts must be >= 1"):
        opt.check_params()
    assert "max_labeled_demos" not in describe(BootstrapFewShotWithRandomSearch)  # not copied: held


def test_metric_threshold_means_the_same_in_bootstrap_and_finetune():
    assert passes(1.0) and not passes(0.5) and passes(0.5, 0.5) and not passes(0.4, 0.5)

    def half(example, prediction):
        return 0.5 if prediction.get("label") == example["label"] else 0.0

    data, lm = parity_data([2, 4]), parity_lm("02468")
    default = BootstrapFewShot(half, max_labeled_demos=0)
    assert default.compile(Parity().bind(lm), trainset=data).label.demos == [] and default.n_passed_ == 0
    lenient = BootstrapFewShot(half, metric_threshold=0.5, max_labeled_demos=0)
    assert len(lenient.compile(Parity().bind(lm), trainset=data).label.demos) == 2


class Tag(Optimizer):
    def __init__(self, tag: str = "x"):
        self.tag = tag

    def compile(self, program, *, trainset, valset=None, events=None):
        new = program.deepcopy()
        new.qa.instruction = self.tag
        return new


class QA(Program):
    def __init__(self):
        self.qa = Predict("q -> a")

    def forward(self, q):
        return self.qa(q=q)


def test_better_together_ties_go_to_the_earlier_step_as_in_random_search():
    data = [Example(q=str(i), a="ok").with_inputs("q") for i in range(10)]
    bt = BetterTogether(lambda e, p: 1.0, prompt=Tag("p"), weights=Tag("w"), strategy="p,w", return_best=True)
    best = bt.compile(QA().bind(FakeLM(["A: ok"])), trainset=data, valset=data)
    assert bt.best_index_ == 0 and best.qa.instruction != "w"
    with pytest.raises(ConfigError, match=r"inner_val_ratio must be in \(0, 1\), got 1.0"):
        BetterTogether(metric, inner_val_ratio=1.0).check_params()


def test_an_annotation_that_does_not_resolve_goes_unchecked_instead_of_breaking_compile():
    namespace: dict = {}
    exec(  # a user's optimizer whose annotation names a type imported for type checking only
        "from __future__ import annotations\n"
        "from cotune.optimize.base import Optimizer\n"
        "from cotune.params import Positive\n"
        "class Mine(Optimizer):\n"
        "    def __init__(self, helper: NotImportedHere = None, k: Positive = 1):\n"
        "        self.helper, self.k = helper, k\n"
        "    def compile(self, program, *, trainset, valset=None, events=None):\n"
        "        return program.deepcopy()\n",
        namespace,
    )
    mine = namespace["Mine"]
    assert set(describe(mine)) == {"k"}
    mine(helper=object()).compile(QA(), trainset=[])
    with pytest.raises(ConfigError, match="k must be >= 1, got 0"):
        mine(k=0).compile(QA(), trainset=[])
