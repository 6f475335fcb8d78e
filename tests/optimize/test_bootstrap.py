import pytest
from fake_tasks import Parity, fields_of, metric, parity_data, parity_lm, seen_numbers, truth

import cotune as ct
from cotune.errors import ConfigError, EvaluationError
from cotune.optimize.bootstrap import BootstrapFewShot
from cotune.optimize.labeled import LabeledFewShot, fits


def compile_parity(lm, numbers, **params):
    params = {"max_labeled_demos": 0, **params}
    opt = BootstrapFewShot(metric, **params)
    compiled = opt.compile(Parity().bind(lm), trainset=parity_data(numbers))
    return opt, compiled


def test_demos_come_from_passing_traces_only():
    # The model is right only for numbers ending in 0, 2, 4, ...: odd numbers never pass.
    opt, compiled = compile_parity(parity_lm("02468"), [11, 12, 13, 14, 15, 16, 17, 18], max_bootstrapped_demos=3)
    demos = compiled.label.demos
    assert [d["number"] for d in demos] == ["12", "14", "16"]
    assert all(d["label"] == truth(d["number"]) for d in demos)
    assert opt.n_passed_ == 4 and opt.n_run_ == 8
    assert [t["example"] for t in opt.traces_] == [1, 3, 5]
    assert all(t["score"] == 1.0 for t in opt.traces_)


def test_every_predictor_gets_demos_with_its_own_inputs_and_outputs():
    opt, compiled = compile_parity(parity_lm("02468"), [21, 22, 24], max_bootstrapped_demos=2)
    digit_demos, label_demos = compiled.digit.demos, compiled.label.demos
    assert [dict(d) for d in digit_demos] == [
        {"number": "22", "reasoning": "the last digit of 22 is 2.", "last_digit": "2"},
        {"number": "24", "reasoning": "the last digit of 24 is 4.", "last_digit": "4"},
    ]
    assert [dict(d) for d in label_demos] == [
        {"number": "22", "last_digit": "2", "label": "even"},
        {"number": "24", "last_digit": "4", "label": "even"},
    ]
    assert opt.demos_ == {"digit": [dict(d) for d in digit_demos], "label": [dict(d) for d in label_demos]}
    assert opt.demo_counts_ == {"digit": {"bootstrapped": 2, "labeled": 0}, "label": {"bootstrapped": 2, "labeled": 0}}


def test_demos_are_shown_to_the_model_after_compile():
    lm = parity_lm("02468")
    _, compiled = compile_parity(lm, [22, 24], max_bootstrapped_demos=2)
    messages = compiled.label.messages(number="7", last_digit="7")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[2]["content"] == "Label: even"


def test_input_program_is_unchanged():
    lm = parity_lm("02468")
    program = Parity().bind(lm)
    program.label.demos = [ct.Example(number="5", label="odd")]
    before = program.dump_state()
    opt = BootstrapFewShot(metric, max_bootstrapped_demos=2, max_labeled_demos=4)
    compiled = opt.compile(program, trainset=parity_data([2, 4, 6, 7, 9]))
    assert program.dump_state() == before
    assert compiled is not program and compiled.label is not program.label
    assert compiled.label.demos != program.label.demos
    assert compiled.lm is lm  # the copy runs on the same model


def test_stops_once_enough_traces_passed():
    # Chunks of num_threads examples: the first chunk already gives the one demo asked for.
    lm = parity_lm("02468")
    opt, _ = compile_parity(lm, [2, 3, 4, 5, 6, 7, 8], max_bootstrapped_demos=1, num_threads=2)
    assert opt.n_run_ == 2
    assert sorted(seen_numbers(lm)) == ["2", "3"]


