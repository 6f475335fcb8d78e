"""BootstrapFinetune on FakeLM: the training function is replaced by a recorder, so these tests check
what is trained on and how the result is bound; tests/training/test_lora_training.py trains for real."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_tasks import Parity, metric, parity_data, parity_lm

import cotune as ct
from cotune.errors import ConfigError, TrainingError, UnknownChoiceError
from cotune.optimize.finetune import BootstrapFinetune
from cotune.optimize.traces import load_traces, save_traces
from cotune.program.saved import read_program_state
from cotune.training import LoRAConfig, TrainingConfig, TrainResult, data_hash


def student_lm(right="01234", adapter=None):
    lm = parity_lm(right)
    if adapter:
        lm = lm.with_adapter(adapter)
    lm.model_path = "/models/parity"  # what an HF model exposes; the fake trainer never reads it
    return lm


@pytest.fixture
def trained(monkeypatch):
    """Replace LoRA training by a recorder that writes an adapter folder."""
    calls = []

    def fake_train_lora(examples, *, base_model_path, output_dir, lora, training, base_model, init_adapter, events):
        calls.append({"examples": list(examples), "base_model_path": base_model_path, "output_dir": Path(output_dir),
                      "lora": lora, "training": training, "base_model": base_model, "init_adapter": init_adapter})  # fmt: skip
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        return TrainResult(str(output_dir), [2.0, 1.0], 1.0, 0.1, 2, len(examples), 100, 0, "cpu", data_hash(examples))

    monkeypatch.setattr("cotune.training.trainer.train_lora", fake_train_lora)
    return calls


def test_trains_one_adapter_on_the_passing_calls_and_binds_a_copy(trained, tmp_path):
    lm = student_lm("01234")
    program = Parity().bind(lm)
    before = program.dump_state()
    tuner = BootstrapFinetune(
        metric, lora=LoRAConfig(r=4), training=TrainingConfig(epochs=2), output_dir=tmp_path, seed=5
    )
    tuned = tuner.compile(program, trainset=parity_data(range(100, 110)))

    assert len(trained) == 1
    call = trained[0]
    # 5 of 10 numbers pass; each passing run has a digit call and a label call
    assert len(call["examples"]) == 10
    assert {e.predictor for e in call["examples"]} == {"digit", "label"}
    assert all(e.completion.startswith(("Reasoning:", "Label:")) for e in call["examples"])
    assert call["base_model_path"] == "/models/parity" and call["base_model"] == "fake"
    assert call["lora"] == LoRAConfig(r=4) and call["training"] == TrainingConfig(epochs=2, seed=5)  # seed: the tuner's
    assert call["init_adapter"] is None
    assert call["output_dir"] == tmp_path / "adapter"

    assert tuned is not program and program.dump_state() == before and program.lm is lm
    assert tuned.lm.adapter == str(tmp_path / "adapter")
    assert tuner.adapter_path_ == str(tmp_path / "adapter") and tuner.train_result_.n_examples == 10
    assert (tuner.n_traces_, tuner.n_passed_, tuner.passed_by_predictor_) == (10, 5, {"digit": 5, "label": 5})
    assert len(load_traces(tuner.traces_path_)) == 10


def test_no_passing_trace_is_a_clear_training_error(trained, tmp_path):
    program = Parity().bind(student_lm(right=""))
    tuner = BootstrapFinetune(metric, output_dir=tmp_path)
    with pytest.raises(TrainingError) as info:
        tuner.compile(program, trainset=parity_data(range(100, 150)))
    assert str(info.value).startswith(
        "0 of 50 traces passed the metric; try a prompt step first or lower the threshold"
    )
    assert "best score 0" in str(info.value) and not trained


def test_threshold_and_rollouts_change_what_is_kept(trained, tmp_path):
    # right only when sampling: rollouts at a temperature add traces that the greedy run lacks
    lm = parity_lm(right_when=lambda number, config, messages: config.temperature > 0)
    lm.model_path = "/models/parity"
    tuner = BootstrapFinetune(metric, num_rollouts=3, rollout_temperature=1.0, output_dir=tmp_path, num_threads=2)
    tuner.compile(Parity().bind(lm), trainset=parity_data(range(100, 104)))
    assert (tuner.n_traces_, tuner.n_passed_) == (12, 4)  # two sampled rollouts per example, identical: deduplicated
    assert {c.rollout_id for _, c in lm.calls} == {0, 1, 2}


def test_one_adapter_per_predictor(trained, tmp_path):
    program = Parity().bind(student_lm())
    tuner = BootstrapFinetune(metric, multitask=False, output_dir=tmp_path)
    tuned = tuner.compile(program, trainset=parity_data(range(100, 106)))
    assert [{e.predictor for e in c["examples"]} for c in trained] == [{"digit"}, {"label"}]
    assert tuner.adapter_path_ == {"digit": str(tmp_path / "digit"), "label": str(tmp_path / "label")}
    assert tuned.digit.lm.adapter == str(tmp_path / "digit") and tuned.label.lm.adapter == str(tmp_path / "label")
    assert set(tuner.train_result_) == {"digit", "label"}


def test_keep_demos_false_trains_and_returns_zero_shot_prompts(trained, tmp_path):
    program = Parity().bind(student_lm())
    program.label.demos = [ct.Example(number="8", last_digit="8", label="even")]
    tuned = BootstrapFinetune(metric, keep_demos=False, output_dir=tmp_path).compile(
        program, trainset=parity_data(range(100, 103))
    )
    label_examples = [e for e in trained[0]["examples"] if e.predictor == "label"]
    assert label_examples and all(len(e.chat) == 2 for e in label_examples)
    assert tuned.label.demos == [] and len(program.label.demos) == 1


def test_kept_demos_stay_in_training_prompts_and_in_the_program(trained, tmp_path):
    program = Parity().bind(student_lm())
    program.label.demos = [ct.Example(number="8", last_digit="8", label="even")]
    tuned = BootstrapFinetune(metric, output_dir=tmp_path).compile(program, trainset=parity_data(range(100, 103)))
    label_examples = [e for e in trained[0]["examples"] if e.predictor == "label"]
    assert all(e.chat == program.label.messages(number=e.chat[-1]["content"].split("\n")[0].split(": ")[1],
                                                 last_digit=e.chat[-1]["content"].split(": ")[-1])
               for e in label_examples)  # fmt: skip
    assert len(tuned.label.demos) == 1


def test_saved_traces_are_reused_without_running_the_teacher(trained, tmp_path):
    first = BootstrapFinetune(metric, output_dir=tmp_path / "a")
    first.compile(Parity().bind(student_lm()), trainset=parity_data(range(100, 106)))
    lm = student_lm()
    again = BootstrapFinetune(metric, traces=first.traces_path_, output_dir=tmp_path / "b", metric_threshold=0.0)
    again.compile(Parity().bind(lm), trainset=[])
    assert lm.calls == []
    assert (again.n_traces_, again.n_passed_) == (6, 6)  # the lower threshold keeps the failed runs too
    assert load_traces(tmp_path / "b" / "traces.jsonl") == load_traces(first.traces_path_)


def test_continue_trains_from_the_current_adapter(trained, tmp_path):
    program = Parity().bind(student_lm(adapter="/adapters/old"))
    BootstrapFinetune(metric, init="continue", output_dir=tmp_path).compile(program, trainset=parity_data([100]))
    BootstrapFinetune(metric, init="base", output_dir=tmp_path).compile(program, trainset=parity_data([100]))
    assert [c["init_adapter"] for c in trained] == ["/adapters/old", None]


def test_default_output_dir_is_named_by_content(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("COTUNE_CACHE_DIR", str(tmp_path))
    a = BootstrapFinetune(metric)
    a.compile(Parity().bind(student_lm()), trainset=parity_data(range(100, 104)))
    b = BootstrapFinetune(metric, training=TrainingConfig(epochs=1))
    b.compile(Parity().bind(student_lm()), trainset=parity_data(range(100, 104)))
    assert Path(a.adapter_path_).parent.parent == tmp_path / "adapters"
    assert Path(a.adapter_path_).parent.name.startswith("fake-") and a.adapter_path_ != b.adapter_path_


def test_the_adapter_cache_key_is_the_one_from_before_lora_and_training_were_split(tmp_path, monkeypatch):
    """An adapter trained before the split is found again: both configs are hashed as the one config they were.
    The two keys were computed by the code before the split (one LoRAConfig holding every setting), whose
    training batched by length: that is ``group_by_length=True`` now, and random batches (the default since)
    train another adapter, under another key."""
    monkeypatch.setenv("COTUNE_CACHE_DIR", str(tmp_path))
    base = {"adapter": SimpleNamespace(model="HuggingFaceTB/SmolLM2-135M-Instruct", adapter_id=None)}
    tuner = BootstrapFinetune(metric)
    grouped = tuner._root([], LoRAConfig(), TrainingConfig(group_by_length=True), base)
    assert grouped == tmp_path / "adapters" / "HuggingFaceTB_SmolLM2-135M-Instruct-add49f829347"
    lora = LoRAConfig(r=8, top_layers=4, target_modules=["q_proj", "v_proj"])
    training = TrainingConfig(epochs=2, seed=5, group_by_length=True)
    assert tuner._root([], lora, training, base).name.endswith("-1f1f5037d670")
    assert tuner._root([], LoRAConfig(), TrainingConfig(), base) != grouped


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"init": "scratch"}, UnknownChoiceError, "unknown init 'scratch'; choose one of: base, continue"),
        ({"metric_threshold": 2}, ConfigError, "metric_threshold must be in"),
        ({"lora": {"r": 8}}, ConfigError, "lora must be a LoRAConfig"),
        ({"training": {"epochs": 3}}, ConfigError, "training must be a TrainingConfig"),
        ({"num_threads": 0}, ConfigError, "num_threads must be an integer >= 1"),
        ({"trainer": "deepspeed"}, UnknownChoiceError, "unknown trainer 'deepspeed'; choose one of: local, trl"),
        ({"trainer": 3}, ConfigError, "trainer must be a name \\(local, trl\\) or an object with `name` and `train"),
    ],
)
def test_bad_hyperparameters_fail_before_any_work(kwargs, error, match, trained):
    lm = student_lm()
    with pytest.raises(error, match=match):
        BootstrapFinetune(metric, **kwargs).compile(Parity().bind(lm), trainset=parity_data([100]))
    assert lm.calls == []


def test_a_trainer_object_gets_the_examples_and_its_adapter_is_bound(tmp_path):
    class Recorder:
        name = "recorder"

        def __init__(self):
            self.calls = []

        def train(self, examples, *, base_model_path, output_dir, lora, training, base_model=None, init_adapter=None,
                  events=None):  # fmt: skip
            self.calls.append((len(examples), base_model_path, lora.r, training.epochs))
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            return TrainResult(str(output_dir), [1.0], 1.0, 0.1, 1, len(examples), 10, 0, "cpu", data_hash(examples))

    trainer = Recorder()
    tuner = BootstrapFinetune(metric, training=TrainingConfig(epochs=2), output_dir=tmp_path, trainer=trainer)
    tuned = tuner.compile(Parity().bind(student_lm("01234")), trainset=parity_data(range(100, 110)))
    assert trainer.calls == [(10, "/models/parity", 32, 2)]
    assert tuned.lm.adapter == str(tmp_path / "adapter") and tuner.train_result_.steps == 1
    assert "trainer=" in repr(tuner)


def test_a_student_without_local_weights_is_refused_before_collecting_traces(trained):
    lm = parity_lm()
    with pytest.raises(ConfigError, match="bound to FakeLM\\('fake'\\) \\(backend 'fake'\\), which has neither"):
        BootstrapFinetune(metric).compile(Parity().bind(lm), trainset=parity_data([100]))
    with pytest.raises(ConfigError, match="not bound to an LM"):
        BootstrapFinetune(metric).compile(Parity(), trainset=parity_data([100]))
    assert lm.calls == []


def test_contract_params_round_trip_and_seeded_determinism(trained, tmp_path):
    tuner = BootstrapFinetune(metric, lora=LoRAConfig(r=8), training=TrainingConfig(epochs=2), num_rollouts=2,
                              output_dir=tmp_path, seed=1)  # fmt: skip
    params = tuner.get_params()
    assert BootstrapFinetune(**params).get_params() == params
    assert not [k for k in vars(tuner) if k.endswith("_")]
    runs = [BootstrapFinetune(**params).compile(Parity().bind(student_lm()), trainset=parity_data(range(100, 104)))
            for _ in range(2)]  # fmt: skip
    assert runs[0].dump_state() == runs[1].dump_state()
    assert trained[0]["examples"] == trained[1]["examples"]
    path = runs[0].save(tmp_path / "program.json")
    saved = json.loads(path.read_text())["lm"]
    assert saved["adapter"] == "adapter"  # the saved program records its weights, relative to the file
    assert read_program_state(path)["lm"]["adapter"] == str(tmp_path / "adapter")
    fresh = Parity().load(path, lm=student_lm(adapter=str(tmp_path / "adapter")))
    assert fresh.dump_state() == runs[0].dump_state()
    save_traces(tmp_path / "x.jsonl", [])  # an empty file is a valid (empty) artifact
    with pytest.raises(TrainingError, match="0 of 0 traces passed"):
        BootstrapFinetune(metric, traces=tmp_path / "x.jsonl").compile(Parity().bind(student_lm()), trainset=[])


# -- integration: the real SmolLM2-135M learns from a rule-based teacher's Iris traces --------------------
def rule_teacher(messages) -> str:
    """A FakeLM that classifies Iris by petal length and width (about 95% right) in the program's format."""
    fields = {
        k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in messages[-1]["content"].splitlines())
    }
    length, width = float(fields["petal length"]), float(fields["petal width"])
    species = "setosa" if length < 2.5 else ("versicolor" if width < 1.75 else "virginica")
    return f"Reasoning: petal length {length} cm and width {width} cm.\nSpecies: {species}"


