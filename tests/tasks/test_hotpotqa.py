from __future__ import annotations

import json
from pathlib import Path

import pytest

from cotune.errors import ConfigError, DataError
from cotune.evaluate import evaluate
from cotune.lm import FakeLM
from cotune.program import ChainOfThought
from cotune.tasks import load_task
from cotune.tasks.hotpotqa import MultiHopQA, answer_exact_match, answer_f1, gold_recall, retrieval_recall


def _corpus(n: int) -> list[dict]:
    docs = [{"title": f"Person {i}", "text": f"Person {i} was born in Town {i}."} for i in range(n)]
    docs += [{"title": f"Town {i}", "text": f"Town {i} lies in Country {i % 3}."} for i in range(n)]
    return docs + [{"title": "Army &amp; Navy", "text": "A shop."}]


def _questions(n: int) -> list[dict]:
    return [
        {
            "question": f"In which country was Person {i} born?",
            "answer": f"Country {i % 3}",
            "gold_titles": [f"Person {i}", f"Town {i}"],
            "type": "bridge",
            "level": "hard",
        }
        for i in range(n)
    ]


@pytest.fixture
def folder(tmp_path, write_jsonl):
    write_jsonl(tmp_path / "hotpotqa" / "questions.jsonl", _questions(30))
    write_jsonl(tmp_path / "hotpotqa" / "corpus.jsonl", _corpus(30))
    return tmp_path / "hotpotqa"


def _load(folder, **kw):
    return load_task("hotpotqa", data_dir=folder, **({"train": 10, "dev": 5, "test": 10} | kw))


class StubRetriever:
    """Returns fixed passages per query and remembers what it was asked."""

    def __init__(self):
        self.calls = []

    def __call__(self, query, k=3):
        self.calls.append((query, k))
        return ["Shared | in every hop", f"{query} | about {query}"][:k]


def _fake_lm(messages):
    system, user = messages[0]["content"], messages[-1]["content"]
    if "Search Query:" in system:
        hop = "second" if "[1]" in user else "first"  # a hop with context saw passages
        return f"Reasoning: look it up.\nSearch Query: {hop} query"
    return "Reasoning: the passages say so.\nAnswer: Country 1"


def test_program_has_two_query_hops_and_an_answer():
    program = MultiHopQA(StubRetriever())
    names = [name for name, _ in program.named_predictors()]
    assert names == ["queries[0]", "queries[1]", "answer"]
    sigs = {name: str(p.signature) for name, p in program.named_predictors()}
    assert sigs["queries[0]"] == sigs["queries[1]"] == "context, question -> reasoning, search_query"
    assert sigs["answer"] == "context, question -> reasoning, answer"
    assert all(isinstance(p, ChainOfThought) and p.lm is None for p in program.predictors())
    assert program.queries[0] is not program.queries[1]


def test_hops_and_k_are_parameters():
    program = MultiHopQA(StubRetriever(), hops=3, k=1)
    assert len(program.predictors()) == 4 and program.k == 1


def test_forward_accumulates_deduplicated_context():
    retriever = StubRetriever()
    program = MultiHopQA(retriever).bind(FakeLM(_fake_lm))
    pred = program(question="Where?")
    assert retriever.calls == [("first query", 3), ("second query", 3)]
    assert pred.answer == "Country 1"
    assert pred.context == [
        "Shared | in every hop",
        "first query | about first query",
        "second query | about second query",
    ]


def test_trace_names_each_hop_and_the_answer_sees_all_passages(folder):
    task = _load(folder)
    result = evaluate(task.program().bind(FakeLM(_fake_lm)), task.test[:2], task.metric, num_threads=2)
    steps = result.rows[0].trace
    assert [s.predictor for s in steps] == ["queries[0]", "queries[1]", "answer"]
    assert steps[0].inputs["context"] == [] and len(steps[2].inputs["context"]) == len(
        result.rows[0].prediction["context"]
    )


def test_deepcopy_shares_the_retriever(folder):
    task = _load(folder)
    program = task.program()
    assert program.deepcopy().retriever is program.retriever is task.retriever


@pytest.mark.parametrize(
    "predicted,gold,em,f1",
    [
        ("Chief of Protocol", "Chief of Protocol", 1.0, 1.0),
        ("the chief of protocol.", "Chief of Protocol", 1.0, 1.0),
        ("Yes", "yes", 1.0, 1.0),
        ("no", "yes", 0.0, 0.0),
        ("Chief Protocol", "Chief of Protocol", 0.0, 0.8),
        ("He was Chief of Protocol", "Chief of Protocol", 0.0, 0.75),
        ("", "yes", 0.0, 0.0),
    ],
)
def test_answer_metrics(predicted, gold, em, f1):
    assert answer_exact_match({"answer": gold}, {"answer": predicted}) == em
    assert answer_f1({"answer": gold}, {"answer": predicted}) == pytest.approx(f1)


@pytest.mark.parametrize("prediction", [{}, {"context": []}, {"answer": None}, None])
def test_answer_metrics_without_answer_score_zero(prediction):
    assert answer_exact_match({"answer": "yes"}, prediction) == answer_f1({"answer": "yes"}, prediction) == 0.0


@pytest.mark.parametrize(
    "passages,gold,recall",
    [
        (["A | x", "B | y"], ["A", "B"], 1.0),
        (["A | x", "C | y"], ["A", "B"], 0.5),
        (["A x", "B"], ["A", "B"], 0.0),  # not "Title | text": no title
        ([], ["A", "B"], 0.0),
        (["A | x | y"], ["A"], 1.0),
    ],
)
def test_gold_recall(passages, gold, recall):
    assert gold_recall(passages, gold) == recall


