"""Optimizers by name, for the CLI and configs: one place maps names to classes."""

from __future__ import annotations

import inspect
from importlib import import_module
from typing import Any

from cotune.errors import ConfigError, UnknownChoiceError
from cotune.evaluate.metrics import Metric
from cotune.optimize.base import Optimizer

OPTIMIZERS: dict[str, tuple[str, str, str]] = {
    # name: (module, class, one-line description)
    "bootstrap": ("cotune.optimize.bootstrap", "BootstrapFewShot", "demos from the program's own successful traces"),
    "bfrs": ("cotune.optimize.random_search", "BootstrapFewShotWithRandomSearch", "bootstrapped demo sets, best on the valset (the paper's Π)"),
    "gpo": ("cotune.optimize.gpo", "GPO", "instructions written by an optimizer LM (GPO)"),
    "knn": ("cotune.optimize.knn", "KNNFewShot", "per-input nearest-neighbour demos"),
    "medprompt": ("cotune.optimize.medprompt", "MedPrompt", "self-generated CoT + kNN demos + choice-shuffle ensemble"),
    "finetune": ("cotune.optimize.finetune", "BootstrapFinetune", "LoRA on the program's own successful traces (the paper's Θ)"),
}


COMMON_PARAMS = ("num_threads", "seed")


def optimizer_names() -> list[str]:
    return sorted(OPTIMIZERS)


def build_optimizer(name: str, metric: Metric, **params: Any) -> Optimizer:
    """``build_optimizer("bfrs", metric, num_candidates=6)``; parameters the optimizer lacks are refused by name."""
    if name not in OPTIMIZERS:
        raise UnknownChoiceError("optimizer", name, OPTIMIZERS)
    module, cls_name, _ = OPTIMIZERS[name]
    cls = getattr(import_module(module), cls_name)
    accepted = inspect.signature(cls.__init__).parameters
    for common in COMMON_PARAMS:  # passed to every optimizer by the CLI; dropped where meaningless
        if common not in accepted:
            params.pop(common, None)
    try:
        return cls(metric=metric, **params)
    except TypeError as e:
        raise ConfigError(f"bad parameters for optimizer {name!r}: {e}") from None