def test_later_rollouts_sample_with_new_rollout_id_and_temperature():
    # Wrong at temperature 0; right for 3 and 5 once sampled with rollout id 1.
    def right_when(number, config, messages):
        return config.temperature == 0.5 and config.rollout_id == 1 and number in {"3", "5"}

    lm = parity_lm(right_when=right_when)
    opt, compiled = compile_parity(lm, [2, 3, 5], max_bootstrapped_demos=2, num_rollouts=2, rollout_temperature=0.5)
    calls = [(fields_of(m[-1]["content"])["number"], c.temperature, c.rollout_id) for m, c in lm.calls]
    assert {(t, r) for _, t, r in calls} == {(0.0, 0), (0.5, 1)}
    assert sorted(n for n, _, r in calls if r == 0) == ["2", "2", "3", "3", "5", "5"]  # two predictors each
    assert sorted(n for n, _, r in calls if r == 1) == ["2", "2", "3", "3", "5", "5"]  # all failed rollout 0
    assert [t["rollout"] for t in opt.traces_] == [1, 1]
    assert [d["number"] for d in compiled.label.demos] == ["3", "5"]
    # The learned program keeps the student's decoding settings, not the teacher's sampling.
    assert compiled.label.config == {} and compiled.digit.config == {}


def test_a_single_rollout_never_samples():
    lm = parity_lm("0")
    compile_parity(lm, [1, 2, 3], max_bootstrapped_demos=2)
    assert {c.rollout_id for _, c in lm.calls} == {0}
    assert {c.temperature for _, c in lm.calls} == {0.0}


def test_labeled_fill_up_only_where_the_data_has_the_fields():
    # 2 bootstrapped + labeled up to 5 in total. The data has `number` and `label` but no `last_digit`:
    # the label step gets labeled demos (number → label), the digit step cannot.
    opt, compiled = compile_parity(
        parity_lm("02468"), [1, 2, 3, 4, 5, 6, 7], max_bootstrapped_demos=2, max_labeled_demos=5
    )
    assert opt.demo_counts_ == {"digit": {"bootstrapped": 2, "labeled": 0}, "label": {"bootstrapped": 2, "labeled": 3}}
    labeled = compiled.label.demos[2:]
    assert all(set(d) == {"number", "label"} for d in labeled)
    bootstrapped_numbers = {"2", "4"}
    assert not bootstrapped_numbers & {d["number"] for d in labeled}
    assert all(d["label"] == truth(d["number"]) for d in labeled)


def test_labeled_fill_up_is_seeded():
    numbers = list(range(1, 30, 2))  # all odd: nothing passes, all demos are labeled
    a = compile_parity(parity_lm("0"), numbers, max_bootstrapped_demos=2, max_labeled_demos=4, seed=1)[0].demos_
    b = compile_parity(parity_lm("0"), numbers, max_bootstrapped_demos=2, max_labeled_demos=4, seed=1)[0].demos_
    c = compile_parity(parity_lm("0"), numbers, max_bootstrapped_demos=2, max_labeled_demos=4, seed=2)[0].demos_
    assert a == b and a != c
    assert len(a["label"]) == 4 and a["digit"] == []


def test_metric_threshold_for_graded_metrics():
    def graded(example, prediction):
        return 0.5 if prediction.get("label") == example["label"] else 0.0

    data = parity_data([2, 4])
    lm = parity_lm("02468")
    low = BootstrapFewShot(graded, metric_threshold=0.5, max_labeled_demos=0)
    high = BootstrapFewShot(graded, metric_threshold=0.8, max_labeled_demos=0)
    assert len(low.compile(Parity().bind(lm), trainset=data).label.demos) == 2
    assert len(high.compile(Parity().bind(lm), trainset=data).label.demos) == 0
    assert high.n_passed_ == 0


def test_teacher_with_labeled_demos_never_sees_its_own_example():
    lm = parity_lm("02468")
    opt = BootstrapFewShot(metric, teacher_labeled_demos=3, max_bootstrapped_demos=2, max_labeled_demos=0)
    compiled = opt.compile(Parity().bind(lm), trainset=parity_data([2, 4, 6, 8]))
    label_calls = [m for m, _ in lm.calls if "Label:" in m[0]["content"]]
    assert label_calls
    for messages in label_calls:
        asked = fields_of(messages[-1]["content"])["number"]
        shown = [fields_of(m["content"])["number"] for m in messages[1:-1] if m["role"] == "user"]
        assert len(shown) in (2, 3)  # 3 labeled demos, minus the example itself when it is among them
        assert asked not in shown
    # The student learns bootstrapped demos, not the teacher's labeled ones.
    assert compiled.label.demo_selector is None
    assert all("last_digit" in d for d in compiled.label.demos)


