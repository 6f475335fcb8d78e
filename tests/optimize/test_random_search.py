import json
from collections import Counter

import pytest
from fake_tasks import Parity, metric, parity_data, parity_lm, seen_numbers

from cotune.errors import ConfigError
from cotune.optimize.bootstrap import BootstrapFewShot
from cotune.optimize.random_search import (
    BootstrapFewShotWithRandomSearch,
    Candidate,
    CandidateKind,
    plan_candidates,
)

TRAIN = list(range(100, 130))  # 30 numbers: the model is right on the even ones
VAL = list(range(500, 512))


BOOTSTRAP_PARAMS = {"max_bootstrapped_demos", "max_labeled_demos", "metric_threshold", "teacher",
                    "teacher_labeled_demos", "num_rollouts", "rollout_temperature"}  # fmt: skip


def bfrs(lm, *, train=TRAIN, val=VAL, **params):
    """BFRS with the demo budget and teacher settings handed to the `BootstrapFewShot` it holds."""
    boot = {k: params.pop(k) for k in list(params) if k in BOOTSTRAP_PARAMS}
    if boot:
        boot = BootstrapFewShotWithRandomSearch.DEFAULT_BOOTSTRAP | boot
        params["bootstrap"] = BootstrapFewShot(metric, **boot, num_threads=params.get("num_threads", 8))
    opt = BootstrapFewShotWithRandomSearch(metric, **params)
    best = opt.compile(Parity().bind(lm), trainset=parity_data(train), valset=parity_data(val))
    return opt, best


def test_plan_is_explicit_kinds_in_order():
    plan = plan_candidates(6, 3, 3, seed=0)
    assert [c.kind for c in plan] == [
        CandidateKind.ZERO_SHOT,
        CandidateKind.LABELED,
        CandidateKind.BOOTSTRAP,
        CandidateKind.BOOTSTRAP_SHUFFLED,
        CandidateKind.BOOTSTRAP_SHUFFLED,
        CandidateKind.BOOTSTRAP_SHUFFLED,
    ]
    assert plan[0] == Candidate(CandidateKind.ZERO_SHOT, 0, 0, 0)
    assert plan[2].max_bootstrapped_demos == 3 and plan[2].max_labeled_demos == 3
    shuffled = plan[3:]
    assert all(1 <= c.max_bootstrapped_demos <= 3 for c in shuffled)
    assert len({c.seed for c in shuffled}) == 3
    assert plan_candidates(2, 3, 3, seed=0) == plan[:2]
    assert plan_candidates(6, 3, 3, seed=0) == plan
    assert plan_candidates(6, 3, 3, seed=1)[3:] != shuffled


def test_candidates_are_scored_on_the_valset():
    lm = parity_lm("02468")
    opt, _ = bfrs(lm, num_candidates=4)
    # Every candidate evaluated every valset example.
    assert [t["eval"]["n"] for t in opt.trials_] == [len(VAL)] * 4
    val_numbers = {str(n) for n in VAL}
    asked = seen_numbers(lm)
    assert val_numbers <= set(asked)
    # One label call per valset example and distinct candidate (identical candidates are scored once).
    unique_programs = len({json.dumps(t["demos"], sort_keys=True) for t in opt.trials_})
    assert sum(n in val_numbers for n in asked) == unique_programs * len(VAL)
    # Valset examples never become demos.
    demo_numbers = {d["number"] for t in opt.trials_ for ds in t["demos"].values() for d in ds}
    assert demo_numbers and not demo_numbers & val_numbers


def test_trial_scores_match_the_model():
    # Right only on even numbers: zero-shot gets the even half of the valset right.
    opt, _ = bfrs(parity_lm("02468"), num_candidates=3)
    assert opt.trials_[0]["kind"] == "zero_shot" and opt.trials_[0]["score"] == pytest.approx(0.5)
    assert opt.trials_[0]["demo_counts"] == {
        "digit": {"bootstrapped": 0, "labeled": 0},
        "label": {"bootstrapped": 0, "labeled": 0},
    }
    assert opt.trials_[1]["demo_counts"]["label"] == {"bootstrapped": 0, "labeled": 3}
    assert opt.trials_[2]["demo_counts"]["label"] == {"bootstrapped": 3, "labeled": 0}
    assert all(set(t) >= {"kind", "seed", "demo_counts", "demos", "score", "eval", "index"} for t in opt.trials_)


def test_best_candidate_is_returned_and_ties_go_to_the_earlier_one():
    # Right only on even numbers, or whenever the prompt shows demos: any demo set beats zero-shot.
    def right_when(number, config, messages):
        return int(number) % 2 == 0 or len(messages) > 2

    opt, best = bfrs(parity_lm(right_when=right_when), num_candidates=5)
    scores = [t["score"] for t in opt.trials_]
    assert scores[0] == pytest.approx(0.5) and all(s == 1.0 for s in scores[1:])
    assert opt.best_index_ == 1 and opt.best_score_ == 1.0  # labeled: the first of the tied ones
    assert {n: [dict(d) for d in p.demos] for n, p in best.named_predictors()} == opt.trials_[1]["demos"]

    # A model that is always wrong: every candidate scores 0, zero-shot (the first) wins.
    opt, best = bfrs(parity_lm(""), num_candidates=3)
    assert [t["score"] for t in opt.trials_] == [0.0, 0.0, 0.0] and opt.best_index_ == 0
    assert all(p.demos == [] for p in best.predictors())


