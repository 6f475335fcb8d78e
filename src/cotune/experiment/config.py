# Run with: cotune run --config exp.yaml   (YAML fields map one to one onto these dataclasses)
"""Typed experiment configuration. Invalid configs report all their errors at once.

Each field's rule is its annotation (`cotune.params` types: ``Positive``, ``Literal[...]``...), checked by
`cotune.params.value_problems` as an optimizer's hyperparameters are; ``check()`` adds only what one field's type
cannot say: the strategies parse, the seeds' count, a Ray address, the named optimizer and trainer build."""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from cotune.errors import ConfigError, UnknownChoiceError
from cotune.experiment.config_build import build_dataclass
from cotune.params import Count, Positive, value_problems
from cotune.tasks.base import HF_PREFIX

DEFAULT_STRATEGIES = ["zero-shot", "p", "w", "p-p", "w-w", "p-w", "w-p", "p-w-p"]
# `ray`: a local cluster, the one `ray start` made on this machine, or a cluster's client or GCS address
_RAY_ADDRESS = re.compile(r"local|auto|ray://[\w.-]+(:\d+)?|[\w.-]+:\d+")


def _registered(kind: str) -> list[str]:
    from cotune.optimize.registry import optimizer_names

    return optimizer_names(kind)


@dataclass
class PromptStep:
    """The Π step: any registered prompt optimizer and its own hyperparameters.

    ``params`` takes the optimizer's hyperparameters by name (``{k: 5}`` for knn; nested ones with dots or
    mappings: ``{bootstrap.max_labeled_demos: 2}``); in YAML they may also sit beside ``optimizer``
    (``prompt: {optimizer: knn, k: 5}``). The fields below ``params`` are shortcuts for the paper's defaults,
    given to the optimizers that take them; ``params`` wins over them.
    """

    optimizer: str = field(
        default="bfrs", metadata={"help": "a prompt optimizer: bfrs, bootstrap, gpo, knn, medprompt"}
    )
    params: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "the optimizer's hyperparameters, e.g. {k: 5}"}
    )
    num_candidates: Positive = field(default=6, metadata={"help": "candidate programs tried by random search"})
    max_bootstrapped_demos: Count = field(default=3, metadata={"help": "demos from successful traces, per predictor"})
    max_labeled_demos: Count = field(default=3, metadata={"help": "demos from labeled examples, per predictor"})
    gpo_steps: Positive = field(default=4, metadata={"help": "GPO optimization steps (optimizer=gpo)"})

    def optimizer_params(self) -> dict[str, Any]:
        """The hyperparameters to build the optimizer with: the shortcuts that apply, then ``params``."""
        from cotune.optimize.registry import merge, nest

        demos = {"max_bootstrapped_demos": self.max_bootstrapped_demos, "max_labeled_demos": self.max_labeled_demos}
        shortcuts = {
            "bfrs": {"num_candidates": self.num_candidates, "bootstrap": demos},
            "bootstrap": demos,
            "gpo": {"num_steps": self.gpo_steps},
        }.get(self.optimizer, {})
        return merge(shortcuts, nest(self.params))

    def check(self) -> list[str]:
        # the optimizer is built from the fields, so only once they hold
        return value_problems(self, "prompt.") or _check_optimizer("prompt", self.optimizer, self.optimizer_params())


@dataclass(init=False)
class WeightStep:
    """The Θ step: a weights optimizer and its hyperparameters, declared once, by the optimizer.

    ``params`` takes any hyperparameter of the optimizer by name (for ``finetune``, `BootstrapFinetune`'s:
    ``num_rollouts``, ``keep_demos``, ``lora: {r: 32}``, ``training: {epochs: 5}``...), checked by its signature. In YAML
    they may also sit beside ``optimizer`` (``weights: {num_rollouts: 3}``): a key of the step that is not one
    of the fields below is a hyperparameter, as if under ``params``. ``trainer`` and ``processes`` choose what
    trains the adapter.
    """

    optimizer: str = field(default="finetune", metadata={"help": "a weights optimizer: finetune"})
    params: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "the optimizer's hyperparameters, e.g. {num_rollouts: 3, lora: {r: 8}}"}
    )
    trainer: str = field(
        default="local",
        metadata={
            "help": "what trains the adapter: local (cotune's loop) or trl (TRL through accelerate; cotune[trl])"
        },
    )
    processes: Positive = field(
        default=1,
        metadata={"help": "data-parallel training processes (trainer trl; training.batch_size is per process)"},
    )

    def __init__(
        self,
        optimizer: str = "finetune",
        params: dict[str, Any] | None = None,
        trainer: str = "local",
        processes: int = 1,
        **hyperparameters: Any,
    ) -> None:
        """``WeightStep(num_rollouts=3)`` is ``WeightStep(params={"num_rollouts": 3})``, as in YAML (``params``
        wins where both name one)."""
        from cotune.optimize.registry import merge, nest

        self.optimizer, self.trainer, self.processes = optimizer, trainer, processes
        self.params = merge(nest(hyperparameters), nest(params or {})) if hyperparameters else dict(params or {})

    def optimizer_params(self) -> dict[str, Any]:
        from cotune.optimize.registry import nest
        from cotune.training.trainer import build_trainer

        params = nest(self.params)
        if (self.trainer, self.processes) != ("local", 1):
            params["trainer"] = build_trainer(self.trainer, processes=self.processes)
        return params

    def check(self) -> list[str]:
        from cotune.training.trainer import build_trainer

        problems = value_problems(self, "weights.")
        if problems:  # the trainer and the optimizer are built from the fields, so only once they hold
            return problems
        try:
            build_trainer(self.trainer, processes=self.processes)
        except ConfigError as e:
            return [f"weights.trainer: {e}"]
        return _check_optimizer("weights", self.optimizer, self.optimizer_params())


