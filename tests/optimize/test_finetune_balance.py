"""BootstrapFinetune(balance_classes=True) on FakeLM: which runs are trained on, how often, for how many epochs."""

from pathlib import Path

import pytest
from test_finetune import trained  # noqa: F401 (the fixture that records training instead of running it)

import cotune as ct
from cotune.errors import ConfigError
from cotune.lm import FakeLM
from cotune.optimize.finetune import BootstrapFinetune
from cotune.optimize.traces import Trace, balance_classes
from cotune.tasks.iris import SPECIES
from cotune.training import TrainingConfig
from cotune.training.sft_data import chat_examples

RIGHT = {100, 101, 102, 104, 106, 108}  # five evens and one odd answered right: the runs kept are skewed 5 : 1


def truth(number) -> str:
    return "even" if int(number) % 2 == 0 else "odd"


def classifier() -> ct.Predict:
    def respond(messages, config):
        number = int(messages[-1]["content"].split("Number: ")[1].split()[0])
        answer = truth(number) if number in RIGHT else ("odd" if number % 2 == 0 else "even")
        return f"Label: {answer}"

    lm = FakeLM(respond)
    lm.model_path = "/models/parity"
    return ct.Predict("number -> label: Literal['even', 'odd']").bind(lm)


def data():
    return ct.Dataset(ct.Example(number=str(n), label=truth(n)).with_inputs("number") for n in range(100, 110))


def metric(example, prediction) -> float:
    return float(prediction.get("label") == example["label"])


def test_the_rarer_class_is_repeated_and_the_epochs_cut_to_keep_the_steps(trained, tmp_path):  # noqa: F811
    tuner = BootstrapFinetune(
        metric, training=TrainingConfig(epochs=6), balance_classes=True, output_dir=tmp_path, num_threads=1
    )
    tuner.compile(classifier(), trainset=data())
    (call,) = trained
    labels = [e.completion for e in call["examples"]]
    assert labels.count("Label: even") == 5 and labels.count("Label: odd") == 5  # the one odd run, five times
    assert call["training"].epochs == 4  # round(6 × 6 runs / 10 examples)
    assert tuner.balance_ == {
        "fields": ["label"],
        "counts": {"even": 5, "odd": 1},
        "repeats": {"even": 1, "odd": 5},
        "epochs": {"adapter": 4},
    }
    assert (tuner.n_passed_, tuner.passed_by_predictor_) == (6, {"self": 6})  # the runs, not their copies


def test_off_by_default_trains_on_each_kept_run_once(trained, tmp_path):  # noqa: F811
    tuner = BootstrapFinetune(metric, training=TrainingConfig(epochs=6), output_dir=tmp_path, num_threads=1)
    tuner.compile(classifier(), trainset=data())
    assert len(trained[0]["examples"]) == 6 and trained[0]["training"].epochs == 6 and tuner.balance_ is None


def test_balanced_adapters_are_cached_under_their_own_key(trained, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("COTUNE_CACHE_DIR", str(tmp_path))
    paths = []
    for balance in (False, True):
        tuner = BootstrapFinetune(metric, balance_classes=balance, num_threads=1)
        tuner.compile(classifier(), trainset=data())
        paths.append(Path(tuner.adapter_path_))
    assert paths[0] != paths[1] and paths[0].parent.parent == paths[1].parent.parent == tmp_path / "adapters"


def test_a_program_without_a_choice_output_is_refused_before_any_run(trained, tmp_path):  # noqa: F811
    lm = FakeLM(lambda messages, config: "Answer: 4")
    lm.model_path = "/models/qa"
    qa = ct.Predict("question -> answer").bind(lm)
    with pytest.raises(
        ConfigError, match=r"balance_classes needs an output with a fixed set of choices .* \(self: answer\)"
    ):
        BootstrapFinetune(metric, balance_classes=True, output_dir=tmp_path).compile(
            qa, trainset=[ct.Example(question="2+2?", answer="4").with_inputs("question")]
        )
    assert lm.calls == [] and not trained


def test_balance_classes_over_two_fields_and_runs_without_them():
    def run(i, prediction):
        return Trace(i, {"q": str(i)}, {}, prediction, 1.0, [])

    runs = [run(0, {"a": "x", "b": True}), run(1, {"a": "x", "b": True}), run(2, {"a": "x", "b": False})]
    runs += [run(3, {"a": "y", "b": True}), run(4, {"a": "y", "b": True}), run(5, {"a": "y", "b": True})]
    runs.append(run(6, {"other": 1}))
    repeats, report = balance_classes(runs, ["a", "b"])
    assert report["counts"] == {"-": 1, "x / False": 1, "x / True": 2, "y / True": 3}
    assert report["repeats"] == {"-": 1, "x / False": 3, "x / True": 2, "y / True": 1}  # round(3 / 2) = 2
    assert repeats == [2, 2, 3, 1, 1, 1, 1]
    assert balance_classes([], ["a"]) == ([], {"fields": ["a"], "counts": {}, "repeats": {}})


def test_repeats_list_each_call_as_often_as_its_first_trace_says():
    from cotune.program.trace import TraceStep

    def step(name, text):
        return TraceStep(name, {"x": text}, {"y": text}, [{"role": "user", "content": text}], f"Y: {text}")

    traces = [[step("p", "a"), step("q", "b")], [step("p", "a"), step("p", "c")]]
    examples = chat_examples(traces, repeats=[2, 3])
    assert [e.completion for e in examples] == ["Y: a", "Y: a", "Y: b", "Y: b", "Y: c", "Y: c", "Y: c"]
    assert [e.completion for e in chat_examples(traces, predictors=["p"], repeats=[1, 2])] == ["Y: a", "Y: c", "Y: c"]


@pytest.mark.integration
def test_smollm2_trains_on_balanced_iris_runs(tmp_path):
    """The real model, the built-in Iris program: a teacher that gets one virginica right among nine runs;
    the adapter trains on that run four times, for one epoch."""
    from cotune.lm import registry
    from cotune.tasks import load_task

    task = load_task("iris", train=12, dev=3, test=6)
    virginica = [ex for ex in task.train if ex["species"] == "virginica"]

    def teacher_answer(messages, config):
        text = messages[-1]["content"]
        flower = next(ex for ex in task.train if f"Petal Length: {ex['petal_length']}\n" in text + "\n")
        right = flower["species"] != "virginica" or flower is virginica[0]
        return f"Species: {flower['species'] if right else 'setosa'}"

    teacher = task.program().bind(FakeLM(teacher_answer))
    with registry.load("smollm2-135m", dtype="float32", cache=False) as lm:
        training = TrainingConfig(epochs=1, batch_size=4, learning_rate=1e-3, warmup_ratio=0.0)
        tuner = BootstrapFinetune(task.metric, training=training, teacher=teacher, balance_classes=True,
                                  keep_demos=False, output_dir=tmp_path, num_threads=4)  # fmt: skip
        tuned = tuner.compile(task.program().bind(lm), trainset=task.train)
        assert tuner.balance_["counts"] == {"setosa": 4, "versicolor": 4, "virginica": 1}
        assert tuner.balance_["repeats"] == {"setosa": 1, "versicolor": 1, "virginica": 4}
        assert tuner.balance_["epochs"] == {"adapter": 1}
        assert (tuner.train_result_.n_examples, tuner.train_result_.steps) == (12, 3)
        result = ct.evaluate(tuned, task.test, task.metric, num_threads=6)
        assert result.parse_failures == 0 and all(r.prediction["species"] in SPECIES for r in result.rows)