def test_missing_valset_is_a_config_error():
    opt = BootstrapFewShotWithRandomSearch(metric)
    for valset in (None, []):
        with pytest.raises(ConfigError, match="valset"):
            opt.compile(Parity().bind(parity_lm()), trainset=parity_data([1, 2]), valset=valset)


def test_same_seed_same_result_and_different_seed_different_candidates():
    a, best_a = bfrs(parity_lm("02468"), seed=3)
    b, best_b = bfrs(parity_lm("02468"), seed=3)
    c, _ = bfrs(parity_lm("02468"), seed=4)
    assert best_a.dump_state() == best_b.dump_state()
    strip = lambda trials: [{k: v for k, v in t.items() if k != "eval"} for t in trials]  # noqa: E731
    assert strip(a.trials_) == strip(b.trials_)
    assert [t["demos"] for t in a.trials_[3:]] != [t["demos"] for t in c.trials_[3:]]
    assert [t["seed"] for t in a.trials_[3:]] != [t["seed"] for t in c.trials_[3:]]


def test_shuffled_candidates_use_random_demo_counts():
    opt, _ = bfrs(parity_lm("02468"), num_candidates=6, max_bootstrapped_demos=3, max_labeled_demos=3)
    for trial in opt.trials_[3:]:
        counts = trial["demo_counts"]["label"]
        assert counts["bootstrapped"] == trial["max_bootstrapped_demos"]
        assert counts["bootstrapped"] + counts["labeled"] == 3


def test_each_training_example_runs_once_across_candidates():
    lm = parity_lm("02468")
    bfrs(lm, num_candidates=6)
    train_numbers = {str(n) for n in TRAIN}
    runs = Counter(n for n in seen_numbers(lm) if n in train_numbers)
    assert runs and max(runs.values()) == 1


def test_identical_candidates_are_scored_once():
    # No example ever passes and the data has no labels for the digit step: with max_labeled_demos=0 every
    # candidate is the zero-shot program.
    lm = parity_lm("")
    opt, _ = bfrs(lm, num_candidates=4, max_labeled_demos=0)
    assert len({json.dumps(t["demos"]) for t in opt.trials_}) == 1
    val_calls = [n for n in seen_numbers(lm) if int(n) in VAL]
    assert len(val_calls) == len(VAL)


def test_concurrent_scoring_gives_the_same_trials():
    one, _ = bfrs(parity_lm("02468"), concurrent_candidates=1)
    many, _ = bfrs(parity_lm("02468"))
    assert [t["score"] for t in one.trials_] == [t["score"] for t in many.trials_]
    assert [t["demos"] for t in one.trials_] == [t["demos"] for t in many.trials_]


def test_events_report_each_candidate():
    seen = []
    opt = BootstrapFewShotWithRandomSearch(metric, num_candidates=3)
    opt.compile(Parity().bind(parity_lm()), trainset=parity_data(TRAIN), valset=parity_data(VAL), events=seen.append)
    bars = {e.fields["id"]: e.fields["description"] for e in seen if e.name == "progress.start"}
    assert "candidates" in bars.values() and "bootstrap" in bars.values()
    candidates_id = next(i for i, d in bars.items() if d == "candidates")
    advances = [e.fields for e in seen if e.name == "progress.advance" and e.fields["id"] == candidates_id]
    assert sorted(a["kind"] for a in advances) == ["bootstrap", "labeled", "zero_shot"]
    assert seen[-1].name == "random_search.done" and seen[-1].fields["best_index"] == opt.best_index_


@pytest.mark.parametrize(
    "params, match",
    [
        ({"num_candidates": 0}, "num_candidates"),
        ({"concurrent_candidates": 0}, "concurrent_candidates"),
        ({"max_labeled_demos": -1}, "max_labeled_demos"),
    ],
)
def test_bad_hyperparameters_name_themselves(params, match):
    with pytest.raises(ConfigError, match=match):
        bfrs(parity_lm(), **params)


@pytest.mark.integration
def test_bfrs_on_iris_with_smollm2_end_to_end(tmp_path):
    import cotune.lm
    from cotune.tasks import load_task

    task = load_task("iris")
    lm = cotune.lm.load("smollm2-135m")
    program = task.program().bind(lm)
    for p in program.predictors():
        p.config = {"max_tokens": 48}
    boot = BootstrapFewShot(task.metric, max_bootstrapped_demos=2, max_labeled_demos=2)
    opt = BootstrapFewShotWithRandomSearch(task.metric, num_candidates=3, bootstrap=boot)
    best = opt.compile(program, trainset=task.train[:6], valset=task.dev[:6])

    assert [t["kind"] for t in opt.trials_] == ["zero_shot", "labeled", "bootstrap"]
    assert all(t["eval"]["n"] == 6 for t in opt.trials_)
    assert opt.best_score_ == max(t["score"] for t in opt.trials_)
    path = best.save(tmp_path / "iris.json")
    fresh = task.program().load(path, lm=lm)
    assert fresh.dump_state()["predictors"] == best.dump_state()["predictors"]
    assert sum(len(p.demos) for p in fresh.predictors()) == sum(
        sum(c.values()) for c in opt.trials_[opt.best_index_]["demo_counts"].values()
    )
