from __future__ import annotations

import json
from pathlib import Path

import pytest

from cotune.errors import ConfigError, DataError
from cotune.evaluate import evaluate
from cotune.lm import FakeLM
from cotune.program import ChainOfThought
from cotune.tasks import load_task
from cotune.tasks.gsm8k import answer_match, parse_row


def _row(i: int) -> dict:
    return {"question": f"What is {i} + 1?", "answer": f"{i} + 1 = <<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}"}


@pytest.fixture
def folder(tmp_path, write_jsonl):
    root = tmp_path / "data"
    write_jsonl(root / "gsm8k" / "train.jsonl", [_row(i) for i in range(40)])
    write_jsonl(root / "gsm8k" / "test.jsonl", [_row(100 + i) for i in range(10)])
    return root / "gsm8k"


def _load(folder, **kw):
    return load_task("gsm8k", data_dir=folder, **({"train": 10, "dev": 20, "test": 5} | kw))


@pytest.mark.parametrize(
    "answer,gold,reasoning",
    [
        ("She sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72", "She sold 48/2 = 24 clips."),
        ("Total is $1,000.\n#### 1,000", "1000", "Total is $1,000."),
        ("#### -3", "-3", ""),
        ("a #### b #### 5", "5", "a #### b"),
    ],
)
def test_parse_row_keeps_gold_number_and_solution(answer, gold, reasoning):
    row = parse_row({"question": " Q? ", "answer": answer})
    assert row == {"question": "Q?", "answer": gold, "reasoning": reasoning}


@pytest.mark.parametrize("answer", ["no marker 72", "#### ", "#### seventy"])
def test_parse_row_refuses_a_missing_gold_number(answer):
    with pytest.raises(ValueError, match="####"):
        parse_row({"question": "Q?", "answer": answer})


@pytest.mark.parametrize(
    "predicted,gold,score",
    [
        ("72", "72", 1.0),
        ("The answer is 72.", "72", 1.0),
        ("$1,000", "1000", 1.0),
        ("72.0", "72", 1.0),
        ("-5", "-5", 1.0),
        ("3.5 hours", "3.5", 1.0),
        ("73", "72", 0.0),
        ("seventy-two", "72", 0.0),
        ("", "72", 0.0),
        ("72 then 3", "72", 0.0),  # the last number counts
    ],
)
def test_answer_match(predicted, gold, score):
    assert answer_match({"answer": gold}, {"answer": predicted}) == score


@pytest.mark.parametrize("prediction", [{}, {"reasoning": "72"}, {"answer": None}, None])
def test_answer_match_without_answer_scores_zero(prediction):
    assert answer_match({"answer": "72"}, prediction) == 0.0


def test_program_shape(folder):
    program = _load(folder).program()
    [(name, predictor)] = program.named_predictors()
    assert name == "solve" and isinstance(predictor, ChainOfThought) and predictor.lm is None
    assert str(predictor.signature) == "question -> reasoning, answer: float"  # the answer is typed: a number
    assert "final number" in predictor.instruction


def _fake_solver(offset: int) -> FakeLM:
    """Answers "What is N + 1?" with N + offset, and puts the right number in the reasoning."""

    def answer(messages):
        n = int(messages[-1]["content"].split()[-3])
        return f"Reasoning: {n} + 1 = {n + 1}.\nAnswer: {n + offset}"

    return FakeLM(answer)


@pytest.mark.parametrize("offset,score", [(1, 1.0), (2, 0.0)])
def test_program_runs_on_fake_lm_and_scores_the_answer_not_the_reasoning(folder, offset, score):
    task = _load(folder)
    result = evaluate(task.program().bind(_fake_solver(offset)), task.test, task.metric, num_threads=2)
    assert result.score == score and result.parse_failures == 0 and result.n == 5
    assert {s.predictor for row in result.rows for s in row.trace} == {"solve"}


def test_splits_sizes_and_test_in_file_order(folder):
    task = _load(folder)
    assert (len(task.train), len(task.dev), len(task.test)) == (10, 20, 5)
    assert [ex.answer for ex in task.test] == ["101", "102", "103", "104", "105"]
    assert set(task.train[0].inputs()) == {"question"} and set(task.train[0].labels()) == {"answer", "reasoning"}


