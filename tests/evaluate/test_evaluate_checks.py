"""Findings 6 and 11 (issue 12): metric values outside [0, 1] and empty datasets are refused; Ctrl-C stops
an evaluation promptly and keeps the finished rows."""

import math

import pytest

import cotune as ct
from cotune.errors import ConfigError, DataError
from cotune.evaluate import evaluate
from cotune.lm import FakeLM


def data(n):
    return [ct.Example(question=str(i), answer=str(i)).with_inputs("question") for i in range(n)]


def qa():
    return ct.Predict("question -> answer").bind(FakeLM(lambda m: "Answer: " + m[-1]["content"].split(": ")[1]))


@pytest.mark.parametrize("value", [math.nan, 1.5, -0.1, math.inf])
def test_a_metric_value_outside_0_1_is_an_error_naming_it(value):
    with pytest.raises(ConfigError, match=r"metric 'bad' returned .* a metric must return a number in \[0, 1\]"):

        def bad(ex, pred):
            return value

        evaluate(qa(), data(3), bad, num_threads=1)


def test_booleans_are_fine():
    assert evaluate(qa(), data(2), lambda ex, pred: pred["answer"] == ex["answer"], num_threads=1).score == 1.0


def test_an_empty_dataset_is_refused():
    with pytest.raises(ConfigError, match="empty dataset"):
        evaluate(qa(), [], lambda ex, pred: 1.0)


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_an_empty_data_file_is_refused(tmp_path, text):
    from cotune.data.loaders import load_csv, load_jsonl

    (tmp_path / "d.jsonl").write_text(text)
    (tmp_path / "d.csv").write_text("question,answer\n" + text)
    with pytest.raises(DataError, match="no examples"):
        load_jsonl(tmp_path / "d.jsonl")
    with pytest.raises(DataError, match="no examples"):
        load_csv(tmp_path / "d.csv")


def test_ctrl_c_stops_promptly_and_keeps_finished_rows():
    import threading

    # Calls after the third wait until the Ctrl-C: an instant fake LM on a loaded machine could otherwise
    # answer all 40 before the main thread handles the third row (the race this test once lost, 40 calls).
    gate, answered = threading.Event(), []

    def answer(m):
        answered.append(1)
        if len(answered) > 3:
            gate.wait(5)
        return "Answer: " + m[-1]["content"].split(": ")[1]

    lm = FakeLM(answer)
    program = ct.Predict("question -> answer").bind(lm)
    seen = []

    def sink(e):
        if e.name == "progress.advance":
            seen.append(e)
            if len(seen) == 3:
                gate.set()
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        evaluate(program, data(40), lambda ex, pred: 1.0, num_threads=2, events=sink)
    assert len(lm.calls) < 10  # not all 40 queued examples
    assert info.value.result.n >= 3 and all(r.score == 1.0 for r in info.value.result.rows)
