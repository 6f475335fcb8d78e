import json

import pytest

from cotune.data import Dataset, Example, load_csv, load_jsonl
from cotune.errors import ConfigError, DataError


def test_example_inputs_and_labels():
    ex = Example(question="q", answer="a").with_inputs("question")
    assert ex.inputs() == {"question": "q"} and ex.labels() == {"answer": "a"}
    assert ex.question == "q"
    with pytest.raises(AttributeError, match="immutable"):
        ex.question = "x"
    with pytest.raises(KeyError, match="nope"):
        ex.with_inputs("nope")


def test_example_copy_keeps_inputs_and_pickles():
    import pickle

    ex = Example(question="q", answer="a").with_inputs("question")
    assert ex.copy(answer="b").inputs() == {"question": "q"}
    assert pickle.loads(pickle.dumps(ex)) == ex


def test_split_is_seeded_disjoint_and_sized():
    ds = Dataset([Example(i=i) for i in range(20)])
    a = ds.split([10, 5, 5], seed=3)
    b = ds.split([10, 5, 5], seed=3)
    assert [len(p) for p in a] == [10, 5, 5]
    assert [list(p) for p in a] == [list(p) for p in b]
    ids = [ex.i for p in a for ex in p]
    assert sorted(ids) == list(range(20))
    assert [ex.i for ex in ds.split([10], seed=4)[0]] != [ex.i for ex in a[0]]


def test_stratified_split_balances_labels():
    ds = Dataset([Example(y=c) for c in "aaaaaabbbbbbcccccc"])
    first, _ = ds.split([6, 12], seed=0, stratify="y")
    assert sorted(ex.y for ex in first) == list("aabbcc")


def test_split_too_big_is_refused():
    with pytest.raises(ConfigError, match="do not fit"):
        Dataset([Example(i=1)]).split([2])


def test_load_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"q": "a", "a": "b"}) + "\n\n" + json.dumps({"q": "c", "a": "d"}) + "\n")
    ds = load_jsonl(path, inputs=["q"], required=["a"])
    assert len(ds) == 2 and ds[1].inputs() == {"q": "c"}


@pytest.mark.parametrize(
    "content, line, message",
    [
        ('{"q": "a", "a": "b"}\n{"q": oops}\n', 2, "invalid JSON"),
        ('{"q": "a", "a": "b"}\n[1, 2]\n', 2, "expected a JSON object"),
        ('{"q": "a"}\n', 1, "missing field"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_jsonl(path, required=["a"])
    assert info.value.line == line
    assert f"bad.jsonl:{line}" in str(info.value)


def test_load_csv_and_ragged_row(tmp_path):
    good = tmp_path / "d.csv"
    good.write_text("q,a\nx,1\ny,2\n")
    assert [ex.a for ex in load_csv(good, inputs=["q"])] == ["1", "2"]
    bad = tmp_path / "bad.csv"
    bad.write_text("q,a\nx,1\ny,2,3\n")
    with pytest.raises(DataError, match="bad.csv:3"):
        load_csv(bad)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_jsonl(tmp_path / "none.jsonl")


def test_stratified_split_keeps_proportions_of_imbalanced_classes():
    ds = Dataset([Example(y="a") for _ in range(80)] + [Example(y="b") for _ in range(20)])
    first, _ = ds.split([10, 90], seed=0, stratify="y")
    assert sorted(ex.y for ex in first) == ["a"] * 8 + ["b"] * 2
