"""A toy two-predictor task on FakeLM, shared by the optimizer tests.

The task: say whether a number is "even" or "odd". The program first extracts the last digit (chain of
thought), then classifies. The fake model classifies correctly only for the digits in ``right_digits``,
so which traces pass is known in advance.
"""

from __future__ import annotations

from collections.abc import Iterable

import cotune as ct
from cotune.lm import FakeLM


class Parity(ct.Program):
    def __init__(self):
        self.digit = ct.ChainOfThought("number -> last_digit")
        self.label = ct.Predict("number, last_digit -> label")

    def forward(self, number):
        d = self.digit(number=number).last_digit
        return self.label(number=number, last_digit=d)


def truth(number: int | str) -> str:
    return "even" if int(number) % 2 == 0 else "odd"


def parity_data(numbers: Iterable[int]) -> ct.Dataset:
    return ct.Dataset(ct.Example(number=str(n), label=truth(n)).with_inputs("number") for n in numbers)


def metric(example, prediction) -> float:
    return float(prediction.get("label") == example["label"])


def fields_of(message: str) -> dict[str, str]:
    """``"Number: 17\\nLast Digit: 7"`` → ``{"number": "17", "last_digit": "7"}``."""
    out = {}
    for line in message.splitlines():
        label, _, value = line.partition(": ")
        out[label.strip().lower().replace(" ", "_")] = value.strip()
    return out


def parity_lm(right_digits: Iterable[str] = "02468", *, right_when=None) -> FakeLM:
    """A FakeLM for `Parity`: right for numbers ending in ``right_digits``, wrong for the others.

    ``right_when(number, config, messages)`` (optional) decides instead which answers are right, e.g. by
    temperature or by the demos shown.
    """
    right_digits = set(right_digits)

    def respond(messages, config):
        system, user = messages[0]["content"], fields_of(messages[-1]["content"])
        number = user["number"]
        if "Last Digit:" in system:
            return f"Reasoning: the last digit of {number} is {number[-1]}.\nLast Digit: {number[-1]}"
        right = right_when(number, config, messages) if right_when else number[-1] in right_digits
        answer = truth(number) if right else {"even": "odd", "odd": "even"}[truth(number)]
        return f"Label: {answer}"

    return FakeLM(respond)


def seen_numbers(lm: FakeLM, predictor_field: str = "Label:") -> list[str]:
    """The numbers the fake model was asked about by the predictor whose format names ``predictor_field``."""
    return [
        fields_of(messages[-1]["content"])["number"]
        for messages, _ in lm.calls
        if predictor_field in messages[0]["content"]
    ]
