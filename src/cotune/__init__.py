"""cotune: optimize the prompts and the weights of LM programs, together.

Importing cotune is cheap: torch and transformers load only when a local model or training is used, and
optimizers load on first access (``cotune.BetterTogether``).
"""

from importlib import import_module
from typing import Any

from cotune import data, errors, lm, program, retrieve, tasks
from cotune.data import Dataset, Example
from cotune.evaluate import EvaluationResult, evaluate
from cotune.lm import FakeLM, GenerationConfig
from cotune.program import ChainOfThought, InputField, OutputField, Predict, Prediction, Program, Signature, record

__version__ = "0.1.0"

# public name -> module that defines it, imported on first use
_LAZY = {
    "optimize": "cotune.optimize",
    "experiment": "cotune.experiment",
    "report": "cotune.report",
    "Optimizer": "cotune.optimize.base",
    "LabeledFewShot": "cotune.optimize.labeled",
    "BootstrapFewShot": "cotune.optimize.bootstrap",
    "BootstrapFewShotWithRandomSearch": "cotune.optimize.random_search",
    "GPO": "cotune.optimize.gpo",
    "BootstrapFinetune": "cotune.optimize.finetune",
    "BetterTogether": "cotune.optimize.better_together",
    "KNNFewShot": "cotune.optimize.knn",
    "ChoiceShuffleEnsemble": "cotune.program.ensemble",
    "MedPrompt": "cotune.optimize.medprompt",
    "LoRAConfig": "cotune.training.config",
    "TrainingConfig": "cotune.training.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = import_module(_LAZY[name])
        value = module if module.__name__.endswith(name) and name.islower() else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cotune' has no attribute {name!r}")


__all__ = [
    "ChainOfThought",
    "Dataset",
    "EvaluationResult",
    "Example",
    "FakeLM",
    "GenerationConfig",
    "InputField",
    "OutputField",
    "Predict",
    "Prediction",
    "Program",
    "Signature",
    "__version__",
    "data",
    "errors",
    "evaluate",
    "lm",
    "program",
    "record",
    "retrieve",
    "tasks",
    *_LAZY,
]