def _check_optimizer(step: str, name: str, params: dict[str, Any]) -> list[str]:
    """Build the step's optimizer once (no model needed) so a bad name or value fails at load time."""
    from cotune.optimize.registry import build_optimizer

    kind = "prompt" if step == "prompt" else "weights"
    if name not in _registered(kind):
        return [f"{step}.optimizer: {UnknownChoiceError(f'{kind} optimizer', name, _registered(kind))}"]
    try:
        build_optimizer(name, _no_metric, **params)
    except ConfigError as e:
        return [f"{step}: {e}"]
    return []


def _with_task_defaults(data: dict[str, Any]) -> dict[str, Any]:
    from cotune.optimize.registry import merge
    from cotune.tasks import task_info

    task = data.get("task", ExperimentConfig.task)
    try:
        defaults = task_info(task).run_defaults if isinstance(task, str) else {}
    except ConfigError:  # an unknown task: the field check names it
        defaults = {}
    return merge(steps_with_params(copy.deepcopy(dict(defaults))), steps_with_params(data))


def _no_metric(example: Any, prediction: Any) -> float:  # stands in for the task's metric while checking
    return 0.0


# Each seed runs every strategy; far past this a count is a typo, and its list alone would take gigabytes.
MAX_SEEDS = 1000

# what `cotune.lm.engine.hf_engine.HFEngine` takes (kept here so a config is checked without importing torch)
LocalDtype = Literal["auto", "float32", "bfloat16", "float16", "int8"]


