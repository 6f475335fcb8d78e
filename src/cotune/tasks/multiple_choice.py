"""Multiple-choice tasks: options, answer letters, a chain-of-thought program, the metric and a loader.

A multiple-choice example has these fields:

- ``question``: the question text (input);
- ``options``: the options as a list of strings (input; `ChoiceShuffleEnsemble` permutes this list);
- ``answer``: the letter of the correct option, ``"B"``;
- ``choices``: the options as the lines the model sees, ``"(A) ...\\n(B) ..."``. It is derived from
  ``options`` and kept in the example so that labeled demos show the options exactly as the program does.

`MultipleChoiceQA` formats ``options`` into ``choices`` on every call, so a permuted ``options`` list is
a different prompt. `choice_match` reads the predicted letter leniently: ``"(B)"``, ``"B"``, ``"B)"``,
``"(B) 12/25/1937"``, ``"Option B"`` or the option's text all count as B.

Example:
    >>> from cotune.lm import FakeLM
    >>> ex = mc_example("2+2?", ["3", "4", "5"], "4")
    >>> ex["answer"], ex["choices"].splitlines()[1]
    ('B', '(B) 4')
    >>> program = MultipleChoiceQA().bind(FakeLM(["Reasoning: 2+2 is 4.\\nAnswer: (B)"]))
    >>> choice_match(ex, program(**ex.inputs()))
    1.0
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cotune.data.dataset import Dataset
from cotune.data.example import Example
from cotune.data.loaders import load_csv, load_hf, load_jsonl
from cotune.errors import ConfigError
from cotune.program.chain_of_thought import ChainOfThought
from cotune.program.choices import LETTERS, answer_index, answer_letter, format_options, option_letter
from cotune.program.predict import Predict
from cotune.program.prediction import Prediction
from cotune.program.program import Program
from cotune.program.signature import Signature
from cotune.tasks.base import HF_PREFIX, Task, check_fits, field_of

INPUTS = ("question", "options")

INSTRUCTION = (
    "Answer the multiple-choice question. Think it through step by step, then give the letter of the "
    "single correct option as the answer."
)


def choice_match(example: Mapping[str, Any], prediction: Mapping[str, Any]) -> float:
    """1.0 when the predicted ``answer`` names the gold option (letter or option text), else 0.0."""
    options = example.get("options")
    predicted = answer_index(field_of(prediction, "answer"), options)
    return float(predicted is not None and predicted == answer_index(example["answer"], options))


# -- examples -----------------------------------------------------------------------------------------


def mc_fields(question: Any, options: Sequence[Any], answer: Any) -> dict[str, Any]:
    """The fields of a multiple-choice example; ``answer`` may be a letter, ``"(B)"``, an index or the option text.

    Raises:
        ValueError: fewer than two options, more than 26, or an answer that names no option.
    """
    options = [str(o).strip() for o in options]
    if not 2 <= len(options) <= len(LETTERS):
        raise ValueError(f"a multiple-choice question needs 2 to {len(LETTERS)} options, got {len(options)}")
    if isinstance(answer, int) and not isinstance(answer, bool):
        index = answer if 0 <= answer < len(options) else None
    else:
        index = answer_index(answer, options)
    if index is None:
        raise ValueError(f"answer {answer!r} names none of the {len(options)} options {options}")
    return {
        "question": str(question).strip(),
        "options": options,
        "answer": LETTERS[index],
        "choices": format_options(options),
    }


def mc_example(question: Any, options: Sequence[Any], answer: Any, **extra: Any) -> Example:
    """A multiple-choice `Example` with inputs ``question`` and ``options`` (see `mc_fields`)."""
    return Example({**mc_fields(question, options, answer), **extra}).with_inputs(*INPUTS)


# -- program ------------------------------------------------------------------------------------------


def signature(instruction: str | None = None, letters: int | None = None) -> Signature:
    """question, choices → answer; with ``letters``, the answer is a typed choice of the first that many
    option letters (so constrained decoding writes exactly one letter)."""
    answer = "answer"
    if letters is not None:
        if not 1 <= letters <= len(LETTERS):
            raise ConfigError(f"letters must be in 1..{len(LETTERS)}, got {letters}")
        answer += ": Literal[" + ", ".join(repr(option_letter(i)) for i in range(letters)) + "]"
    return Signature.parse(
        f"question, choices -> {answer}",
        instruction or INSTRUCTION,
        choices="the options, one per line",
        answer="the letter of the correct option",
    )


class MultipleChoiceQA(Program):
    """One predictor, ``choose``: question + lettered options → (reasoning →) answer letter.

    Args:
        instruction: the task instruction (default: a generic multiple-choice one).
        cot: chain of thought (True) or a direct answer (False).
        letters: the most options an example has; the answer is then a choice of that many letters.
    """

    def __init__(self, instruction: str | None = None, *, cot: bool = True, letters: int | None = None):
        sig = signature(instruction, letters)
        self.choose = ChainOfThought(sig) if cot else Predict(sig)

    def forward(self, question: str, options: Sequence[str]) -> Prediction:
        return self.choose(question=question, choices=format_options(options))


# -- loading ------------------------------------------------------------------------------------------


def row_reader(
    *,
    question_field: str = "question",
    options_field: str = "options",
    answer_field: str = "answer",
    option_fields: Sequence[str] | None = None,
    separator: str = "|",
):
    """A ``transform`` for the `cotune.data` loaders: a raw row → multiple-choice fields.

    Options come from ``option_fields`` (one column each, empty cells skipped), or from ``options_field``
    holding a list, a JSON list, a ``separator``-joined string, or a ``{"text": [...], "label": [...]}``
    mapping (ARC style; the answer may then be one of the labels). The answer is a letter, ``"(B)"``,
    the option's text, or a 0-based integer index (JSON/HF integers only: a CSV ``"1"`` is text).
    """

    def read(row: dict[str, Any]) -> dict[str, Any]:
        answer = row[answer_field]
        if option_fields:
            options = [row[f] for f in option_fields if row.get(f) not in (None, "")]
        else:
            options = row[options_field]
            if isinstance(options, Mapping):
                labels = [str(x) for x in options.get("label", [])]
                options = list(options["text"])
                if str(answer) in labels:
                    answer = labels.index(str(answer))
            elif isinstance(options, str):
                text = options.strip()
                options = json.loads(text) if text.startswith("[") else [o for o in text.split(separator) if o.strip()]
        return mc_fields(row[question_field], options, answer)

    return read


def load_multiple_choice(
    source: str | Path,
    *,
    split: str = "train",
    question_field: str = "question",
    options_field: str = "options",
    answer_field: str = "answer",
    option_fields: Sequence[str] | None = None,
    separator: str = "|",
    limit: int | None = None,
) -> Dataset:
    """Read multiple-choice examples from a ``.jsonl`` or ``.csv`` file or Hugging Face data.

    Args:
        source: a file path, a ``load_from_disk`` folder, or ``"hf:<hub name>"`` (online users).
        split: the Hugging Face split (ignored for files).
        question_field / options_field / answer_field: where the row keeps them (see `row_reader`).
        option_fields: one column per option instead of ``options_field`` (e.g. ``["A", "B", "C", "D"]``).
        separator: splits an options string that is not a JSON list.

    Raises:
        DataError: a missing file, or a row without a readable question, options or answer (file and line).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "mc.csv"
        >>> _ = path.write_text("question,options,answer\\n2+2?,3|4|5,4\\n")
        >>> ex = load_multiple_choice(path)[0]
        >>> ex["options"], ex["answer"], sorted(ex.input_keys)
        (['3', '4', '5'], 'B', ['options', 'question'])
    """
    transform = row_reader(
        question_field=question_field,
        options_field=options_field,
        answer_field=answer_field,
        option_fields=option_fields,
        separator=separator,
    )
    required = list(INPUTS) + ["answer"]
    text = str(source)
    if text.startswith(HF_PREFIX) or Path(text).is_dir():
        name = text[len(HF_PREFIX) :] if text.startswith(HF_PREFIX) else text
        return load_hf(name, split=split, inputs=INPUTS, required=required, transform=transform, limit=limit)
    loader = load_csv if Path(text).suffix.lower() == ".csv" else load_jsonl
    return loader(source, inputs=INPUTS, required=required, transform=transform, limit=limit)


def make_task(
    name: str,
    data: Sequence[Example],
    *,
    train: int,
    dev: int,
    test: int | None = None,
    seed: int = 0,
    instruction: str | None = None,
    description: str = "",
    program: Any = None,
) -> Task:
    """A `Task` over multiple-choice ``data``: seeded splits cut test first, then dev, then train.

    Cutting test first keeps the test (and dev) examples fixed when a smaller train split is asked for.

    Args:
        test: test examples; None takes every example left after ``train`` and ``dev``.
        program: a zero-argument factory of the program; default `MultipleChoiceQA` with ``instruction``.

    Raises:
        ConfigError: the sizes need more examples than ``data`` has.
    """
    data = Dataset(data, name)
    if test is None:
        test = max(0, len(data) - train - dev)
    check_fits(name, {"train": train, "dev": dev, "test": test}, len(data), f"the data ({name})")
    test_set, dev_set, train_set = data.split([test, dev, train], seed=seed)

    letters = max((len(ex["options"]) for ex in data if "options" in ex), default=None)

    def make_program() -> Program:
        return program() if program is not None else MultipleChoiceQA(instruction, letters=letters)

    return Task(
        name=name,
        description=description or f"{name}: multiple choice (question, options -> answer letter)",
        train=Dataset(train_set, f"{name}-train"),
        dev=Dataset(dev_set, f"{name}-dev"),
        test=Dataset(test_set, f"{name}-test"),
        metric=choice_match,
        metrics={"accuracy": choice_match},
        make_program=make_program,
        seed=seed,
    )


__all__ = [
    "INSTRUCTION",
    "MultipleChoiceQA",
    "answer_index",
    "answer_letter",
    "choice_match",
    "format_options",
    "load_multiple_choice",
    "make_task",
    "mc_example",
    "mc_fields",
    "option_letter",
    "row_reader",
]