class IrisCoT(ct.Program):
    """Iris with a chain of thought (the built-in program answers directly), so the traces carry reasoning."""

    def __init__(self):
        from cotune.tasks.iris import signature

        self.classify = ct.ChainOfThought(signature())

    def forward(self, **measurements):
        return self.classify(**measurements)


@pytest.mark.integration
def test_fine_tunes_smollm2_on_iris_traces_and_changes_its_predictions(tmp_path):
    from cotune.evaluate import evaluate
    from cotune.lm import FakeLM, registry
    from cotune.tasks import load_task

    task = load_task("iris", train=16, dev=3, test=6)
    with registry.load("smollm2-135m", dtype="float32", cache=False) as lm:
        student = IrisCoT().bind(lm)
        teacher = IrisCoT().bind(FakeLM(rule_teacher))
        lora = LoRAConfig(r=8, alpha=16)
        training = TrainingConfig(epochs=1, batch_size=4, learning_rate=1e-3, warmup_ratio=0.0)  # 4 steps
        tuner = BootstrapFinetune(task.metric, lora=lora, training=training, teacher=teacher, output_dir=tmp_path,
                                  num_threads=8)  # fmt: skip
        tuned = tuner.compile(student, trainset=task.train)

        assert tuner.n_traces_ == 16 and tuner.passed_by_predictor_["classify"] == tuner.n_passed_ >= 14
        assert tuned.lm.adapter == tuner.adapter_path_ == str(tmp_path / "adapter")
        assert tuner.train_result_.steps == 4 and tuner.train_result_.final_loss < tuner.train_result_.losses[0]
        base = evaluate(student, task.test, task.metric, num_threads=6)
        after = evaluate(tuned, task.test, task.metric, num_threads=6)
        base_texts = [r.trace[0].completion for r in base.rows]
        tuned_texts = [r.trace[0].completion for r in after.rows]
        assert base_texts != tuned_texts
        assert sum("Species:" in t for t in tuned_texts) >= 4, tuned_texts  # it learned the teacher's format


