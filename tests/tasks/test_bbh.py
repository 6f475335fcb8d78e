"""BIG-Bench Hard: option parsing, targets, splits, metrics, errors; the generic multiple-choice loader."""

from __future__ import annotations

import json
import re

import pytest

from cotune.errors import ConfigError, DataError, UnknownChoiceError
from cotune.tasks import bbh, load_task
from cotune.tasks.multiple_choice import (
    MultipleChoiceQA,
    answer_index,
    choice_match,
    format_options,
    load_multiple_choice,
    make_task,
    mc_example,
)

MC_ROW = {"input": "Which is red?\nOptions:\n(A) sky\n(B) blood\n(C) grass", "target": "(B)"}


def write_bbh(root, subtask="hyperbaton", rows=None, n=12, description="Order adjectives correctly."):
    """A tiny BBH folder: ``root/bbh/<subtask>.json`` and ``root/cot-prompts/<subtask>.txt``."""
    rows = rows if rows is not None else [
        {"input": f"Q{i}?\nOptions:\n(A) first {i}\n(B) second {i}", "target": "(A)" if i % 2 else "(B)"} for i in range(n)
    ]  # fmt: skip
    (root / "bbh").mkdir(parents=True, exist_ok=True)
    (root / "bbh" / f"{subtask}.json").write_text(json.dumps({"examples": rows}))
    (root / "cot-prompts").mkdir(exist_ok=True)
    (root / "cot-prompts" / f"{subtask}.txt").write_text(f"CANARY\n-----\n{description}\n\nQ: ...\n")
    return root


# -- parsing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (MC_ROW["input"], ("Which is red?", ["sky", "blood", "grass"])),
        ("Find a movie like X:\nOptions:\n(A) Up\n(B) Heat", ("Find a movie like X:", ["Up", "Heat"])),
        ("Valid?\nOptions:\n- valid\n- invalid", None),  # dash options: free text
        ("Which is sarcastic?\nOptions:\n(A) The NB", None),  # cut off after one option
        ("Pick\nOptions:\n(A) x\n(C) y", None),  # letters out of order
        ("No options here", None),
    ],
)
def test_parse_options(text, expected):
    assert bbh.parse_options(text) == expected


@pytest.mark.parametrize(
    "said, index",
    [("(B)", 1), ("B", 1), ("b", 1), ("B)", 1), ("B. blood", 1), ("(B) blood", 1), ("**(B)**", 1),
     ("The answer is (B).", 1), ("Option B", 1), ("blood", 1), ("It must be blood.", 1),
     ("(A) or (B)", None), ("D", None), ("", None), ("A sky is blue", 0), ("the answer is a guess", None)],
)  # fmt: skip
def test_answer_letters_are_read_leniently(said, index):
    assert answer_index(said, ["sky", "blood", "grass"]) == index


def test_multiple_choice_files_become_question_options_and_letter(tmp_path):
    write_bbh(tmp_path, rows=[MC_ROW] * 10 + [{"input": MC_ROW["input"], "target": "Blood, red"}])
    task = load_task("bbh:hyperbaton", data_dir=tmp_path, train=2, dev=2)
    ex = task.train[0]
    assert (ex["question"], ex["options"], ex["answer"]) == ("Which is red?", ["sky", "blood", "grass"], "B")
    assert ex["choices"] == "(A) sky\n(B) blood\n(C) grass" and sorted(ex.input_keys) == ["options", "question"]
    assert len(task.train) + len(task.dev) + len(task.test) == 10  # the row with a text target is dropped
    assert task.metric is choice_match and isinstance(task.program(), MultipleChoiceQA)
    assert task.program().choose.instruction.startswith("Order adjectives correctly.")
    answer = task.program().choose.signature.outputs[-1]  # a choice of the subtask's letters (constrained: one)
    assert (answer.name, answer.type.kind, answer.type.choices) == ("answer", "choice", ("A", "B", "C"))


