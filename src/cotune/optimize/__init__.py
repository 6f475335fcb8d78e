"""Optimizers: prompt (bootstrap, random search, GPO, kNN), weights (fine-tune) and both (BetterTogether)."""

from cotune.optimize.base import Optimizer

__all__ = ["Optimizer"]