def test_traces_without_the_students_predictors_are_refused(trained, tmp_path):
    class Other(ct.Program):
        def __init__(self):
            self.guess = ct.Predict("number -> label")

        def forward(self, number):
            return self.guess(number=number)

    teacher = Other().bind(ct.FakeLM(lambda m: "Label: even"))
    tuner = BootstrapFinetune(metric, teacher=teacher, multitask=False, output_dir=tmp_path)
    with pytest.raises(TrainingError, match=r"none holds a call of the student's predictors \['digit', 'label'\]"):
        tuner.compile(Parity().bind(student_lm()), trainset=parity_data([100, 102]))
    assert not trained


def test_a_bare_predictor_is_fine_tuned_and_copied(trained, tmp_path):
    lm = ct.FakeLM(lambda m: "Answer: 4")
    lm.model_path = "/models/fake"
    qa = ct.Predict("question -> answer").bind(lm)
    data = [ct.Example(question="2+2?", answer="4").with_inputs("question")]
    tuned = BootstrapFinetune(lambda ex, p: float(p["answer"] == ex["answer"]), output_dir=tmp_path).compile(
        qa, trainset=data
    )
    assert isinstance(tuned, ct.Predict) and tuned is not qa and qa.lm is lm
    assert tuned.lm.adapter == str(tmp_path / "adapter") and [e.predictor for e in trained[0]["examples"]] == ["self"]