def test_free_text_files_keep_question_and_answer(tmp_path):
    rows = [{"input": f"not ( True ) and {i}", "target": "False"} for i in range(8)]
    write_bbh(tmp_path, "boolean_expressions", rows=rows, description="Evaluate Boolean expressions.")
    task = load_task("bbh:boolean_expressions", data_dir=tmp_path, train=2, dev=2)
    assert set(task.train[0]) == {"question", "answer"} and task.train[0]["answer"] == "False"
    assert [n for n, _ in task.program().named_predictors()] == ["solve"]
    assert task.metric(task.train[0], {"answer": " false. "}) == 1.0
    assert task.metric(task.train[0], {"answer": "True"}) == 0.0


@pytest.mark.parametrize(
    "predicted, gold, score",
    [(") ] >", ") ] >", 1.0), (")]>", ") ] >", 0.0), ("**Yes**", "Yes", 1.0), ("7.", "7", 1.0), ("", "0", 0.0)],
)
def test_free_text_exact_match_keeps_punctuation(predicted, gold, score):
    assert bbh.answer_match({"answer": gold}, {"answer": predicted}) == score


# -- splits and names -----------------------------------------------------------------------------------


def test_default_splits_hold_out_100_and_test_stays_fixed(tmp_path):
    write_bbh(tmp_path, n=130)
    task = load_task("bbh:hyperbaton", data_dir=tmp_path, seed=1)
    assert (len(task.train), len(task.dev), len(task.test)) == (50, 50, 30)
    smaller = load_task("bbh:hyperbaton", data_dir=tmp_path, seed=1, train=10)
    assert list(smaller.test) == list(task.test) and list(smaller.dev) == list(task.dev)
    assert list(smaller.train) == list(task.train)[:10]
    other = load_task("bbh:hyperbaton", data_dir=tmp_path, seed=2)
    assert list(other.test) != list(task.test)
    with pytest.raises(ConfigError, match="need"):
        load_task("bbh:hyperbaton", data_dir=tmp_path, test=100)


def test_data_dir_may_be_the_folder_its_parent_or_the_json_folder(tmp_path):
    write_bbh(tmp_path / "bbh")
    for where in (tmp_path, tmp_path / "bbh", tmp_path / "bbh" / "bbh"):
        task = load_task("bbh:hyperbaton", data_dir=where, train=2, dev=2)
        assert len(task.test) == 8 and "Order adjectives" in task.description


def test_unknown_or_missing_subtask_lists_the_27():
    with pytest.raises(UnknownChoiceError) as info:
        load_task("bbh:date_understandin", data_dir=".")
    assert info.value.choices == sorted(bbh.SUBTASKS) and len(bbh.SUBTASKS) == 27
    assert "date_understanding" in str(info.value)
    with pytest.raises(UnknownChoiceError, match="bbh:<subtask>"):
        load_task("bbh", data_dir=".")


def test_missing_file_and_broken_json_are_data_errors(tmp_path):
    write_bbh(tmp_path)
    with pytest.raises(DataError, match="date_understanding.json"):
        load_task("bbh:date_understanding", data_dir=tmp_path)
    (tmp_path / "bbh" / "hyperbaton.json").write_text('{"rows": []}')
    with pytest.raises(DataError, match="not a BIG-Bench Hard file"):
        load_task("bbh:hyperbaton", data_dir=tmp_path)


# -- the real files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("subtask", bbh.SUBTASKS)
def test_real_files_parse_and_targets_map_back(shared_folder, subtask):
    folder = shared_folder("bbh")
    rows = json.loads((folder / "bbh" / f"{subtask}.json").read_text())["examples"]
    examples, multiple_choice, dropped = bbh.read_examples(folder / "bbh" / f"{subtask}.json")
    assert len(examples) + dropped == len(rows) and dropped <= 2
    pairs = {(row["input"].strip(), row["target"].strip()) for row in rows}  # a few inputs repeat
    for ex in examples:
        if multiple_choice:
            target = f"({ex['answer']})"
            assert (f"{ex['question']}\nOptions:\n{ex['choices']}", target) in pairs
            assert len(ex["options"]) >= 2 and choice_match(ex, {"answer": target}) == 1.0
        else:
            assert (ex["question"], ex["answer"]) in pairs and "options" not in ex


