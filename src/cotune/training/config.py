"""A LoRA fine-tune's settings, in two parts: the adapter's shape (`LoRAConfig`) and how it is trained
(`TrainingConfig`). Each field's annotation is its rule (`cotune.params`): a config is checked when it is made,
and every bad value is named at once.

Example:
    >>> TrainingConfig(batch_size=4, gradient_accumulation_steps=2).effective_batch_size
    8
    >>> LoRAConfig(r=0, dropout=1.0)
    Traceback (most recent call last):
    ...
    cotune.errors.ConfigError: invalid LoRAConfig: r must be >= 1, got 0 (r must be an integer >= 1); dropout must be in [0, 1), got 1.0 (dropout must be a number in [0, 1))
    >>> LoRAConfig(epochs=3)
    Traceback (most recent call last):
    ...
    cotune.errors.ConfigError: LoRAConfig has no field 'epochs': it is a setting of TrainingConfig, write TrainingConfig(epochs=3)
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field

from cotune.errors import ConfigError, UnknownChoiceError
from cotune.params import Count, NonNegative, OpenFraction, Positive, value_problems

Device = Literal["auto", "cpu", "cuda"]
ModuleNames = Annotated[tuple[Annotated[str, Field(min_length=1)], ...], Field(min_length=1)]


class _Settings:
    """What both configs share: checked by their declared fields when made, copied with `replace`, written as
    and read from plain mappings; a name that is not a field is refused, naming the valid ones (or the config
    that has it)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _check_names(cls, kwargs)  # before the generated __init__, whose TypeError would name no valid field
        return super().__new__(cls)

    def __post_init__(self) -> None:
        problems = value_problems(self)
        if problems:
            raise ConfigError(f"invalid {type(self).__name__}: " + "; ".join(problems))

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        return cls(**d)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name → help text (for CLI flags and docs)."""
        return {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}


@dataclass(frozen=True)
class LoRAConfig(_Settings):
    """The shape of a LoRA adapter: its rank, scaling, dropout and the layers it adapts.

    The paper (BetterTogether, 7–8B models on GPUs) used r=32, alpha=64 and dropout 0; so do these defaults.
    How the adapter is trained is `TrainingConfig`.
    """

    r: Positive = field(default=32, metadata={"help": "LoRA rank: the inner dimension of each low-rank update (>= 1)."})
    alpha: Annotated[float, Field(gt=0)] = field(
        default=64.0, metadata={"help": "LoRA scaling numerator; updates are scaled by alpha / r (> 0)."}
    )
    dropout: OpenFraction = field(default=0.0, metadata={"help": "Dropout on the LoRA input, in [0, 1)."})
    target_modules: Literal["all-linear"] | ModuleNames = field(
        default="all-linear",
        metadata={
            "help": "Which linear layers get adapters: 'all-linear' (every linear layer except the output head) "
            "or module names such as ('q_proj', 'v_proj')."
        },
    )
    top_layers: Positive | None = field(
        default=None,
        metadata={
            "help": "Adapt only the last N decoder layers (>= 1), or None for every layer. The frozen layers "
            "below then run once per example instead of once per step (cotune.training.trunk), so training "
            "costs about N / (number of layers) of a full pass per step."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, list):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        super().__post_init__()

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if isinstance(d["target_modules"], tuple):
            d["target_modules"] = list(d["target_modules"])
        return d


@dataclass(frozen=True)
class TrainingConfig(_Settings):
    """How a LoRA adapter is trained. Defaults are measured for SmolLM2-135M on CPU (see below).

    The paper (BetterTogether, 7–8B models on GPUs) used 5 epochs, lr 1e-5 and an effective batch of 8.
    Here lr 1e-3, batch 4 and 6 epochs are measured on Iris (SmolLM2-135M, 50 training flowers with a gold
    completion that restates the petal sizes, then "Species: ..."; test accuracy on 50 flowers): 6 epochs at
    batch 4 (78 steps) → 0.92 and 10 epochs at batch 8 (70 steps) → 0.92, but 5 epochs at batch 8 (35 steps)
    → 0.34 (one species for every flower): the model needs ~70 steps at 1e-3 to learn the task. With the same
    settings, a completion of the species alone reached 0.34-0.52: a reasoning that names the deciding inputs
    matters. On the program's own traces the data, not the settings, is the limit: SmolLM2-135M's passing runs
    on Iris name one or two species (see `cotune.optimize.finetune`), so the adapter learns those.
    Use ~1e-5..1e-4 for 7-8B models.
    """

    epochs: Positive = field(default=6, metadata={"help": "Passes over the training examples (>= 1)."})
    learning_rate: Annotated[float, Field(gt=0, le=1)] = field(
        default=1e-3,
        metadata={
            "help": "Peak AdamW learning rate, in (0, 1]. 1e-3 is measured for SmolLM2-135M on Iris (see the class "
            "docstring); the paper used 1e-5 for 7-8B models."
        },
    )
    batch_size: Positive = field(default=4, metadata={"help": "Sequences per forward pass (>= 1)."})
    gradient_accumulation_steps: Positive = field(
        default=1,
        metadata={"help": "Forward passes per optimizer step (>= 1); effective batch = batch_size × this."},
    )
    max_length: Annotated[int, Field(ge=16)] = field(
        default=1024,
        metadata={
            "help": "Most tokens per training sequence (>= 16); longer ones are cut at the end, and dropped "
            "when no completion token is left."
        },
    )
    warmup_ratio: OpenFraction = field(
        default=0.1, metadata={"help": "Share of optimizer steps with a linear learning-rate warm-up, in [0, 1)."}
    )
    weight_decay: NonNegative = field(default=0.0, metadata={"help": "AdamW weight decay (>= 0)."})
    max_grad_norm: Annotated[float, Field(gt=0)] | None = field(
        default=1.0, metadata={"help": "Clip the gradient norm to this value (> 0), or None for no clipping."}
    )
    seed: Count = field(
        default=0,
        metadata={
            "help": "Seeds the adapter initialization and the batch order (local generators: torch's and "
            "Python's global ones are left alone)."
        },
    )
    bf16: bool = field(
        default=True,
        metadata={
            "help": "Train in bf16 on a CUDA device that computes it natively: the frozen base weights held in bf16, "
            "the forward autocast to it, the adapter weights kept in float32. A CPU trains in float32 (measured "
            "faster there, see TrainingConfig.trains_in_bf16). False always trains in float32."
        },
    )
    device: Device = field(default="auto", metadata={"help": "'auto' (CUDA when present, else CPU), 'cpu' or 'cuda'."})
    num_threads: Positive | None = field(
        default=None,
        metadata={
            "help": "CPU threads for training (set while training, restored after); None keeps torch's setting. "
            "On a CPU shared with other jobs, 1 can be several times faster than oversubscribed threads."
        },
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in the backward pass: less memory, ~30% slower."}
    )
    share_prefix: bool = field(
        default=True,
        metadata={
            "help": "Run the tokens every sequence of a micro-batch starts with (the instruction, kept demos) once "
            "per step instead of once per row: the same update up to float rounding, checked before training "
            "(cotune.training.shared_prefix). Off with gradient_checkpointing."
        },
    )

    group_by_length: bool = field(
        default=False,
        metadata={
            "help": "Batch sequences of similar length together (less padding where lengths vary widely, such as "
            "chains of thought); off: random batches every epoch. A classifier's labels often differ in length "
            "(Iris: setosa, versicolor, virginica), so grouped batches hold one label each: on one Iris trace "
            "set, 2 of 6 training seeds ended never naming virginica (68%, 54%; random batches: 92% on all six, "
            "benchmarks/theta_batches.py)."
        },
    )

    def trains_in_bf16(self, device: str) -> bool:
        """Whether training on ``device`` ("cpu", "cuda[:n]") uses bf16: the frozen base weights held in bf16 and
        the forward autocast to it. Only on a CUDA device that computes bf16 natively, with ``bf16`` on.

        A CPU trains in float32 even with bf16 instructions: on a 2-core AMX CPU (SmolLM2-135M, top 8 layers,
        batch 4) a step took 0.41 s in float32, 0.52 s under bf16 autocast (every weight cast on every call) and
        0.44 s with bf16 weights (the step is bound by per-operation overhead, not by matrix products), and Θ in
        bf16 collapsed to one species on one of Table 1's three Iris seeds (Θ 64.7% ± 29.1 on that machine).
        Without bf16 instructions it is emulated (a step ~13x slower).
        """
        from cotune.hardware import bf16_is_fast

        return self.bf16 and device.startswith("cuda") and bf16_is_fast(device)

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size * self.gradient_accumulation_steps


TRAINING_FIELDS = tuple(f.name for f in dataclasses.fields(TrainingConfig))


def flat_settings(lora: LoRAConfig, training: TrainingConfig) -> dict[str, Any]:
    """Both configs as one mapping, with the keys in the order one config held them before they were split:
    what an adapter's metadata records and what names its cache folder, so both read as they did."""
    return lora.to_dict() | training.to_dict()


