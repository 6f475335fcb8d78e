"""BIG-Bench Hard: 27 reasoning tasks, loaded one at a time as ``"bbh:<subtask>"``.

Data: ``bbh/<subtask>.json`` (``{"examples": [{"input", "target"}]}``) and, optionally,
``cot-prompts/<subtask>.txt``, whose task description becomes the instruction (suzgunmirac/BIG-Bench-Hard).
``data_dir`` may be that folder (holding ``bbh/`` and ``cot-prompts/``), its parent, or the folder of
JSON files itself.

Two kinds of subtask:

- **multiple choice** (17 of 27: inputs end in ``Options:`` and lettered lines ``(A) ...``): the
  question text goes to ``question``, the options to the list ``options``, the target ``"(B)"`` to the
  answer letter ``"B"`` (see `cotune.tasks.multiple_choice`); program `MultipleChoiceQA` (chain of
  thought; the answer a typed choice of the subtask's letters, so constrained decoding writes one),
  metric `choice_match`. Four broken source rows are dropped: three whose target is not a
  letter (one in movie_recommendation, two in ruin_names: their options were split at commas) and one
  in snarks whose options are cut off.
- **free text** (the other 10, including the Yes/No ones whose options are ``- Yes`` / ``- No`` lines):
  ``question`` is the whole input, ``answer`` the target; program `BBHSolver` (chain of thought), metric
  `answer_match` (exact match after case and whitespace folding; punctuation counts, as Dyck answers are
  all punctuation).

Splits (a subtask has 146 to 250 examples): seeded shuffle, then test = all but 100 (150 of 250), dev 50,
train 50. Test is cut first, so asking for a smaller train or dev split keeps the test examples fixed.

Usage (``load_task`` is `cotune.tasks.load_task`)::

    task = load_task("bbh:date_understanding", data_dir="../shared/data")
    task.train[0]["options"]   # ['12/25/1929', '09/20/1929', ...]; task.train[0]["answer"] == "A"
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cotune.data.dataset import Dataset
from cotune.data.example import Example
from cotune.errors import DataError, UnknownChoiceError
from cotune.program.chain_of_thought import ChainOfThought
from cotune.program.prediction import Prediction
from cotune.program.program import Program
from cotune.program.signature import Signature
from cotune.tasks.base import Task, TaskInfo, check_fits, field_of, resolve_data_dir, resolve_sizes
from cotune.tasks.multiple_choice import INSTRUCTION as MC_INSTRUCTION
from cotune.tasks.multiple_choice import LETTERS, MultipleChoiceQA, choice_match, mc_example

SUBTASKS = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "dyck_languages",
    "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
    "logical_deduction_seven_objects", "logical_deduction_three_objects", "movie_recommendation",
    "multistep_arithmetic_two", "navigate", "object_counting", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
    "word_sorting",
)  # fmt: skip

# Held out of train + dev; the rest of a subtask is its test split unless ``test=`` says otherwise.
TRAIN, DEV = 50, 50

INFO = TaskInfo(
    name="bbh",
    description="BIG-Bench Hard, one of 27 reasoning tasks as bbh:<subtask>; multiple-choice ones expose options",
    inputs=("question", "options"),
    outputs=("answer",),
    sizes={"train": TRAIN, "dev": DEV, "test": 150},
    metric="accuracy",
    metrics=("accuracy",),
    needs_data_dir=True,
    source="bbh/<subtask>.json (+ cot-prompts/<subtask>.txt)",
    family=True,
)

FREE_TEXT_INSTRUCTION = "Answer the question. Think it through step by step, then give only the final answer."

_OPTIONS = re.compile(r"\n\s*Options:\s*\n")
_OPTION_LINE = re.compile(r"^\(([A-Z])\)\s?(.*)$")
_TARGET_LETTER = re.compile(r"^\(([A-Z])\)$")


def parse_options(text: str) -> tuple[str, list[str]] | None:
    """Split a BBH input into (question, options) when it ends in lettered options, else None.

    The letters must run A, B, C... in order, one option per line.

    >>> parse_options("Which is red?\\nOptions:\\n(A) sky\\n(B) blood")
    ('Which is red?', ['sky', 'blood'])
    >>> parse_options("Is it valid?\\nOptions:\\n- valid\\n- invalid") is None
    True
    """
    parts = _OPTIONS.split(str(text))
    if len(parts) < 2:
        return None
    question, tail = "\nOptions:\n".join(parts[:-1]).strip(), parts[-1]
    options = []
    for i, line in enumerate(ln for ln in tail.strip().splitlines() if ln.strip()):
        m = _OPTION_LINE.match(line.strip())
        if m is None or i >= len(LETTERS) or m.group(1) != LETTERS[i]:
            return None
        options.append(m.group(2).strip())
    return (question, options) if len(options) >= 2 else None


def normalize_answer(text: Any) -> str:
    """Case and whitespace folded, outer quotes/emphasis and a final period dropped; other punctuation kept.

    >>> normalize_answer(" **Yes.** "), normalize_answer(") ]  >")
    ('yes', ') ] >')
    """
    text = " ".join(str(text).split()).strip("*_`\"' ")
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    return text.strip().lower()


def answer_match(example: Mapping[str, Any], prediction: Mapping[str, Any]) -> float:
    """Free-text subtasks: 1.0 when the predicted ``answer`` equals the target (see `normalize_answer`)."""
    predicted = field_of(prediction, "answer")
    return float(bool(predicted) and normalize_answer(predicted) == normalize_answer(example["answer"]))


class BBHSolver(Program):
    """One chain-of-thought predictor, ``solve``: question → reasoning → answer (free-text subtasks)."""

    def __init__(self, instruction: str | None = None):
        sig = Signature.parse(
            "question -> answer", instruction or FREE_TEXT_INSTRUCTION, answer="the final answer only"
        )
        self.solve = ChainOfThought(sig)

    def forward(self, question: str) -> Prediction:
        return self.solve(question=question)


def data_folder(data_dir: str | Path | None, subtask: str) -> tuple[Path, Path | None]:
    """The folder of the subtask's JSON file and the ``cot-prompts`` folder (None if absent).

    Raises:
        ConfigError: no ``data_dir`` and no ``$COTUNE_DATA_DIR``.
        DataError: no ``<subtask>.json`` where the data should be.
    """
    root = Path(resolve_data_dir("bbh", data_dir, "cot-prompts"))
    for folder in (root / "bbh", root):
        if (folder / f"{subtask}.json").is_file():
            prompts = folder.parent / "cot-prompts"  # beside the folder of JSON files
            return folder, prompts if prompts.is_dir() else None
    raise DataError(f"no {subtask}.json in {root}/bbh or {root}", path=root)


def task_description(prompts: Path | None, subtask: str) -> str | None:
    """The one-line task description at the top of the subtask's chain-of-thought prompt, if there is one."""
    path = prompts / f"{subtask}.txt" if prompts is not None else None
    if path is None or not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    body = lines[lines.index("-----") + 1 :] if "-----" in lines else lines  # after the canary header
    first = next((ln.strip() for ln in body if ln.strip()), "")
    first = first.removeprefix("Task description:").strip()
    return None if not first or first.startswith("Q:") else first