class Classify(ct.Program):
    """One chain-of-thought predictor whose inputs and output are the example's fields."""

    def __init__(self):
        self.label = ct.ChainOfThought("number -> label")

    def forward(self, number):
        return self.label(number=number)


def test_fill_with_labels_trains_on_the_labels_of_the_examples_no_run_got_right(trained, tmp_path):
    lm = ct.FakeLM(lambda m: "Reasoning: it ends in 0.\nLabel: even")  # right for even numbers only
    lm.model_path = "/models/fake"
    program = Classify().bind(lm)
    program.label.demos = [ct.Example(number="7", label="odd")]
    data = parity_data(range(100, 106))
    tuner = BootstrapFinetune(metric, fill_with_labels=True, output_dir=tmp_path)
    tuner.compile(program, trainset=data)

    assert (tuner.n_traces_, tuner.n_passed_, tuner.n_labeled_) == (6, 3, 3)
    examples = trained[0]["examples"]
    by_number = {e.chat[-1]["content"]: e.completion for e in examples}
    assert by_number == {
        "Number: 100": "Reasoning: it ends in 0.\nLabel: even", "Number: 101": "Label: odd",
        "Number: 102": "Reasoning: it ends in 0.\nLabel: even", "Number: 103": "Label: odd",
        "Number: 104": "Reasoning: it ends in 0.\nLabel: even", "Number: 105": "Label: odd",
    }  # fmt: skip
    # a label example's prompt is what the predictor sends: the demo turns are there
    assert all(e.chat == program.label.messages(number=e.chat[-1]["content"][8:]) for e in examples)
    saved = load_traces(tuner.traces_path_)
    assert [t.source for t in saved] == ["run"] * 6 + ["labels"] * 3
    assert [t.example_index for t in saved if t.source == "labels"] == [1, 3, 5]


