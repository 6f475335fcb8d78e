"""LM programs: signatures, predictors, programs and traces."""

from cotune.program.adapter import FormatAdapter, TextAdapter
from cotune.program.chain_of_thought import ChainOfThought
from cotune.program.predict import Predict
from cotune.program.prediction import Prediction
from cotune.program.program import Program
from cotune.program.signature import Field, InputField, OutputField, Signature
from cotune.program.trace import Recorder, TraceStep, record

__all__ = [
    "ChainOfThought",
    "Field",
    "FormatAdapter",
    "InputField",
    "OutputField",
    "Predict",
    "Prediction",
    "Program",
    "Recorder",
    "Signature",
    "TextAdapter",
    "TraceStep",
    "record",
]
