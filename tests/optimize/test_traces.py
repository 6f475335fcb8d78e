import json

import pytest
from fake_tasks import Parity, metric, parity_data, parity_lm

from cotune.errors import ConfigError, DataError
from cotune.optimize.traces import Trace, collect_traces, count_by_predictor, load_traces, passing, save_traces
from cotune.program.trace import TraceStep


def test_every_run_is_kept_with_score_steps_and_provenance():
    program = Parity().bind(parity_lm("01234"))
    data = parity_data(range(100, 110))
    traces = collect_traces(program, data, metric, num_threads=4, seed=3)
    assert [t.example_index for t in traces] == list(range(10))
    assert [t.score for t in traces] == [1.0] * 5 + [0.0] * 5
    t = traces[0]
    assert t.inputs == {"number": "100"} and t.labels == {"label": "even"} and t.prediction == {"label": "even"}
    assert [s.predictor for s in t.steps] == ["digit", "label"]
    assert t.steps[1].messages == program.label.messages(number="100", last_digit="0")
    assert t.steps[1].completion == "Label: even"
    assert (t.program, t.model, t.seed, t.rollout_id) == (program.fingerprint(), program.lm.spec(), 3, 0)


def test_rollouts_sample_with_distinct_ids_and_leave_the_teacher_alone():
    lm = parity_lm("01234")
    program = Parity().bind(lm)
    program.label.config = {"max_tokens": 20}
    traces = collect_traces(program, parity_data(range(100, 104)), metric, num_rollouts=3, temperature=0.9,
                            num_threads=2, seed=2)  # fmt: skip
    assert len(traces) == 12
    assert sorted({(t.rollout_id, t.temperature) for t in traces}) == [(0, None), (2001, 0.9), (2002, 0.9)]
    configs = {(c.temperature, c.rollout_id) for _, c in lm.calls}
    assert configs == {(0.0, 0), (0.9, 2001), (0.9, 2002)}
    assert program.label.config == {"max_tokens": 20} and program.digit.config == {}
    # all 12 runs pass, but the fake model answers the same at every temperature: one copy per example
    assert sum(t.passed() for t in traces) == 12
    assert [t.example_index for t in passing(traces)] == [0, 1, 2, 3]


def one_rollout_at_a_time(program, data, num_rollouts, seed):
    """The plain loop: rollout r runs on the examples no earlier rollout passed."""
    from cotune.evaluate.evaluate import evaluate
    from cotune.optimize.rollouts import sampling_copy

    out, todo = [], list(range(len(data)))
    for r in range(num_rollouts):
        if not todo:
            break
        runner = program if r == 0 else sampling_copy(program, 1.0, seed * 1000 + r)
        result = evaluate(runner, [data[i] for i in todo], metric, num_threads=2)
        out += [(todo[row.index], 0 if r == 0 else seed * 1000 + r, row.score) for row in result.rows]
        todo = [todo[row.index] for row in result.rows if row.score < 1]
    return out


@pytest.mark.parametrize("n_examples", [3, 40, 70])
def test_rollouts_grouped_into_full_rounds_keep_the_traces_of_one_rollout_at_a_time(n_examples):
    # number n is right only on the rollout id whose last digit is n mod 7: later rollouts pass more examples
    def right_when(number, config, messages):
        return config.rollout_id % 10 == int(number) % 7

    program = Parity().bind(parity_lm(right_when=right_when))
    data = parity_data(range(100, 100 + n_examples))
    traces = collect_traces(program, data, metric, num_rollouts=9, temperature=1.0, num_threads=4, seed=3,
                            stop_at_first_pass=True)  # fmt: skip
    assert [(t.example_index, t.rollout_id, t.score) for t in traces] == one_rollout_at_a_time(program, data, 9, 3)
    assert {t.example_index for t in traces if t.score == 1} == set(range(n_examples))  # each passes at one id
    last_needed = 3000 + max((100 + i) % 7 for i in range(n_examples))
    assert max(t.rollout_id for t in traces) == last_needed  # nothing kept after the last first pass


