from __future__ import annotations

import html
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cotune.errors import ConfigError, DataError
from cotune.retrieve import BM25Retriever, Hit, passage_title
from cotune.retrieve.bm25 import tokenize

CORPUS = [
    {"title": "Paris", "text": "Paris is the capital and largest city of France."},
    {"title": "Berlin", "text": "Berlin is the capital of Germany."},
    {"title": "Beyoncé", "text": "An American singer from Houston."},
    {"title": "Seine", "text": "The Seine river flows through Paris."},
]


@pytest.fixture
def retriever():
    return BM25Retriever(CORPUS)


def test_call_returns_title_bar_text_passages_best_first(retriever):
    assert retriever("capital of Germany", k=1) == ["Berlin | Berlin is the capital of Germany."]
    assert retriever("river Paris", k=2)[0].startswith("Seine | ")


def test_search_returns_titles_scores_and_positions(retriever):
    hits = retriever.search("Paris France", k=3)
    assert all(isinstance(h, Hit) for h in hits)
    assert hits[0].title == "Paris" and hits[0].index == 0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].passage == retriever("Paris France", k=1)[0]


def test_title_words_are_searchable_and_accents_fold(retriever):
    assert retriever.search("beyonce", k=1)[0].title == "Beyoncé"


@pytest.mark.parametrize("query", ["", "   ", "the of and", "zzzz unknownword", "!!!"])
def test_queries_matching_nothing_return_no_passages(retriever, query):
    assert retriever(query, k=3) == []


def test_k_larger_than_the_corpus_returns_only_matching_passages(retriever):
    hits = retriever.search("capital", k=50)
    assert sorted(h.title for h in hits) == ["Berlin", "Paris"]


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3"])
def test_bad_k_is_refused(retriever, k):
    with pytest.raises(ConfigError, match="k must be"):
        retriever.search("Paris", k=k)


def test_ties_are_broken_by_corpus_order():
    r = BM25Retriever(["apple pie", "apple tart", "apple cake"])
    assert [h.index for h in r.search("apple", k=3)] == [0, 1, 2]
    assert r("apple", k=1) == ["apple pie"]  # no title: the passage is the text


@pytest.mark.parametrize(
    "corpus,message", [([], "empty corpus"), ([{"title": "x"}], "corpus item 0"), ([3], "corpus item 0")]
)
def test_bad_corpus_is_a_data_error(corpus, message):
    with pytest.raises(DataError, match=message):
        BM25Retriever(corpus)


@pytest.mark.parametrize(
    "passage,title", [("Paris | text", "Paris"), ("A | b | c", "A"), ("no title here", ""), ("Paris|text", "")]
)
def test_passage_title(passage, title):
    assert passage_title(passage) == title


def test_tokenize_lowercases_folds_accents_and_drops_stopwords():
    assert tokenize("The Café in SÃO Paulo", frozenset({"the", "in"})) == ["cafe", "sao", "paulo"]


def test_index_is_built_once_under_concurrent_first_searches(monkeypatch):
    builds = []
    original = BM25Retriever._build

    def counting_build(self):
        builds.append(1)
        return original(self)

    monkeypatch.setattr(BM25Retriever, "_build", counting_build)
    retriever = BM25Retriever(CORPUS * 50)
    queries = ["capital of France", "Germany", "river", "singer Houston"] * 25
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda q: retriever.search(q, k=5), queries))
    assert len(builds) == 1
    assert concurrent == [retriever.search(q, k=5) for q in queries]


# -- the shared HotPotQA corpus -------------------------------------------------------------------------

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "hotpotqa"


@pytest.fixture(scope="module")
def hotpot():
    if not (DATA / "corpus.jsonl").is_file():
        pytest.skip(f"shared HotPotQA corpus not found at {DATA.resolve()}")
    with (DATA / "corpus.jsonl").open() as f:
        corpus = [json.loads(line) for line in f]
    for doc in corpus:
        doc["title"] = html.unescape(doc["title"])
    return BM25Retriever(corpus)


@pytest.mark.parametrize(
    "question,gold",
    [
        ("Were Scott Derrickson and Ed Wood of the same nationality?", ["Scott Derrickson", "Ed Wood"]),
        (
            "Are the Laleli Mosque and Esma Sultan Mansion located in the same neighborhood?",
            ["Laleli Mosque", "Esma Sultan Mansion"],
        ),
        ("What science fantasy young adult series, told in first person, has companion books?", ["Animorphs"]),
    ],
)
def test_gold_paragraphs_whose_title_words_are_in_the_question_come_first(hotpot, question, gold):
    titles = [h.title for h in hotpot.search(question, k=3)]
    assert set(gold) <= set(titles)
    passage = hotpot(gold[0], k=1)[0]
    assert passage.startswith(f"{gold[0]} | ")


def test_corpus_size(hotpot):
    assert len(hotpot) == 6756
