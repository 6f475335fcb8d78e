"""Optimizers: prompt (bootstrap, random search, GPO, kNN), weights (fine-tune) and both (BetterTogether).

Each lives in its own module and loads on first access, e.g. ``cotune.optimize.GPO``.
"""

from importlib import import_module
from typing import Any

from cotune.optimize.base import Optimizer
from cotune.optimize.registry import OPTIMIZERS, build_optimizer, optimizer_names
from cotune.optimize.strategy import parse_strategies, parse_strategy

_LAZY = {e.cls: e.module for e in OPTIMIZERS.values()} | {
    "LabeledFewShot": "cotune.optimize.labeled",
    "BetterTogether": "cotune.optimize.better_together",
    "ChoiceShuffleEnsemble": "cotune.program.ensemble",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cotune.optimize' has no attribute {name!r}")


__all__ = ["Optimizer", "build_optimizer", "optimizer_names", "parse_strategies", "parse_strategy", *_LAZY]