# Settings added after adapters were first keyed by their settings, with the value every earlier adapter was
# trained with: at that value a setting is left out of the key, so those adapters are found again.
KEYED_SINCE = {"group_by_length": True}


def key_settings(lora: LoRAConfig, training: TrainingConfig) -> dict[str, Any]:
    """`flat_settings` as an adapter's cache key holds them: a setting of `KEYED_SINCE` at its earlier value left
    out (an adapter trained before it existed was trained that way, and keeps its key)."""
    return {k: v for k, v in flat_settings(lora, training).items() if k not in KEYED_SINCE or KEYED_SINCE[k] != v}


def split_lora_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` (a fine-tune's hyperparameters) with the training settings that its ``lora`` mapping holds
    moved under ``training``: how they were written before the split (``lora: {r: 8, epochs: 3}``, ``-P
    lora.epochs=3``, a run directory's saved config). Each moved key warns with its new spelling (a
    `FutureWarning`: shown by default, so a CLI user with an old YAML sees it); a key that ``training`` already
    gives wins over a moved one.

    Raises:
        ConfigError: a moved key while ``training`` is a `TrainingConfig` object (which holds every setting).
    """
    lora, training = params.get("lora"), params.get("training")
    if not isinstance(lora, Mapping):
        return dict(params)
    moved = {k: v for k, v in lora.items() if k in TRAINING_FIELDS}
    if not moved:
        return dict(params)
    for key in moved:
        warnings.warn(f"lora.{key} is a training setting: write training.{key}", FutureWarning, stacklevel=2)
    if isinstance(training, TrainingConfig):
        raise ConfigError(
            f"lora holds training settings ({', '.join(moved)}) and training is a TrainingConfig: set them there"
        )
    given = dict(training) if isinstance(training, Mapping) else {}
    kept = {k: v for k, v in lora.items() if k not in moved}
    return {**params, "lora": kept, "training": moved | given}


def _check_names(cls: type, given: Mapping[str, Any]) -> None:
    valid = [f.name for f in dataclasses.fields(cls)]
    for key, value in given.items():
        if key in valid:
            continue
        home = next((c for c in (LoRAConfig, TrainingConfig) if key in {f.name for f in dataclasses.fields(c)}), None)
        if home is not None:
            raise ConfigError(
                f"{cls.__name__} has no field {key!r}: it is a setting of {home.__name__}, write "
                f"{home.__name__}({key}={value!r})"
            )
        raise UnknownChoiceError(f"{cls.__name__} field", key, valid)
