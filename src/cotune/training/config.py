"""`LoRAConfig`: the hyperparameters of one LoRA fine-tune, with a help text and a range check per field.

Example:
    >>> LoRAConfig(r=16, alpha=32, gradient_accumulation_steps=2).effective_batch_size
    8
    >>> LoRAConfig(r=0, learning_rate=2.0)
    Traceback (most recent call last):
    ...
    cotune.errors.ConfigError: invalid LoRAConfig: r=0 (must be an integer >= 1); learning_rate=2.0 (must be > 0 and <= 1)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from cotune.errors import ConfigError, UnknownChoiceError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class LoRAConfig:
    """How to train a LoRA adapter. Defaults are measured for SmolLM2-135M on CPU (see below).

    The paper (BetterTogether, 7–8B models on GPUs) used r=32, alpha=64, dropout 0, 5 epochs, lr 1e-5 and an
    effective batch of 8. Here r, alpha and dropout are the paper's; lr 1e-3, batch 4 and 6 epochs are
    measured on Iris (SmolLM2-135M, 50 training flowers with a gold completion that restates the petal
    sizes, then "Species: ..."; test accuracy on 50 flowers): 6 epochs at batch 4 (78 steps) → 0.92 and
    10 epochs at batch 8 (70 steps) → 0.92, but 5 epochs at batch 8 (35 steps) → 0.34 (one species for
    every flower): the model needs ~70 steps at 1e-3 to learn the task. With the same settings, a
    completion of the species alone reached 0.34-0.52: a reasoning that names the deciding inputs matters.
    On the program's own traces the data, not the settings, is the limit: SmolLM2-135M's passing runs
    on Iris name one or two species (see `cotune.optimize.finetune`), so the adapter learns those.
    Use ~1e-5..1e-4 for 7-8B models.
    """

    r: int = field(default=32, metadata={"help": "LoRA rank: the inner dimension of each low-rank update (>= 1)."})
    alpha: float = field(
        default=64.0, metadata={"help": "LoRA scaling numerator; updates are scaled by alpha / r (> 0)."}
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input, in [0, 1)."})
    target_modules: str | tuple[str, ...] = field(
        default="all-linear",
        metadata={
            "help": "Which linear layers get adapters: 'all-linear' (every linear layer except the output head) "
            "or module names such as ('q_proj', 'v_proj')."
        },
    )
    top_layers: int | None = field(
        default=None,
        metadata={
            "help": "Adapt only the last N decoder layers (>= 1), or None for every layer. The frozen layers "
            "below then run once per example instead of once per step (cotune.training.trunk), so training "
            "costs about N / (number of layers) of a full pass per step."
        },
    )
    epochs: int = field(default=6, metadata={"help": "Passes over the training examples (>= 1)."})
    learning_rate: float = field(
        default=1e-3,
        metadata={
            "help": "Peak AdamW learning rate, in (0, 1]. 1e-3 is measured for SmolLM2-135M on Iris (see the class "
            "docstring); the paper used 1e-5 for 7-8B models."
        },
    )
    batch_size: int = field(default=4, metadata={"help": "Sequences per forward pass (>= 1)."})
    gradient_accumulation_steps: int = field(
        default=1,
        metadata={"help": "Forward passes per optimizer step (>= 1); effective batch = batch_size × this."},
    )
    max_length: int = field(
        default=1024,
        metadata={
            "help": "Most tokens per training sequence (>= 16); longer ones are cut at the end, and dropped "
            "when no completion token is left."
        },
    )
    warmup_ratio: float = field(
        default=0.1, metadata={"help": "Share of optimizer steps with a linear learning-rate warm-up, in [0, 1)."}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (>= 0)."})
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "Clip the gradient norm to this value (> 0), or None for no clipping."}
    )
    seed: int = field(
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
            "faster there, see LoRAConfig.trains_in_bf16). False always trains in float32."
        },
    )
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when present, else CPU), 'cpu' or 'cuda'."})
    num_threads: int | None = field(
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

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, list):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        problems = [f"{name}={getattr(self, name)!r} ({why})" for name, why in self._problems()]
        if problems:
            raise ConfigError("invalid LoRAConfig: " + "; ".join(problems))

    def _problems(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []

        def integer(name: str, low: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                out.append((name, f"must be an integer >= {low}"))

        def number(name: str, ok: Any, why: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(v):
                out.append((name, why))

        integer("r", 1)
        number("alpha", lambda v: v > 0, "must be > 0")
        number("dropout", lambda v: 0 <= v < 1, "must be in [0, 1)")
        tm = self.target_modules
        if not (tm == "all-linear" or (isinstance(tm, tuple) and tm and all(isinstance(m, str) and m for m in tm))):
            out.append(("target_modules", "must be 'all-linear' or a non-empty list of module names"))
        if self.top_layers is not None:
            integer("top_layers", 1)
        integer("epochs", 1)
        number("learning_rate", lambda v: 0 < v <= 1, "must be > 0 and <= 1")
        integer("batch_size", 1)
        integer("gradient_accumulation_steps", 1)
        integer("max_length", 16)
        number("warmup_ratio", lambda v: 0 <= v < 1, "must be in [0, 1)")
        number("weight_decay", lambda v: v >= 0, "must be >= 0")
        if self.max_grad_norm is not None:
            number("max_grad_norm", lambda v: v > 0, "must be > 0 or None")
        integer("seed", 0)
        if self.num_threads is not None:
            integer("num_threads", 1)
        for flag in ("bf16", "gradient_checkpointing", "share_prefix"):
            if not isinstance(getattr(self, flag), bool):
                out.append((flag, "must be True or False"))
        if self.device not in DEVICES:
            out.append(("device", f"must be one of: {', '.join(DEVICES)}"))
        return out

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

    def replace(self, **changes: Any) -> LoRAConfig:
        """A copy with ``changes`` applied (validated again)."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if isinstance(d["target_modules"], tuple):
            d["target_modules"] = list(d["target_modules"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoRAConfig:
        _check_names(d)
        return cls(**d)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name → help text (for CLI flags and docs)."""
        return {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}


def _check_names(d: dict[str, Any]) -> None:
    valid = {f.name for f in dataclasses.fields(LoRAConfig)}
    for key in d:
        if key not in valid:
            raise UnknownChoiceError("LoRAConfig field", key, valid)