@pytest.mark.parametrize(
    "prediction,recall", [({"context": ["T | x"]}, 1.0), ({"answer": "x"}, 0.0), ({"context": "T | x"}, 0.0)]
)
def test_retrieval_recall_reads_the_prediction_context(prediction, recall):
    assert retrieval_recall({"gold_titles": ["T"]}, prediction) == recall


def test_metrics_include_em_f1_and_recall(folder):
    task = _load(folder)
    assert task.metric is answer_exact_match
    assert task.metrics == {"em": answer_exact_match, "f1": answer_f1, "recall": retrieval_recall}


def test_splits_are_disjoint_seeded_and_stable(folder):
    task, again, other = _load(folder, seed=1), _load(folder, seed=1), _load(folder, seed=2)
    assert (len(task.train), len(task.dev), len(task.test)) == (10, 5, 10)
    questions = [ex.question for split in ("train", "dev", "test") for ex in task.split(split)]
    assert len(set(questions)) == 25
    assert [list(task.split(s)) for s in ("train", "dev", "test")] == [
        list(again.split(s)) for s in ("train", "dev", "test")
    ]
    assert list(task.test) != list(other.test)
    small = _load(folder, seed=1, train=2)
    assert list(small.test) == list(task.test) and list(small.dev) == list(task.dev)


def test_titles_are_unescaped_in_corpus_and_gold(folder, write_jsonl):
    rows = _questions(30)
    rows[0]["gold_titles"] = ["Army &amp; Navy", "Town 0"]
    write_jsonl(folder / "questions.jsonl", rows)
    task = _load(folder, train=30, dev=0, test=0)
    assert ["Army & Navy", "Town 0"] in [ex.gold_titles for ex in task.train]
    assert task.retriever("Army Navy shop", k=1) == ["Army & Navy | A shop."]


def test_bm25_finds_both_hops_on_the_toy_corpus(folder):
    task = _load(folder)
    ex = task.test[0]
    first = task.retriever(ex.question, k=1)
    town = first[0].split(" born in ")[1].rstrip(".")
    assert gold_recall(first + task.retriever(town, k=2), ex.gold_titles) == 1.0


def test_gold_title_missing_from_corpus_is_a_data_error(folder, write_jsonl):
    rows = _questions(30)
    rows[4]["gold_titles"] = ["Person 4", "Nowhere"]
    write_jsonl(folder / "questions.jsonl", rows)
    with pytest.raises(DataError, match=r"question 5: gold title\(s\) \['Nowhere'\]"):
        _load(folder)


def test_malformed_corpus_row_names_file_and_line(folder, write_jsonl):
    rows = [json.dumps(r) for r in _corpus(30)]
    rows[6] = json.dumps({"title": "No text"})
    write_jsonl(folder / "corpus.jsonl", rows)
    with pytest.raises(DataError, match="text") as info:
        _load(folder)
    assert info.value.path == folder / "corpus.jsonl" and info.value.line == 7


def test_bad_gold_titles_row_names_file_and_line(folder, write_jsonl):
    rows = _questions(30)
    rows[1]["gold_titles"] = "Person 1"
    write_jsonl(folder / "questions.jsonl", rows)
    with pytest.raises(DataError, match="gold_titles must be a list") as info:
        _load(folder)
    assert info.value.line == 2


def test_data_dir_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"--data-dir.*local files only"):
        load_task("hotpotqa")
    with pytest.raises(ConfigError, match="local files only"):
        load_task("hotpotqa", data_dir="hf:hotpot_qa")
    (tmp_path / "hotpotqa").mkdir()
    with pytest.raises(DataError, match="no such file") as info:
        load_task("hotpotqa", data_dir=tmp_path)
    assert info.value.path == tmp_path / "hotpotqa" / "questions.jsonl"


@pytest.fixture(scope="module")
def shared_task():
    folder = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "hotpotqa").resolve()
    if not folder.is_dir():
        pytest.skip(f"shared HotPotQA data not found at {folder}")
    return load_task("hotpotqa", data_dir=folder)


def test_shared_data_default_splits(shared_task):
    sizes = {s: len(shared_task.split(s)) for s in ("train", "dev", "test")}
    assert sizes == {"train": 300, "dev": 150, "test": 500}
    questions = [ex.question for s in ("train", "dev", "test") for ex in shared_task.split(s)]
    assert len(set(questions)) == 950
    assert len(shared_task.retriever) == 6756


def test_shared_data_question_retrieval_recall(shared_task):
    """Searching with the question alone already finds most gold paragraphs in this small corpus."""
    recalls = [gold_recall(shared_task.retriever(ex.question, k=3), ex.gold_titles) for ex in shared_task.dev]
    assert sum(recalls) / len(recalls) > 0.6


def test_saved_program_loads_into_a_fresh_one(folder, tmp_path):
    task = _load(folder)
    program = task.program()
    program.queries[1].instruction = "Search for the bridge entity."
    program.answer.demos = [task.train[0].copy(context=["A | b"])]
    fresh = task.program().load(program.save(tmp_path / "p.json"), bind_saved_lm=False)
    assert (
        fresh.queries[1].instruction == "Search for the bridge entity."
        and fresh.queries[0].instruction != fresh.queries[1].instruction
    )
    assert fresh.answer.demos[0]["answer"] == task.train[0].answer
