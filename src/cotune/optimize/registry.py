"""Optimizers by name: the one table the CLI (``-P k=v``), YAML configs, the runner and the benchmarks read.

``build_optimizer(name, metric, **params)`` builds and checks one. Parameters may be nested with dots:
``bootstrap.max_labeled_demos=2`` (or ``bootstrap={"max_labeled_demos": 2}``) builds the `BootstrapFewShot`
that BFRS, kNN and MedPrompt hold, with the same metric; ``lora.r=8`` builds a `LoRAConfig` and
``training.epochs=3`` a `TrainingConfig`.

Example:
    >>> opt = build_optimizer("bfrs", lambda ex, p: 1.0, num_candidates=4, **{"bootstrap.max_labeled_demos": 2})
    >>> opt.num_candidates, opt.bootstrap.max_labeled_demos, opt.bootstrap.max_bootstrapped_demos
    (4, 2, 3)
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from cotune.errors import ConfigError, UnknownChoiceError
from cotune.evaluate.metrics import Metric
from cotune.optimize.base import Optimizer
from cotune.params import annotations


@dataclass(frozen=True)
class Entry:
    """One registered optimizer: where its class lives, which step it serves, what it does."""

    module: str
    cls: str
    kind: str  # "prompt" (Π) or "weights" (Θ)
    description: str

    def load(self) -> type[Optimizer]:
        return getattr(import_module(self.module), self.cls)


OPTIMIZERS: dict[str, Entry] = {
    "bootstrap": Entry("cotune.optimize.bootstrap", "BootstrapFewShot", "prompt",
                       "demos from the program's own successful traces"),
    "bfrs": Entry("cotune.optimize.random_search", "BootstrapFewShotWithRandomSearch", "prompt",
                  "bootstrapped demo sets, best on the valset (the paper's Π)"),
    "gpo": Entry("cotune.optimize.gpo", "GPO", "prompt", "instructions written by an optimizer LM (GPO)"),
    "knn": Entry("cotune.optimize.knn", "KNNFewShot", "prompt", "per-input nearest-neighbour demos"),
    "medprompt": Entry("cotune.optimize.medprompt", "MedPrompt", "prompt",
                       "self-generated CoT + kNN demos + choice-shuffle ensemble"),
    "finetune": Entry("cotune.optimize.finetune", "BootstrapFinetune", "weights",
                      "LoRA on the program's own successful traces (the paper's Θ)"),
}  # fmt: skip

# hyperparameters that were renamed: an old config names the new spelling in its error
RENAMED = {"max_rounds": "num_rollouts", "round_temperature": "rollout_temperature"}
COMMON_PARAMS = ("num_threads", "seed")  # given to every optimizer by the CLI and the runner; dropped where unknown


def optimizer_names(kind: str | None = None) -> list[str]:
    """Registered names, sorted; ``kind`` "prompt" or "weights" keeps those that serve that step."""
    return sorted(n for n, e in OPTIMIZERS.items() if kind is None or e.kind == kind)


def optimizer_class(name: str) -> type[Optimizer]:
    if name not in OPTIMIZERS:
        raise UnknownChoiceError("optimizer", name, OPTIMIZERS)
    return OPTIMIZERS[name].load()


def build_optimizer(name: str, metric: Metric, **params: Any) -> Optimizer:
    """``build_optimizer("bfrs", metric, num_candidates=6)``: built and checked, before any model loads.

    Raises:
        UnknownChoiceError: an unknown name, or a value outside a parameter's choices.
        ConfigError: a parameter the optimizer lacks (the valid ones are listed) or a bad value.
    """
    return _build(optimizer_class(name), name, metric, nest(params))


def upgrade_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` of optimizer ``name``, nested (`nest`) and spelled as today (`Optimizer.upgrade_params`: a
    moved hyperparameter moves, with a `FutureWarning`). Each source of hyperparameters (a task's run
    defaults, YAML, ``-P``, a saved run config) is upgraded before it is merged with another, so the later
    source wins whichever spelling each uses. An unknown name: ``params`` nested (its build names it)."""
    nested = nest(params)
    return optimizer_class(name).upgrade_params(nested) if name in OPTIMIZERS else nested


def nest(params: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "a": {"c": 2}}`` → ``{"a": {"b": 1, "c": 2}}`` (dotted keys win over a dict's own)."""
    out: dict[str, Any] = {}
    for key, value in sorted(params.items(), key=lambda kv: kv[0].count(".")):
        head, _, rest = key.partition(".")
        if not rest:
            out[head] = (
                merge(out[head], value) if isinstance(out.get(head), dict) and isinstance(value, dict) else value
            )
            continue
        if head in out and not isinstance(out[head], dict):
            raise ConfigError(f"parameter {head!r} is given both as a value and as {key!r}")
        out[head] = merge(out.get(head, {}), nest({rest: value}))
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``over``, nested dicts merged rather than replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def _build(cls: type[Optimizer], name: str, metric: Metric, params: dict[str, Any]) -> Optimizer:
    params = cls.upgrade_params(params)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for common in COMMON_PARAMS:
        if common not in accepted:
            params.pop(common, None)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        renamed = [f"{old} is now {RENAMED[old]}" for old in unknown if RENAMED.get(old) in accepted]
        raise ConfigError(
            f"optimizer {name!r} has no hyperparameter {', '.join(unknown)}"
            + (f" ({'; '.join(renamed)})" if renamed else "")
            + f"; choose from: {', '.join(p for p in accepted if p != 'metric')}"
        )
    hints = annotations(cls)
    for key, value in list(params.items()):
        target = _class_in(hints.get(key))
        if isinstance(value, dict) and target is not None:
            params[key] = _nested(
                target, f"{name}.{key}", metric, params, getattr(cls, f"DEFAULT_{key.upper()}", {}), value
            )
    try:
        optimizer = cls(metric=metric, **params)
    except TypeError as e:
        raise ConfigError(f"bad parameters for optimizer {name!r}: {e}") from None
    optimizer.check_params()
    return optimizer


def _nested(target: type, where: str, metric: Metric, owner: dict[str, Any], defaults: dict, value: dict) -> Any:
    """A parameter given as a mapping: a nested optimizer (same metric, threads and seed) or a config object."""
    if issubclass(target, Optimizer):
        common = {k: owner[k] for k in COMMON_PARAMS if k in owner}
        return _build(target, where, metric, common | defaults | value)
    if dataclasses.is_dataclass(target):
        fields = [f.name for f in dataclasses.fields(target)]
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ConfigError(f"{where} has no field {', '.join(unknown)}; choose from: {', '.join(fields)}")
    return target(**value)


def _class_in(hint: Any) -> type | None:
    """The class a parameter holds (``BootstrapFewShot | None`` → BootstrapFewShot), if it is one."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        classes = [c for c in map(_class_in, typing.get_args(hint)) if c is not None]
        return classes[0] if len(classes) == 1 else None
    if (
        isinstance(hint, type)
        and hint is not type(None)
        and (issubclass(hint, Optimizer) or dataclasses.is_dataclass(hint))
    ):
        return hint
    return None
