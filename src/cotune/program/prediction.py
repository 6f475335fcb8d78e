"""`Prediction`: the output fields of a predictor or program."""

from __future__ import annotations

from cotune.data.example import Example


class Prediction(Example):
    """An `Example` holding output fields. Programs return one (or any mapping with the fields)."""

    def __repr__(self) -> str:
        return f"Prediction({self.to_dict()!r})"
