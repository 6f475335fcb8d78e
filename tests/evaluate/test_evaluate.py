import pytest

import cotune as ct
from cotune.errors import EvaluationError
from cotune.evaluate import evaluate, exact_match, numeric_match, parse_number, token_f1
from cotune.events import Event
from cotune.lm import FakeLM


def data(n):
    return [ct.Example(question=str(i), answer=str(i)).with_inputs("question") for i in range(n)]


def metric(ex, pred):
    return float(pred["answer"] == ex["answer"])


def test_scores_rows_usage_and_order():
    # right on even inputs, wrong on odd ones, unparseable on multiples of 3
    def respond(messages):
        q = int(messages[-1]["content"].split(": ")[1])
        if q % 3 == 0:
            return "\n\n"
        return f"Answer: {q if q % 2 == 0 else -1}"

    program = ct.Predict("question -> answer").bind(FakeLM(respond))
    res = evaluate(program, data(12), metric, num_threads=4)
    assert [r.index for r in res.rows] == list(range(12))
    expected = [0 if i % 3 == 0 else float(i % 2 == 0) for i in range(12)]
    assert [r.score for r in res.rows] == expected
    assert res.score == pytest.approx(sum(expected) / 12)
    assert res.parse_failures == 4 and res.errors == 0
    assert res.rows[3].raw == "\n\n" and res.rows[3].error_kind == "parse"
    assert res.usage.calls == 12 and res.usage_by_predictor["self"].calls == 12
    assert res.format_adherence == pytest.approx(8 / 12)


def test_exceptions_are_counted_until_the_limit():
    def boom(question):
        raise RuntimeError(f"tool failed on {question}")

    with pytest.raises(EvaluationError, match="tool failed") as info:
        evaluate(boom, data(10), metric, num_threads=2, max_errors=2)
    assert info.value.result is not None and info.value.result.errors >= 3


def test_exceptions_under_the_limit_are_rows():
    def flaky(question):
        if question == "1":
            raise RuntimeError("once")
        return {"answer": question}

    res = evaluate(flaky, data(4), metric, num_threads=2)
    assert res.errors == 1 and res.rows[1].error == "RuntimeError: once" and res.score == 0.75


def test_progress_events():
    seen: list[Event] = []
    evaluate(lambda question: {"answer": question}, data(3), metric, num_threads=1, events=seen.append)
    names = [e.name for e in seen]
    assert names == ["progress.start"] + ["progress.advance"] * 3 + ["progress.end"]
    assert seen[-2].fields["score"] == 1.0


def test_save_result(tmp_path):
    res = evaluate(lambda question: {"answer": question}, data(2), metric, num_threads=1)
    path = res.save(tmp_path / "r.json")
    assert '"score": 1.0' in path.read_text()


@pytest.mark.parametrize(
    "fn, pred, gold, expected",
    [
        (exact_match, "The Eiffel Tower.", "eiffel tower", 1.0),
        (exact_match, "Paris, France", "Paris", 0.0),
        (token_f1, "Paris France", "Paris", pytest.approx(2 / 3)),
        (numeric_match, "The answer is $1,234.", "1234", 1.0),
        (numeric_match, "about 12", "13", 0.0),
        (numeric_match, "no number", "13", 0.0),
    ],
)
def test_metrics(fn, pred, gold, expected):
    assert fn(pred, gold) == expected


def test_parse_number():
    assert parse_number("x = -3.5 then 7") == 7.0
    assert parse_number("none") is None