def test_fill_with_labels_leaves_out_predictors_that_take_intermediate_values(trained, tmp_path):
    seen = []
    tuner = BootstrapFinetune(metric, fill_with_labels=True, output_dir=tmp_path)
    tuner.compile(Parity().bind(student_lm("01234")), trainset=parity_data(range(100, 110)), events=seen.append)
    assert tuner.n_labeled_ == 0 and len(trained[0]["examples"]) == 10  # only the passing runs' calls
    unused = [e for e in seen if e.name == "finetune.labels_unused"]
    assert len(unused) == 1 and "no predictor takes only the examples' inputs" in unused[0].fields["reason"]


def test_label_traces_in_a_file_are_used_only_with_fill_with_labels(trained, tmp_path):
    from cotune.optimize.traces import collect_traces, labeled_traces

    lm = ct.FakeLM(lambda m: "Label: even")
    lm.model_path = "/models/fake"
    program, data = Classify().bind(lm), parity_data(range(100, 104))
    path = save_traces(
        tmp_path / "t.jsonl", collect_traces(program, data, metric) + labeled_traces(program, data, skip=[0, 2])
    )
    BootstrapFinetune(metric, traces=path, output_dir=tmp_path / "a").compile(program, trainset=data)
    BootstrapFinetune(metric, traces=path, fill_with_labels=True, output_dir=tmp_path / "b").compile(
        program, trainset=data
    )
    assert [len(call["examples"]) for call in trained] == [2, 4]
    assert len(load_traces(tmp_path / "b" / "traces.jsonl")) == 6  # the file's traces, not doubled


