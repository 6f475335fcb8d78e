"""HotPotQA: multi-hop questions answered by a two-hop retrieve-and-read program (exact match).

Data (local files only; there is no hub copy of this corpus): a folder with
    questions.jsonl  {"question", "answer", "gold_titles", "type", "level"}  (1,086 hard dev questions)
    corpus.jsonl     {"title", "text"}                                     (6,756 Wikipedia paragraphs)
Give it as ``data_dir`` or set ``$COTUNE_DATA_DIR`` to a folder holding ``hotpotqa/``.

Splits: the paper used 1,000 train / 500 dev / 1,500 test; with 1,086 questions the defaults are
300 train / 150 dev / 500 test (950 in all): test stays the largest so scores are stable, and train
still feeds bootstrapping (which uses a few dozen) and fine-tuning. The questions are shuffled with
the seed; test is cut first, then dev, so a smaller train set leaves them unchanged.

Titles in the files are HTML-escaped ("Army &amp; Navy"); they are unescaped on loading, in the
corpus and in ``gold_titles`` alike, so recall compares like with like.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cotune.data.dataset import Dataset
from cotune.data.loaders import load_jsonl
from cotune.errors import DataError
from cotune.evaluate.metrics import exact_match, token_f1
from cotune.program.chain_of_thought import ChainOfThought
from cotune.program.prediction import Prediction
from cotune.program.program import Program
from cotune.program.signature import Signature
from cotune.retrieve.bm25 import BM25Retriever, passage_title
from cotune.tasks.base import Task, TaskInfo, check_fits, field_of, resolve_data_dir, resolve_sizes

INFO = TaskInfo(
    name="hotpotqa",
    description="HotPotQA multi-hop QA: 2 retrieval hops (BM25, 3 passages each) then answer",
    inputs=("question",),
    outputs=("answer",),
    sizes={"train": 300, "dev": 150, "test": 500},
    metric="em",
    metrics=("em", "f1", "recall"),
    needs_data_dir=True,
    source="questions.jsonl, corpus.jsonl",
)

QUERY_INSTRUCTION = "Write a simple search query that will help answer a complex question."
ANSWER_INSTRUCTION = "Answer questions with a short factoid answer."
CONTEXT_DESC = "may contain relevant facts"


def query_signature() -> Signature:
    return Signature.parse(
        "context, question -> search_query", QUERY_INSTRUCTION, context=CONTEXT_DESC, search_query="a few keywords"
    )


def answer_signature() -> Signature:
    return Signature.parse(
        "context, question -> answer", ANSWER_INSTRUCTION, context=CONTEXT_DESC, answer="often between 1 and 5 words"
    )


class MultiHopQA(Program):
    """The paper's program: each hop writes a search query from the context so far and adds the ``k``
    passages it retrieves (duplicates dropped); then the answer is written from the whole context.

    Predictors: ``queries[0]`` … ``queries[hops-1]`` and ``answer``, all chain of thought. The returned
    prediction also carries ``context`` (the passages read), which `retrieval_recall` scores.

    Args:
        retriever: any callable ``(query, k) -> list[str]`` of passages (``"Title | text"``).
        hops: retrieval hops (the paper: 2).
        k: passages per hop (the paper: 3).

    Example:
        >>> from cotune.lm.fake import FakeLM
        >>> docs = lambda query, k: [f"{query} | about {query}"]
        >>> lm = FakeLM(lambda m: "Answer: Paris" if "Answer:" in m[0]["content"] else "Search Query: France")
        >>> pred = MultiHopQA(docs).bind(lm)(question="Capital of France?")
        >>> pred.answer, pred.context
        ('Paris', ['France | about France'])
    """

    def __init__(self, retriever: Callable[..., Sequence[str]], hops: int = 2, k: int = 3):
        self.retriever, self.hops, self.k = retriever, hops, k
        self.queries = [ChainOfThought(query_signature()) for _ in range(hops)]
        self.answer = ChainOfThought(answer_signature())

    def forward(self, question: str) -> Prediction:
        context: list[str] = []
        for hop in self.queries:
            query = hop(context=context, question=question).search_query
            for passage in self.retriever(query, k=self.k):
                if passage not in context:
                    context.append(passage)
        answer = self.answer(context=context, question=question)
        return Prediction(answer.to_dict() | {"context": context})


# -- metrics ------------------------------------------------------------------------------------------


def answer_exact_match(example: Mapping[str, Any], prediction: Mapping[str, Any]) -> float:
    """SQuAD exact match of the predicted ``answer`` (case, punctuation and articles ignored)."""
    predicted = field_of(prediction, "answer")
    return exact_match(predicted, str(example["answer"])) if predicted else 0.0


def answer_f1(example: Mapping[str, Any], prediction: Mapping[str, Any]) -> float:
    """SQuAD token F1 of the predicted ``answer``: partial credit for partial overlap."""
    predicted = field_of(prediction, "answer")
    return token_f1(predicted, str(example["answer"])) if predicted else 0.0


def gold_recall(passages: Sequence[str], gold_titles: Sequence[str]) -> float:
    """Share of ``gold_titles`` whose paragraph is among ``passages`` (``"Title | text"`` strings).

    >>> gold_recall(["A | x", "C | y"], ["A", "B"])
    0.5
    """
    if not gold_titles:
        return 0.0
    found = {passage_title(p) for p in passages}
    return sum(t in found for t in gold_titles) / len(gold_titles)


def retrieval_recall(example: Mapping[str, Any], prediction: Mapping[str, Any]) -> float:
    """`gold_recall` of the ``context`` a `MultiHopQA` prediction carries (0 when it carries none)."""
    context = prediction.get("context") if isinstance(prediction, Mapping) else None
    if not isinstance(context, (list, tuple)):
        return 0.0
    return gold_recall([str(p) for p in context], list(example["gold_titles"]))


# -- data ---------------------------------------------------------------------------------------------


def _question_row(row: dict[str, Any]) -> dict[str, Any]:
    titles = row["gold_titles"]
    if not isinstance(titles, list) or not all(isinstance(t, str) for t in titles):
        raise ValueError(f"gold_titles must be a list of strings, got {titles!r:.80}")
    return {
        "question": str(row["question"]).strip(),
        "answer": str(row["answer"]).strip(),
        "gold_titles": [html.unescape(t) for t in titles],
        "type": str(row.get("type", "")),
        "level": str(row.get("level", "")),
    }


def _corpus_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"title": html.unescape(str(row["title"])), "text": str(row["text"])}


def load_corpus(data_dir: str | Path) -> list[dict[str, str]]:
    """The paragraphs of ``corpus.jsonl`` as ``{"title", "text"}`` dicts (titles unescaped)."""
    return [ex.to_dict() for ex in load_jsonl(Path(data_dir) / "corpus.jsonl", transform=_corpus_row)]


def load(*, data_dir: str | Path | None = None, seed: int = 0, **sizes: int | None) -> Task:
    """Load HotPotQA from ``data_dir``; the task's ``retriever`` is a BM25 index over the corpus
    (built on the first search).

    Raises:
        ConfigError: no data folder given or configured; sizes that do not fit.
        DataError: a missing file, a malformed row (with file and line), or a gold title not in the corpus.
    """
    n = resolve_sizes("hotpotqa", INFO.sizes, sizes)
    folder = resolve_data_dir("hotpotqa", data_dir, "questions.jsonl")
    path = Path(folder)
    questions = load_jsonl(path / "questions.jsonl", inputs=["question"], transform=_question_row)
    corpus = load_corpus(path)
    _check_gold_titles(questions, {doc["title"] for doc in corpus}, path)
    check_fits("hotpotqa", n, len(questions), "questions.jsonl")
    test, dev, train = questions.split([n["test"], n["dev"], n["train"]], seed=seed)
    retriever = BM25Retriever(corpus)
    return Task(
        name="hotpotqa",
        description=INFO.description,
        train=Dataset(train, "hotpotqa-train"),
        dev=Dataset(dev, "hotpotqa-dev"),
        test=Dataset(test, "hotpotqa-test"),
        metric=answer_exact_match,
        metrics={"em": answer_exact_match, "f1": answer_f1, "recall": retrieval_recall},
        make_program=functools.partial(MultiHopQA, retriever),
        about=INFO,
        data_dir=path,
        seed=seed,
        retriever=retriever,
    )


def _check_gold_titles(questions: Dataset, titles: set[str], folder: Path) -> None:
    """A gold title missing from the corpus means mismatched files: recall would be silently capped."""
    for row, ex in enumerate(questions, 1):
        missing = [t for t in ex["gold_titles"] if t not in titles]
        if missing:
            raise DataError(
                f"question {row}: gold title(s) {missing} are not in {folder / 'corpus.jsonl'}; "
                "are the two files from the same release?",
                path=folder / "questions.jsonl",
            )