def read_examples(path: Path) -> tuple[list[Example], bool, int]:
    """The examples of one subtask file, whether it is multiple choice, and how many rows were dropped.

    Raises:
        DataError: the file is not BBH JSON (names the file and the row).
    """
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["examples"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"not a BIG-Bench Hard file ({type(e).__name__}: {e})", path=path) from None
    parsed = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict) or "input" not in row or "target" not in row:
            raise DataError("each example needs 'input' and 'target'", path=path, line=i)
        parsed.append((row, parse_options(row["input"])))
    # A subtask is multiple choice when its rows end in lettered options; the odd row that does not
    # (snarks has one cut off after "(A) The NB") is broken and dropped.
    multiple_choice = sum(opts is not None for _, opts in parsed) > len(parsed) / 2
    examples, dropped = [], 0
    for row, opts in parsed:
        if not multiple_choice:
            examples.append(
                Example(question=str(row["input"]).strip(), answer=str(row["target"]).strip()).with_inputs("question")
            )
            continue
        letter = _TARGET_LETTER.match(str(row["target"]).strip())
        if opts is None or letter is None or LETTERS.index(letter.group(1)) >= len(opts[1]):
            dropped += 1  # a broken source row: options cut off, or a target that is not a letter
            continue
        question, options = opts
        examples.append(mc_example(question, options, letter.group(1)))
    return examples, multiple_choice, dropped


