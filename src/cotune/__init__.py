"""cotune: optimize the prompts and the weights of LM programs, together.

Importing cotune is cheap: torch and transformers load only when a local model is used.
"""

from cotune import data, errors, lm, program
from cotune.data import Dataset, Example
from cotune.evaluate import EvaluationResult, evaluate
from cotune.lm import FakeLM, GenerationConfig
from cotune.program import ChainOfThought, Predict, Prediction, Program, Signature, record

__version__ = "0.1.0"

__all__ = [
    "ChainOfThought",
    "Dataset",
    "EvaluationResult",
    "Example",
    "FakeLM",
    "GenerationConfig",
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
]