@dataclass
class ExperimentConfig:
    """One experiment: strategies × seeds on a task and model."""

    task: str = field(default="iris", metadata={"help": "built-in task name"})
    model: str = field(default="smollm2-135m", metadata={"help": "registry name, folder, .gguf or hub id"})
    strategies: list[str] = field(
        default_factory=lambda: list(DEFAULT_STRATEGIES), metadata={"help": "e.g. [zero-shot, p, w, p-w-p]"}
    )
    seeds: list[int] = field(
        default_factory=lambda: [0],
        metadata={
            "help": "optimizer seeds, or their count N (seeds 0..N-1, as --seeds N); the mean over them is reported"
        },
    )
    data_dir: str | None = field(default=None, metadata={"help": "task data folder (gsm8k, hotpotqa)"})
    out_dir: str = field(default="runs", metadata={"help": "parent folder of run directories"})
    name: str | None = field(default=None, metadata={"help": "run directory name (default: date-task-model)"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train/dev/test split (fixed across seeds)"})
    train_size: Positive | None = field(default=None, metadata={"help": "override the task's train size"})
    dev_size: Positive | None = field(default=None, metadata={"help": "override the task's dev size"})
    test_size: Positive | None = field(default=None, metadata={"help": "override the task's test size"})
    inner_val_ratio: Annotated[float, Field(gt=0, lt=1)] = field(
        default=0.7, metadata={"help": "share of train that Π steps validate on"}
    )
    threads: Positive = field(default=64, metadata={"help": "parallel examples (a local model batches them)"})
    max_tokens: Positive | None = field(default=None, metadata={"help": "cap on generated tokens per call"})
    cache: bool = field(default=True, metadata={"help": "use the persistent request cache"})
    dtype: LocalDtype = field(
        default="auto",
        metadata={
            "help": "local model weights: auto, float32, bfloat16, float16 or int8 (CPU: int8 Linear weights, ~2x faster decoding, slightly different answers)"
        },
    )
    ray: str | None = field(
        default=None,
        metadata={
            "help": "run the nodes as Ray tasks: local (a Ray cluster on this machine), auto or a cluster address (ray://HOST:10001, HOST:6379); needs cotune[ray]"
        },
    )
    prompt: PromptStep = field(default_factory=PromptStep)
    weights: WeightStep = field(default_factory=WeightStep)

    def __post_init__(self) -> None:
        # saved absolute: a run resumed from another directory must find the same data
        if isinstance(self.data_dir, str | os.PathLike) and not os.fspath(self.data_dir).startswith(HF_PREFIX):
            self.data_dir = os.path.abspath(os.path.expanduser(os.fspath(self.data_dir)))

    def check(self) -> list[str]:
        from cotune.optimize.strategy import parse_strategy

        errors = value_problems(self)
        for s in self.strategies:
            try:
                parse_strategy(s)
            except ConfigError as e:
                errors.append(f"strategies: {e}")
        if not self.strategies:
            errors.append("strategies: at least one is needed")
        if not self.seeds:
            errors.append("seeds: at least one is needed")
        elif len(self.seeds) > MAX_SEEDS:
            errors.append(f"seeds: at most {MAX_SEEDS} seeds, got {len(self.seeds)}")
        if self.ray is not None and not _RAY_ADDRESS.fullmatch(self.ray):
            errors.append(
                f"ray: {self.ray!r} is not a Ray cluster; valid: local, auto, ray://HOST:PORT, HOST:PORT (or null: no Ray)"
            )
        return errors + self.prompt.check() + self.weights.check()

    def validate(self) -> ExperimentConfig:
        errors = self.check()
        if errors:
            raise ConfigError("invalid experiment config:\n  - " + "\n  - ".join(errors))
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        """A validated config from nested fields; fields ``data`` leaves out take the task's measured
        ``run_defaults`` (`cotune.tasks.TaskInfo`), then the defaults above. The saved run config holds them all."""
        return cls._build(_with_task_defaults(_seeds_as_list(data)))

    @classmethod
    def saved(cls, data: dict[str, Any]) -> ExperimentConfig:
        """A run's saved config (`to_dict`), to resume it: the task's run defaults it started with are in it, and
        today's are not merged in again, so a run resumed after a task's defaults changed goes on as it began."""
        return cls._build(steps_with_params(_seeds_as_list(data)))

    @classmethod
    def _build(cls, data: dict[str, Any]) -> ExperimentConfig:
        errors: list[str] = []
        cfg = build_dataclass(cls, data, "", errors)
        if cfg is not None:
            errors += cfg.check()
        if errors:
            raise ConfigError("invalid experiment config:\n  - " + "\n  - ".join(errors))
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no config file at {path}")
        try:
            data = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"{path} is not UTF-8 text (byte {e.object[e.start : e.start + 1]!r} at offset "
                f"{e.start}); save it as UTF-8"
            ) from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of fields at the top level")
        return cls.from_dict(data)


def steps_with_params(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each step's extra keys moved under its ``params``, spelled as its optimizer spells them
    today (`cotune.optimize.registry.upgrade_params`). Each source (task defaults, YAML, ``--set``) is normalized
    before they are merged, so a later source wins over an earlier one whichever way it spells a hyperparameter."""
    out = dict(data)
    for key, cls in (("prompt", PromptStep), ("weights", WeightStep)):
        if isinstance(out.get(key), dict):
            out[key] = _upgraded(_extras_into_params(out[key], {f.name for f in dataclasses.fields(cls)}), cls)
    return out


def _upgraded(step: dict[str, Any], cls: type) -> dict[str, Any]:
    name, params = step.get("optimizer", cls.optimizer), step.get("params")
    if not isinstance(name, str) or not isinstance(params, dict):  # the field checks name a bad value
        return step
    from cotune.optimize.registry import upgrade_params

    return step | {"params": upgrade_params(name, params)}


def _extras_into_params(data: dict[str, Any], fields: set[str]) -> dict[str, Any]:
    """A step's keys that are not its fields, moved under its ``params`` (which win over them): the optimizer's
    hyperparameters, checked by its own declared schema."""
    extras = {k: v for k, v in data.items() if k not in fields}
    given = data.get("params") or {}
    if not extras or not isinstance(given, dict):  # a bad params value: the field check names it
        return data
    from cotune.optimize.registry import merge, nest

    kept = {k: v for k, v in data.items() if k in fields}
    return kept | {"params": merge(nest(extras), nest(given))}


def _seeds_as_list(data: dict[str, Any]) -> dict[str, Any]:
    """``seeds: 3`` means seeds 0, 1, 2 — what ``--seeds 3`` means on the command line; a list is kept."""
    seeds = data.get("seeds")
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError(f"invalid experiment config:\n  - seeds: a count must be >= 1, got {seeds}")
        if seeds > MAX_SEEDS:  # before the list is made
            raise ConfigError(f"invalid experiment config:\n  - seeds: at most {MAX_SEEDS} seeds, got {seeds}")
        return {**data, "seeds": list(range(seeds))}
    return data