def load(*, subtask: str | None = None, data_dir: str | Path | None = None, seed: int = 0, **sizes: int | None) -> Task:
    """Load one BBH subtask (see the module docstring for fields and splits).

    Args:
        subtask: one of `SUBTASKS` (the registry passes it from ``"bbh:<subtask>"``).
        sizes: ``train``, ``dev``, ``test``; test defaults to all examples but 100 (in a file of at most 100
            examples: all but train and dev).

    Raises:
        UnknownChoiceError: no or an unknown subtask (the message lists the 27).
        ConfigError: no data folder; sizes that do not fit.
        DataError: a missing or malformed file.
    """
    if subtask not in SUBTASKS:
        error = UnknownChoiceError("bbh subtask", subtask, SUBTASKS)
        if subtask is None:  # the bare family name
            error.args = (
                f"bbh is a family of {len(SUBTASKS)} tasks: name one as bbh:<subtask>; "
                f"choose one of: {', '.join(error.choices)}",
            )
        raise error
    given_test = sizes.get("test")
    n = resolve_sizes("bbh", INFO.sizes, sizes)
    folder, prompts = data_folder(data_dir, subtask)
    examples, multiple_choice, _ = read_examples(folder / f"{subtask}.json")
    if given_test is None:
        rest = len(examples) - n["train"] - n["dev"]
        # All but the default 100, so a smaller train/dev split keeps test fixed; a tiny file: the rest.
        n["test"] = max(0, min(len(examples) - TRAIN - DEV, rest) if len(examples) > TRAIN + DEV else rest)
    check_fits(f"bbh:{subtask}", n, len(examples), f"{subtask}.json")
    test, dev, train = Dataset(examples, subtask).split([n["test"], n["dev"], n["train"]], seed=seed)

    described = task_description(prompts, subtask)
    if multiple_choice:
        instruction = f"{described} {MC_INSTRUCTION}" if described else MC_INSTRUCTION
        letters = max(len(ex["options"]) for ex in examples)  # the answer: a choice of the subtask's letters

        def make_program() -> Program:
            return MultipleChoiceQA(instruction, letters=letters)

        metric, kind = choice_match, "multiple choice"
    else:
        instruction = f"{described} {FREE_TEXT_INSTRUCTION}" if described else FREE_TEXT_INSTRUCTION

        def make_program() -> Program:
            return BBHSolver(instruction)

        metric, kind = answer_match, "free text"
    name = f"bbh:{subtask}"
    return Task(
        name=name,
        description=f"BIG-Bench Hard {subtask} ({kind}){': ' + described if described else ''}",
        train=Dataset(train, f"{name}-train"),
        dev=Dataset(dev, f"{name}-dev"),
        test=Dataset(test, f"{name}-test"),
        metric=metric,
        metrics={"accuracy": metric},
        make_program=make_program,
        about=INFO,
        data_dir=folder,
        seed=seed,
    )


def is_multiple_choice(task: Task) -> bool:
    """Whether a loaded task's examples carry ``options`` (what `ChoiceShuffleEnsemble` permutes)."""
    first = next(iter(task.train or task.test), None)
    return first is not None and "options" in first