def test_real_date_understanding(shared_folder):
    task = load_task("bbh:date_understanding", data_dir=shared_folder("bbh"))
    assert (len(task.train), len(task.dev), len(task.test)) == (50, 50, 150)
    ex = task.test[0]
    assert len(ex["options"]) == 6 and re.fullmatch(r"[A-F]", ex["answer"])
    assert task.program().choose.instruction.startswith("Infer the date from context.")
    assert bbh.is_multiple_choice(task)
    assert not bbh.is_multiple_choice(load_task("bbh:navigate", data_dir=shared_folder("bbh")))


def test_multiple_choice_subtasks_are_the_lettered_ones(shared_folder):
    folder = shared_folder("bbh")
    kinds = {s: bbh.read_examples(folder / "bbh" / f"{s}.json")[1] for s in bbh.SUBTASKS}
    assert sum(kinds.values()) == 17
    assert kinds["date_understanding"] and kinds["snarks"] and not kinds["navigate"] and not kinds["word_sorting"]


# -- the generic multiple-choice loader -----------------------------------------------------------------


def test_load_jsonl_csv_and_arc_style(tmp_path, write_jsonl):
    jsonl = write_jsonl(tmp_path / "mc.jsonl", [
        {"question": "2+2?", "options": ["3", "4"], "answer": "(B)"},
        {"question": "3+3?", "options": ["6", "7"], "answer": 0},
        {"question": "Sky?", "options": {"text": ["blue", "red"], "label": ["1", "2"]}, "answer": "1"},
    ])  # fmt: skip
    assert [ex["answer"] for ex in load_multiple_choice(jsonl)] == ["B", "A", "A"]
    csv = tmp_path / "mc.csv"
    csv.write_text('q,A,B,C,gold\n"Red, or blue?",red,blue,,blue\n')
    ex = load_multiple_choice(csv, question_field="q", answer_field="gold", option_fields=["A", "B", "C"])[0]
    assert (ex["question"], ex["options"], ex["answer"]) == ("Red, or blue?", ["red", "blue"], "B")
    joined = tmp_path / "joined.csv"
    joined.write_text('question,options,answer\nPick,"[""x"", ""y""]",y\nPick,x|y|z,C\n')
    assert [e["answer"] for e in load_multiple_choice(joined)] == ["B", "C"]


def test_an_answer_that_names_no_option_is_a_data_error_with_its_line(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "mc.jsonl", [
        {"question": "2+2?", "options": ["3", "4"], "answer": "B"},
        {"question": "2+3?", "options": ["3", "4"], "answer": "E"},
    ])  # fmt: skip
    with pytest.raises(DataError, match=r"mc.jsonl:2: .*names none"):
        load_multiple_choice(path)


def test_make_task_and_program_on_generic_data():
    from cotune.lm import FakeLM

    data = [mc_example(f"{i}+1?", [str(i + 1), str(i + 2)], str(i + 1)) for i in range(10)]
    task = make_task("sums", data, train=4, dev=2, seed=0)
    assert (len(task.train), len(task.dev), len(task.test)) == (4, 2, 4)
    program = task.program().bind(FakeLM(["Reasoning: add one.\nAnswer: A"]))
    assert all(task.metric(ex, program(**ex.inputs())) == 1.0 for ex in task.test)
    assert format_options(["x", "y"]) == "(A) x\n(B) y"


# -- the real model -------------------------------------------------------------------------------------


@pytest.mark.integration
def test_bbh_multiple_choice_task_runs_on_smollm2(shared_folder, tmp_path, monkeypatch):
    from cotune.evaluate import evaluate
    from cotune.lm.registry import load

    monkeypatch.setenv("COTUNE_REQUEST_CACHE", str(tmp_path / "requests.sqlite"))
    task = load_task("bbh:logical_deduction_three_objects", data_dir=shared_folder("bbh"))
    program = task.program().bind(load("smollm2-135m"))
    program.choose.config["max_tokens"] = 96
    result = evaluate(program, task.test[:2], task.metric, num_threads=2, max_errors=0)
    assert result.n == 2 and result.errors == 0 and result.usage.calls == 2
    for row in result.rows:
        assert "Choices:\n(A) " in row.trace[0].messages[-1]["content"]
        if row.error_kind is None:
            assert "answer" in row.prediction and row.score in (0.0, 1.0)
        else:
            assert row.error_kind == "parse" and isinstance(row.raw, str)