def test_train_and_dev_are_disjoint_and_seeded(folder):
    a, b, c = _load(folder, seed=7), _load(folder, seed=7), _load(folder, seed=8)
    questions = [ex.question for ex in a.train] + [ex.question for ex in a.dev]
    assert len(set(questions)) == 30
    assert list(a.train) == list(b.train) and list(a.dev) == list(b.dev)
    assert list(a.train) != list(c.train)
    assert list(a.test) == list(c.test)  # the seed does not touch test


def test_dev_stays_fixed_when_train_shrinks(folder):
    assert list(_load(folder, train=3).dev) == list(_load(folder).dev)


def test_parent_folder_and_env_var_both_find_the_data(folder, monkeypatch):
    assert len(_load(folder.parent).test) == 5
    monkeypatch.setenv("COTUNE_DATA_DIR", str(folder.parent))
    task = load_task("gsm8k", train=1, dev=1, test=1)
    assert task.data_dir == folder and len(task.test) == 1


def test_no_data_dir_says_to_pass_one():
    with pytest.raises(ConfigError, match=r"--data-dir.*COTUNE_DATA_DIR.*hf:openai/gsm8k"):
        load_task("gsm8k")


def test_missing_folder_names_it(tmp_path):
    with pytest.raises(DataError, match="does not exist") as info:
        load_task("gsm8k", data_dir=tmp_path / "nowhere")
    assert info.value.path == tmp_path / "nowhere"


def test_missing_file_names_it(folder):
    (folder / "test.jsonl").unlink()
    with pytest.raises(DataError, match="no such file") as info:
        _load(folder)
    assert info.value.path == folder / "test.jsonl"


@pytest.mark.parametrize(
    "bad_line,message",
    [
        ('{"question": "Q?", "answer": "#### 1"', "invalid JSON"),
        (json.dumps({"question": "Q?", "answer": "no gold"}), "####"),
        (json.dumps({"answer": "#### 1"}), "question"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_malformed_row_names_file_and_line(folder, write_jsonl, bad_line, message):
    rows = [json.dumps(_row(i)) for i in range(40)]
    rows[2] = bad_line
    write_jsonl(folder / "train.jsonl", rows)
    with pytest.raises(DataError, match=message) as info:
        _load(folder)
    assert info.value.path == folder / "train.jsonl" and info.value.line == 3
    assert f"{folder / 'train.jsonl'}:3:" in str(info.value)


def test_sizes_larger_than_the_files_are_refused(folder):
    with pytest.raises(ConfigError, match="train.jsonl has 40"):
        _load(folder, train=30)
    with pytest.raises(ConfigError, match="test.jsonl has 10"):
        _load(folder, test=11)


def test_shared_data_default_splits(shared_folder):
    task = load_task("gsm8k", data_dir=shared_folder("gsm8k"))
    assert (len(task.train), len(task.dev), len(task.test)) == (200, 300, 500)
    assert not {ex.question for ex in task.train} & {ex.question for ex in task.dev}
    first = json.loads((shared_folder("gsm8k") / "test.jsonl").open().readline())
    assert task.test[0].question == first["question"].strip()
    assert all(answer_match(ex, {"answer": ex.answer}) == 1.0 for ex in task.test)


def test_hf_hub_name_reads_train_and_test_through_load_hf(monkeypatch):
    """Online users may name the hub copy; offline here, so `load_hf` is replaced by a recorder."""
    import cotune.tasks.gsm8k as gsm8k
    from cotune.data import Dataset, Example

    calls = []

    def fake_load_hf(name, *, split, config, inputs, transform, limit):
        calls.append((name, split, config, limit))
        rows = [transform(_row(i if split == "train" else 100 + i)) for i in range(40 if split == "train" else 10)][
            :limit
        ]
        return Dataset([Example(r).with_inputs(*inputs) for r in rows])

    monkeypatch.setattr(gsm8k, "load_hf", fake_load_hf)
    task = load_task("gsm8k", data_dir=Path("hf:openai/gsm8k"), train=4, dev=6, test=3)  # the CLI passes a Path
    assert calls == [("openai/gsm8k", "train", "main", None), ("openai/gsm8k", "test", "main", 3)]
    assert (len(task.train), len(task.dev), len(task.test)) == (4, 6, 3) and task.test[0].answer == "101"
    assert task.data_dir == "hf:openai/gsm8k"
