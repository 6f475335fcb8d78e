"""Iris: classify a flower's species from four measurements (BetterTogether's small classification task).

Data: scikit-learn's built-in copy of Fisher's 150 flowers (50 per species), so no files are needed.
Splits: 50 train / 50 dev / 50 test as in the paper, shuffled with the seed and stratified by species.
The test split is cut first, then dev, so asking for a smaller train set keeps dev and test unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cotune.data.dataset import Dataset
from cotune.data.example import Example
from cotune.program.predict import Predict
from cotune.program.prediction import Prediction
from cotune.program.program import Program
from cotune.program.signature import Signature
from cotune.tasks.base import Task, TaskInfo, check_fits, field_of, resolve_sizes

SPECIES = ("setosa", "versicolor", "virginica")
INPUTS = ("petal_length", "petal_width", "sepal_length", "sepal_width")

INFO = TaskInfo(
    name="iris",
    description="Iris flowers: species from petal and sepal sizes (3 classes)",
    inputs=INPUTS,
    outputs=("species",),
    sizes={"train": 50, "dev": 50, "test": 50},
    metric="accuracy",
    metrics=("accuracy",),
    source="scikit-learn",
    # Θ from the model's own samples (no gold labels), measured with SmolLM2-135M on seed 0
    # (benchmarks/configs/iris.yaml says how): up to 16 constrained runs per flower, the later ones sampled at
    # temperature 2 until one passes, so the kept runs reach all three species; LoRA on the top 8 layers,
    # 10 epochs at lr 3e-3, on prompts without the demos → 92% on test from 34% zero-shot. The kept runs are
    # balanced by species (5 or 6 virginica among ~39): on one trace set over training seeds 0-5, 92% on all six
    # balanced, 80% on seed 0 as kept (benchmarks/results/theta_balance.json).
    run_defaults={
        "weights": {
            "num_rollouts": 16,
            "rollout_temperature": 2.0,
            "stop_at_first_pass": True,
            "balance_classes": True,
            "keep_demos": False,
            "lora": {"top_layers": 8},
            "training": {"epochs": 10, "learning_rate": 3e-3},
        },
    },  # fmt: skip
)

INSTRUCTION = (
    "Given the petal and sepal measurements of an iris flower in centimeters, identify its species. "
    "The species is exactly one of: setosa, versicolor, virginica."
)


def signature() -> Signature:
    """Measurements → species, a choice of the three (so constrained decoding names exactly one)."""
    choices = ", ".join(repr(s) for s in SPECIES)
    return Signature.parse(
        f"petal_length, petal_width, sepal_length, sepal_width -> species: Literal[{choices}]",
        INSTRUCTION,
        petal_length="in cm",
        petal_width="in cm",
        sepal_length="in cm",
        sepal_width="in cm",
    )


class IrisClassifier(Program):
    """One predictor, ``classify``: measurements → species (a choice of three), without a reasoning field.

    Constrained to the three names, the model's sampled answers cover the species it can get right, and
    Θ learns the mapping from them. With a chain of thought, SmolLM2-135M writes one reasoning template for
    every flower, naming a species before the answer, and the adapter learns the template (Θ 34% over 3
    seeds); answering directly, Θ from its own samples reached 92% on seed 0 (README, Table 1).
    """

    def __init__(self):
        self.classify = Predict(signature())

    def forward(self, petal_length: str, petal_width: str, sepal_length: str, sepal_width: str) -> Prediction:
        return self.classify(
            petal_length=petal_length, petal_width=petal_width, sepal_length=sepal_length, sepal_width=sepal_width
        )


# Spellings a model may use for a species, beyond the name itself.
_ALIASES = {"versicolour": "versicolor", "virginia": "virginica", "virginiana": "virginica"}
_WORD = re.compile(r"[a-z]+")


def normalize_species(text: str) -> str | None:
    """The species named in ``text``, if exactly one species is named.

    >>> [normalize_species(t) for t in ["Iris setosa", "Setosa.", "**Virginica**", "setosa or virginica", "rose"]]
    ['setosa', 'setosa', 'virginica', None, None]
    """
    found = set()
    for word in _WORD.findall(str(text).lower()):
        word = _ALIASES.get(word, word)
        if word in SPECIES:
            found.add(word)
    return found.pop() if len(found) == 1 else None


def species_match(example: Mapping[str, Any], prediction: Mapping[str, Any]) -> float:
    """1.0 when the predicted ``species`` names the gold species and no other one; else 0.0."""
    predicted = normalize_species(field_of(prediction, "species"))
    return float(predicted is not None and predicted == normalize_species(example["species"]))


def examples() -> Dataset:
    """All 150 flowers as examples with string measurements ("5.1") and the species name."""
    from sklearn.datasets import load_iris  # heavy; only when the task is loaded

    raw = load_iris()
    columns = [name.replace(" (cm)", "").replace(" ", "_") for name in raw.feature_names]
    rows = []
    for values, target in zip(raw.data, raw.target, strict=True):
        fields = {col: f"{float(v):.1f}" for col, v in zip(columns, values, strict=True)}
        rows.append(Example({k: fields[k] for k in INPUTS}, species=str(raw.target_names[target])))
    return Dataset(rows, "iris").with_inputs(*INPUTS)


def load(*, data_dir: Any = None, seed: int = 0, **sizes: int | None) -> Task:
    """Load the Iris task. ``data_dir`` is ignored (the data ships with scikit-learn).

    Args:
        seed: shuffles the 150 flowers before the stratified split.
        sizes: ``train``, ``dev``, ``test`` (defaults 50 each; at most 150 in all).
    """
    n = resolve_sizes("iris", INFO.sizes, sizes)
    data = examples()
    check_fits("iris", n, len(data), "the Iris data set")
    test, dev, train = data.split([n["test"], n["dev"], n["train"]], seed=seed, stratify="species")
    return Task(
        name="iris",
        description=INFO.description,
        train=_named(train, "iris-train"),
        dev=_named(dev, "iris-dev"),
        test=_named(test, "iris-test"),
        metric=species_match,
        metrics={"accuracy": species_match},
        make_program=IrisClassifier,
        about=INFO,
        seed=seed,
    )


def _named(ds: Dataset, name: str) -> Dataset:
    return Dataset(ds, name)
