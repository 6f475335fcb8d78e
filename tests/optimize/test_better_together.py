"""BetterTogether's step tree: shared prefixes once, a fresh optimizer per step, hooks for a driver."""

from __future__ import annotations

import pytest

from cotune.data import Example
from cotune.errors import TrainingError
from cotune.lm import FakeLM
from cotune.optimize.base import Optimizer
from cotune.optimize.better_together import BetterTogether, StepHooks
from cotune.program import Predict, Program


class QA(Program):
    def __init__(self):
        self.qa = Predict("q -> a")

    def forward(self, q):
        return self.qa(q=q)


class Append(Optimizer):
    """Appends its tag to the instruction and remembers what it was given (a learned attribute)."""

    def __init__(self, tag: str = "p", fail: bool = False):
        self.tag, self.fail = tag, fail

    def compile(self, program, *, trainset, valset=None, events=None):
        if self.fail:
            raise TrainingError("no trace passed")
        self.given_ = program.qa.instruction
        new = program.deepcopy()
        new.qa.instruction += f" {self.tag}"
        return new


DATA = [Example(q=str(i), a="ok").with_inputs("q") for i in range(10)]


def tree(bt, strategies, **kw):
    return bt.run_tree(QA().bind(FakeLM(["A: ok"])), strategies, trainset=DATA, **kw)


def test_shared_prefixes_run_once_each_step_with_a_fresh_optimizer():
    prompt = Append("p")
    bt = BetterTogether(lambda e, p: 1.0, prompt=prompt, weights=Append("w"))
    done = tree(bt, [("p",), ("p", "w", "p")], valset=DATA)
    assert list(done) == [(), ("p",), ("p", "w"), ("p", "w", "p")]
    base = QA().qa.instruction
    # each Π step's own optimizer kept what it learned: the second did not overwrite the first
    assert done[("p",)].info == {"given_": base}
    assert done[("p", "w", "p")].info == {"given_": f"{base} p w"}
    assert not hasattr(prompt, "given_")  # the configured optimizer is a template, cloned per step
    assert all(s.val_score == 1.0 for s in done.values())
    assert done[("p", "w", "p")].program.qa.instruction == f"{base} p w p"


def test_hooks_restore_finished_steps_and_end_a_failed_branch_only():
    class Hooks(StepHooks):
        def __init__(self):
            self.seen, self.failures = [], []

        def restore(self, steps):
            return QA() if steps == ("p",) else None

        def finished(self, step):
            self.seen.append(step.strategy)

        def failed(self, steps, error):
            self.failures.append((steps, type(error).__name__ if error else None))
            return True

    hooks = Hooks()
    bt = BetterTogether(lambda e, p: 1.0, prompt=Append("p"), weights=Append("w", fail=True))
    done = tree(bt, [("p", "w", "p"), ("w",), ("p", "p")], hooks=hooks)
    assert done[("p",)].restored and hooks.seen == ["zero-shot", "p-p"]  # p restored; w and p-w failed
    assert hooks.failures == [(("w",), "TrainingError"), (("p", "w"), "TrainingError"), (("p", "w", "p"), None)]
    assert ("p", "w", "p") not in done and done[("p", "p")].val_score is None  # no valset: not scored
    with pytest.raises(TrainingError):
        tree(bt, [("w",)])  # without hooks a failure is raised


@pytest.mark.parametrize(("right_with_tag", "chosen"), [({"3"}, ""), ({str(i) for i in range(10)}, "p")])
def test_return_best_keeps_the_start_unless_a_step_beats_it_beyond_noise(right_with_tag, chosen):
    """Zero-shot is right on even questions; the Π step adds ``right_with_tag``: one more is noise."""

    def respond(messages, config):
        q = messages[-1]["content"].split("Q: ")[-1].strip()
        right = int(q) % 2 == 0 or ("[tuned]" in messages[0]["content"] and q in right_with_tag)
        return "A: ok" if right else "A: no"

    bt = BetterTogether(lambda e, p: float(p["a"] == "ok"), prompt=Append("[tuned]"), strategy="p", return_best=True)
    best = bt.compile(QA().bind(FakeLM(respond)), trainset=DATA, valset=DATA)
    assert bt.steps_[1].val_score > bt.steps_[0].val_score == 0.5
    assert bt.selection_["best_step"] == "p" and bt.selection_["significant"] is (chosen == "p")
    assert bt.best_index_ == len(chosen) and best.qa.instruction.endswith("[tuned]") is (chosen == "p")


class KeepStart(Append):
    """A prompt step that returns its start unchanged and hands a tagged copy to a following weight step."""

    def compile(self, program, *, trainset, valset=None, events=None):
        self.handoff_program_ = super().compile(program, trainset=trainset, valset=valset)
        return program.deepcopy()


def test_a_weight_step_builds_on_the_prompt_steps_handoff_and_a_prompt_step_does_not():
    bt = BetterTogether(lambda e, p: 1.0, prompt=KeepStart("[cand]"), weights=Append("w"))
    done = tree(bt, [("p", "w"), ("p", "p")], valset=DATA)
    base = QA().qa.instruction
    assert done[("p",)].program.qa.instruction == base and done[("p",)].handoff.qa.instruction == f"{base} [cand]"
    assert done[("p", "w")].program.qa.instruction == f"{base} [cand] w"
    assert done[("p", "p")].program.qa.instruction == base  # Π after Π starts from what Π returned


def test_a_restored_steps_handoff_comes_back_through_the_hooks():
    handoff = QA()
    handoff.qa.instruction += " [saved]"

    class Hooks(StepHooks):
        def restore(self, steps):
            return QA().bind(FakeLM(["A: ok"])) if steps == ("p",) else None

        def restore_handoff(self, steps):
            return handoff.bind(FakeLM(["A: ok"])) if steps == ("p",) else None

    bt = BetterTogether(lambda e, p: 1.0, prompt=Append("p"), weights=Append("w"))
    done = tree(bt, [("p", "w")], valset=DATA, hooks=Hooks())
    assert done[("p", "w")].program.qa.instruction.endswith(" [saved] w")
