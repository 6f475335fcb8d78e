"""Random search keeps the starting program unless a candidate beats it by more than the valset's noise."""

from fake_tasks import Parity, metric, parity_data, parity_lm

from cotune.events import Event
from cotune.optimize.random_search import BootstrapFewShotWithRandomSearch

TRAIN = list(range(100, 130))
VAL = list(range(500, 512))  # 12 numbers: zero-shot is right on the 6 even ones


def with_demos_right_on(extra: set[str]):
    """Right on even numbers; with demos in the prompt, also on the numbers in ``extra``."""

    def right_when(number, config, messages):
        has_demos = len(messages) > 2
        return number[-1] in "02468" or (has_demos and number in extra)

    return parity_lm(right_when=right_when)


def compile_with(lm, **params):
    events: list[Event] = []
    opt = BootstrapFewShotWithRandomSearch(metric, num_candidates=4, **params)
    start = Parity().bind(lm)
    best = opt.compile(start, trainset=parity_data(TRAIN), valset=parity_data(VAL), events=events.append)
    return opt, best, events


def test_a_one_example_win_is_noise_and_the_start_is_returned():
    opt, best, events = compile_with(with_demos_right_on({"501"}))
    assert opt.trials_[opt.best_index_]["score"] == 7 / 12 and opt.start_score_ == 6 / 12
    assert opt.kept_start_ and opt.best_score_ == 6 / 12
    assert opt.selection_["wins"] == 1 and opt.selection_["losses"] == 0 and not opt.selection_["significant"]
    assert all(not p.demos for _, p in best.named_predictors())
    # ... and the best candidate is handed to a following weight step as its teacher
    assert opt.handoff_program_ is not None and opt.handoff_program_.fingerprint() != best.fingerprint()
    assert any(p.demos for _, p in opt.handoff_program_.named_predictors())
    kept = [e for e in events if e.name == "random_search.kept_start"]
    assert len(kept) == 1 and "not above 1 standard error" in kept[0].fields["reason"]


def test_a_clear_win_replaces_the_start():
    opt, best, _ = compile_with(with_demos_right_on({str(n) for n in VAL}))
    assert opt.trials_[opt.best_index_]["score"] == 1.0 and not opt.kept_start_
    assert opt.best_score_ == 1.0 and opt.selection_["significant"] and opt.selection_["wins"] == 6
    assert any(p.demos for _, p in best.named_predictors()) and opt.handoff_program_ is None


def test_min_gain_se_zero_is_the_plain_argmax_and_does_not_score_the_start():
    opt, best, _ = compile_with(with_demos_right_on({"501"}), min_gain_se=0)
    assert not opt.kept_start_ and opt.start_score_ is None and opt.selection_ is None
    assert opt.best_score_ == 7 / 12 and any(p.demos for _, p in best.named_predictors())


def test_a_start_with_demos_is_scored_as_it_is():
    """A second prompt step starts from a program with demos; its zero-shot candidate is not the start."""
    lm = with_demos_right_on({str(n) for n in VAL})
    first, start_program, _ = compile_with(lm)
    assert any(p.demos for _, p in start_program.named_predictors())
    opt = BootstrapFewShotWithRandomSearch(metric, num_candidates=4, seed=1)
    again = opt.compile(start_program, trainset=parity_data(TRAIN), valset=parity_data(VAL))
    assert opt.start_score_ == 1.0 and opt.trials_[0]["score"] == 0.5
    assert opt.kept_start_  # nothing beats a perfect start
    assert again.fingerprint() == start_program.fingerprint()