def test_one_adapter_per_predictor_saves_and_loads_each_predictor_on_its_own(trained, tmp_path, monkeypatch):
    from cotune.lm import registry
    from cotune.program.saved import bind_saved, read_program_state, save_program

    lm = student_lm("01234")
    tuner = BootstrapFinetune(metric, multitask=False, output_dir=tmp_path / "run")
    tuned = tuner.compile(Parity().bind(lm), trainset=parity_data(range(100, 110)))
    path = save_program(tuned, tmp_path / "run" / "program.json")  # Program.lm would raise: the LMs differ
    state = json.loads(path.read_text())
    assert state["lm"] is None and state["program"].endswith("Parity")
    assert {n: s["adapter"] for n, s in state["lms"].items()} == {"digit": "digit", "label": "label"}  # file-relative

    def adapters(program):
        return {n: Path(p.lm.adapter).resolve() for n, p in program.named_predictors()}

    expected = {n: Path(a).resolve() for n, a in tuner.adapter_path_.items()}
    assert adapters(bind_saved(Parity().load_state(state), read_program_state(path), lm)) == expected  # the runner

    likes = []

    def from_spec(spec, *, like=None, base_dir=None):  # a real backend would load weights here
        likes.append(like)
        return (like or lm).with_adapter(str(Path(base_dir) / spec["adapter"]))

    monkeypatch.setattr(registry, "from_spec", from_spec)
    loaded = Parity().load(path)
    assert adapters(loaded) == expected
    assert likes[0] is None and likes[1] is not None  # the second predictor shares the first one's weights


def test_training_runs_where_the_student_lm_computes(trained, tmp_path):
    """The adapter trains through the LM's run_compute (a local engine: its model thread), not beside it."""
    lm = student_lm("01234")
    ran: list[int] = []

    def run_compute(fn):
        ran.append(len(trained))  # nothing trained yet when the LM is handed the training
        return fn()

    lm.run_compute = run_compute
    BootstrapFinetune(metric, output_dir=tmp_path).compile(Parity().bind(lm), trainset=parity_data(range(100, 110)))
    assert ran == [0] and len(trained) == 1