def test_explicit_teacher_is_used_and_must_match_structure():
    class Other(ct.Program):
        def __init__(self):
            self.answer = ct.Predict("number -> label")

        def forward(self, number):
            return self.answer(number=number)

    student_lm, teacher_lm = parity_lm("0"), parity_lm("02468")
    opt = BootstrapFewShot(metric, teacher=Parity().bind(teacher_lm), max_bootstrapped_demos=2, max_labeled_demos=0)
    compiled = opt.compile(Parity().bind(student_lm), trainset=parity_data([2, 4]))
    assert student_lm.calls == [] and len(compiled.label.demos) == 2
    assert compiled.lm is student_lm

    with pytest.raises(ConfigError, match="teacher predictors"):
        BootstrapFewShot(metric, teacher=Other()).compile(Parity().bind(student_lm), trainset=parity_data([2]))


def test_unbound_teacher_runs_on_the_students_model():
    lm = parity_lm("02468")
    opt = BootstrapFewShot(metric, teacher=Parity(), max_bootstrapped_demos=1, max_labeled_demos=0)
    compiled = opt.compile(Parity().bind(lm), trainset=parity_data([2]))
    assert len(compiled.label.demos) == 1 and lm.calls


@pytest.mark.parametrize(
    "params, match",
    [
        ({"num_rollouts": 0}, "num_rollouts"),
        ({"max_bootstrapped_demos": -1}, "max_bootstrapped_demos"),
        ({"max_labeled_demos": 1.5}, "max_labeled_demos"),
        ({"num_threads": 0}, "num_threads"),
        ({"rollout_temperature": -0.1}, "rollout_temperature"),
    ],
)
def test_bad_hyperparameters_name_themselves(params, match):
    with pytest.raises(ConfigError, match=match):
        BootstrapFewShot(metric, **params).compile(Parity().bind(parity_lm()), trainset=parity_data([2]))


def test_empty_trainset_is_an_error():
    with pytest.raises(ConfigError, match="trainset"):
        BootstrapFewShot(metric).compile(Parity().bind(parity_lm()), trainset=[])


def test_a_teacher_that_always_raises_is_reported():
    class Broken(Parity):
        def forward(self, number):
            raise RuntimeError("retriever down")

    with pytest.raises(EvaluationError, match="retriever down"):
        BootstrapFewShot(metric).compile(Broken().bind(parity_lm()), trainset=parity_data([1, 2]))


def test_progress_events():
    seen = []
    opt = BootstrapFewShot(metric, max_bootstrapped_demos=1, max_labeled_demos=0, num_threads=2)
    opt.compile(Parity().bind(parity_lm()), trainset=parity_data([1, 2, 3, 4]), events=seen.append)
    names = [e.name for e in seen]
    assert names[0] == "progress.start" and seen[0].fields["description"] == "bootstrap"
    assert names.count("progress.advance") == 1 and seen[1].fields["passed"] == 1
    assert names[-1] == "bootstrap.done"


def test_labeled_few_shot():
    data = parity_data(range(10))
    compiled = LabeledFewShot(k=3, seed=0).compile(Parity(), trainset=data)
    assert compiled.digit.demos == []  # no `last_digit` in the data
    assert len(compiled.label.demos) == 3 and all(set(d) == {"number", "label"} for d in compiled.label.demos)
    ordered = LabeledFewShot(k=2, sample=False).compile(Parity(), trainset=data)
    assert [d["number"] for d in ordered.label.demos] == ["0", "1"]
    assert fits(Parity().label, data[0]) and not fits(Parity().digit, data[0])


def test_a_students_demo_selector_does_not_hide_the_new_demos():
    program = Parity().bind(parity_lm("02468"))
    program.label.demo_selector = lambda inputs: []  # e.g. kNN over some earlier demos
    opt = BootstrapFewShot(metric, max_bootstrapped_demos=1, max_labeled_demos=0)
    compiled = opt.compile(program, trainset=parity_data([2]))
    assert compiled.label.demo_selector is None and program.label.demo_selector is not None
    assert len(compiled.label.messages(number="3", last_digit="3")) == 4  # system, demo pair, question
    labeled = LabeledFewShot(k=1).compile(program, trainset=parity_data([2]))
    assert labeled.label.demo_selector is None