def test_threshold_and_deduplication():
    def step(n):
        return TraceStep("label", {"n": n}, {"label": "x"}, [{"role": "user", "content": n}], "Label: x")

    a = Trace(0, {"n": "1"}, {}, {"label": "odd"}, 1.0, [step("1")])
    partial = Trace(1, {"n": "2"}, {}, {"label": "x"}, 0.5, [step("2")])
    errored = Trace(2, {"n": "3"}, {}, None, 1.0, [step("3")], error="boom")
    same_calls = Trace(3, {"n": "1"}, {}, {"label": "odd"}, 1.0, [step("1")], rollout_id=5)
    assert passing([a, partial, errored]) == [a]  # default: full marks only
    assert passing([a, partial], threshold=0.5) == [a, partial]
    assert passing([a, same_calls]) == [a]  # identical calls teach the same thing once


def test_count_by_predictor_names_predictors_without_passing_calls():
    program = Parity().bind(parity_lm("01234"))
    traces = passing(collect_traces(program, parity_data(range(100, 110)), metric, num_threads=1))
    assert count_by_predictor(traces, ["digit", "label", "unused"]) == {"digit": 5, "label": 5, "unused": 0}


def test_traces_round_trip_through_jsonl(tmp_path):
    program = Parity().bind(parity_lm("01234"))
    traces = collect_traces(program, parity_data(range(100, 106)), metric, num_rollouts=2, num_threads=1)
    path = save_traces(tmp_path / "run" / "traces.jsonl", traces)
    lines = path.read_text().splitlines()
    assert len(lines) == 12 and json.loads(lines[0])["score"] == 1.0
    loaded = load_traces(path)
    assert loaded == traces
    assert [s.messages for s in loaded[3].steps] == [s.messages for s in traces[3].steps]


def test_bad_traces_files_name_the_file_and_line(tmp_path):
    with pytest.raises(DataError, match="no traces file"):
        load_traces(tmp_path / "missing.jsonl")
    good = Trace(0, {"n": "1"}, {}, None, 0.0, []).to_dict()
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(good) + "\n\n{not json\n")
    with pytest.raises(DataError, match=r"t\.jsonl:3: not a trace"):
        load_traces(path)
    path.write_text(json.dumps(good | {"format_version": 99}) + "\n")
    with pytest.raises(DataError, match=r":1: traces format_version 99"):
        load_traces(path)


def test_bad_arguments():
    program = Parity().bind(parity_lm())
    with pytest.raises(ConfigError, match="num_rollouts must be >= 1, got 0"):
        collect_traces(program, parity_data([1]), metric, num_rollouts=0)
    with pytest.raises(ConfigError, match="temperature must be >= 0"):
        collect_traces(program, parity_data([1]), metric, num_rollouts=2, temperature=-1)


def test_a_bare_predictor_can_be_the_teacher():
    import cotune as ct

    lm = ct.FakeLM(lambda m: "Answer: 4")
    qa = ct.Predict("question -> answer").bind(lm)
    data = [ct.Example(question="2+2?", answer="4").with_inputs("question")]
    traces = collect_traces(qa, data, lambda ex, p: float(p["answer"] == ex["answer"]), num_rollouts=2, num_threads=1)
    assert [(t.steps[0].predictor, t.rollout_id, t.score) for t in traces] == [("self", 0, 1.0), ("self", 1, 1.0)]
    assert [c.rollout_id for _, c in lm.calls] == [0, 1] and qa.config == {}
    assert traces[0].program is None and traces[0].model == lm.spec()


@pytest.mark.parametrize(
    "structured_output, completion, demo_answer",
    [("grammar", "Answer: 4", "Answer: 2"), ("json_schema", '{"answer": "4"}', '{"answer": "2"}')],
)
def test_labels_are_written_as_the_predictor_would_answer(structured_output, completion, demo_answer):
    import cotune as ct
    from cotune.optimize.traces import labeled_traces

    qa = ct.Predict("question -> answer", demos=[{"question": "1+1?", "answer": "2"}])
    qa.bind(ct.FakeLM(["unused"], structured_output=structured_output))
    data = [ct.Example(question="2+2?", answer="4").with_inputs("question")]
    (step,) = labeled_traces(qa, data)[0].steps
    # a server constraining to a JSON schema answers with a JSON object, as the demo turns show it
    assert step.completion == completion and step.messages[2] == {"role": "assistant", "content": demo_answer}
    assert step.messages == qa.messages(question="2+2?") and step.zero_shot == qa.zero_shot_messages(question="2+2?")
    assert qa.adapter.parse(qa.signature, step.completion) == {"answer": "4"}
