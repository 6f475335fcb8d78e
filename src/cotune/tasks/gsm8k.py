"""GSM8K: grade-school math word problems with a numeric answer (chain of thought, numeric match).

Data: ``train.jsonl`` and ``test.jsonl`` with ``{"question", "answer"}`` rows, the gold number after
``####`` (openai/grade-school-math). Give the folder as ``data_dir``, or set ``$COTUNE_DATA_DIR`` to a
folder holding ``gsm8k/``; users who are online may pass ``data_dir="hf:openai/gsm8k"``.

Splits (defaults scaled for a CPU; the full set has 7,473 train and 1,319 test problems):
    dev   300  drawn from train.jsonl with the seed (cut first, so it stays fixed when train grows)
    train 200  drawn from the rest of train.jsonl with the seed
    test  500  the first 500 problems of test.jsonl, in file order (the seed does not change them)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cotune.data.dataset import Dataset
from cotune.data.loaders import load_hf, load_jsonl
from cotune.evaluate.metrics import numeric_match, parse_number
from cotune.program.chain_of_thought import ChainOfThought
from cotune.program.prediction import Prediction
from cotune.program.program import Program
from cotune.program.signature import Signature
from cotune.tasks.base import HF_PREFIX, Task, TaskInfo, check_fits, field_of, resolve_data_dir, resolve_sizes

INFO = TaskInfo(
    name="gsm8k",
    description="GSM8K grade-school math: word problem -> number (chain of thought)",
    inputs=("question",),
    outputs=("answer",),
    sizes={"train": 200, "dev": 300, "test": 500},
    metric="accuracy",
    metrics=("accuracy",),
    needs_data_dir=True,
    source="train.jsonl, test.jsonl",
    hf_name="openai/gsm8k",
)

INSTRUCTION = (
    "Solve the math word problem. Think it through step by step, then give only the final number as "
    "the answer, without units or words."
)


# Tokens of reasoning before the answer is forced. A chain that runs into the budget is made to answer
# mid-calculation: Qwen2.5-Coder-0.5B writes numbered plans, and with the generic 160 tokens 60% of its
# zero-shot GSM8K chains were cut (those scored 6%); at 320 its zero-shot dev accuracy went 8% -> 16% (50 dev
# questions, 1.5x the time): benchmarks/results/table1-gsm8k-typed*.json.
REASONING_BUDGET = 320


def signature() -> Signature:
    """question → answer, a number (so constrained decoding writes only the number)."""
    return Signature.parse("question -> answer: float", INSTRUCTION, answer="the final number only")


class GSM8KSolver(Program):
    """One chain-of-thought predictor, ``solve``: question → reasoning (up to ``reasoning_budget`` tokens) → answer."""

    def __init__(self, reasoning_budget: int = REASONING_BUDGET):
        self.solve = ChainOfThought(signature(), reasoning_budget=reasoning_budget)

    def forward(self, question: str) -> Prediction:
        return self.solve(question=question)


def answer_match(example: Mapping[str, Any], prediction: Mapping[str, Any]) -> float:
    """1.0 when the predicted ``answer`` (a number, or the last number in text) equals the gold number."""
    predicted = field_of(prediction, "answer")
    return numeric_match(predicted, str(example["answer"])) if predicted else 0.0


_CALCULATOR = re.compile(r"<<[^>]*>>")


def parse_row(row: dict[str, Any]) -> dict[str, Any]:
    """``{"question", "answer": "solution #### 72"}`` → question, answer "72", reasoning (the solution).

    The solution is the ``reasoning`` of the chain of thought, so labeled demos show the worked solution
    and not a bare number (a model shown bare numbers answers in a few tokens, without reasoning). It
    drops the ``<<48/2=24>>`` calculator notes, which a model should not learn to write.

    Raises:
        ValueError: no ``####`` or no number after it (the loader reports file and line).
    """
    solution, sep, gold = str(row["answer"]).rpartition("####")
    gold = gold.strip().replace(",", "")
    if not sep or parse_number(gold) is None:
        raise ValueError(f"answer has no '#### <number>' ending: {row['answer']!r:.80}")
    return {
        "question": str(row["question"]).strip(),
        "answer": gold,
        "reasoning": _CALCULATOR.sub("", solution).strip(),
    }


def read_split(source: Path | str, split: str, limit: int | None = None) -> Dataset:
    """Read ``train`` or ``test`` from a folder (``<split>.jsonl``) or a hub name (``hf:openai/gsm8k``)."""
    if isinstance(source, str) and source.startswith(HF_PREFIX):
        name = source[len(HF_PREFIX) :]
        return load_hf(name, split=split, config="main", inputs=["question"], transform=parse_row, limit=limit)
    return load_jsonl(Path(source) / f"{split}.jsonl", inputs=["question"], transform=parse_row, limit=limit)


def load(*, data_dir: str | Path | None = None, seed: int = 0, **sizes: int | None) -> Task:
    """Load GSM8K from ``data_dir`` (see the module docstring for splits and data sources).

    Raises:
        ConfigError: no data folder given or configured; sizes that do not fit.
        DataError: a missing file or a malformed row (with file and line).
    """
    n = resolve_sizes("gsm8k", INFO.sizes, sizes)
    source = resolve_data_dir("gsm8k", data_dir, "train.jsonl", hf_name=INFO.hf_name)
    pool = read_split(source, "train")
    check_fits("gsm8k", {"train": n["train"], "dev": n["dev"]}, len(pool), "train.jsonl")
    dev, train = pool.split([n["dev"], n["train"]], seed=seed)
    test = read_split(source, "test", limit=n["test"]) if n["test"] else Dataset([])
    if len(test) < n["test"]:
        check_fits("gsm8k", {"test": n["test"]}, len(test), "test.jsonl")
    return Task(
        name="gsm8k",
        description=INFO.description,
        train=Dataset(train, "gsm8k-train"),
        dev=Dataset(dev, "gsm8k-dev"),
        test=Dataset(test, "gsm8k-test"),
        metric=answer_match,
        metrics={"accuracy": answer_match},
        make_program=GSM8KSolver,
        about=INFO,
        data_dir=source,
        seed=seed,
    )
