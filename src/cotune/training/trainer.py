"""`Trainer`: the seam between the Θ step and whatever trains its LoRA adapter.

`cotune.optimize.finetune.BootstrapFinetune` turns kept traces into chat examples and hands them to a
trainer; the trainer returns an unmerged PEFT adapter folder with cotune's metadata beside it
(``cotune_adapter.json``) and a `TrainResult`. Everything else in the Θ step — traces, coverage, binding the
adapter to the program or loading it into a server — does not depend on how the adapter was trained.

- ``"local"`` (`LocalTrainer`, the default): cotune's own PEFT loop in this process (`train_lora`):
  completion-only loss, logits only where there is a loss, length-grouped batches, a cached frozen trunk
  with ``top_layers``. Fast on a CPU and on one GPU.
- ``"trl"`` (`cotune.training.trl_trainer.TRLTrainer`, needs ``pip install 'cotune[trl]'``): TRL's
  ``SFTTrainer`` through `accelerate`, for GPU users: ``processes`` data-parallel processes (one per GPU, or
  CPU processes over gloo; ``processes > 1`` runs ``accelerate launch`` on `cotune.training.trl_launch`),
  gradient accumulation, bf16 where the device computes it natively, optional packing. Same examples in,
  same adapter and metadata out, same loss: cotune tokenizes (completion tokens only) and TRL gets the
  token ids. ``TrainingConfig.batch_size`` is per process.

A trainer is any object with ``name`` and this ``train`` method; pass it as ``BootstrapFinetune(trainer=...)``.

Example:
    >>> resolve_trainer("local").name
    'local'
    >>> resolve_trainer("deepspeed")
    Traceback (most recent call last):
    ...
    cotune.errors.UnknownChoiceError: unknown trainer 'deepspeed'; choose one of: local, trl
    >>> build_trainer("local", processes=2)
    Traceback (most recent call last):
    ...
    cotune.errors.ConfigError: trainer 'local' trains in one process; processes=2 needs trainer: trl
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from cotune.errors import ConfigError, UnknownChoiceError
from cotune.events import EventSink
from cotune.training.config import LoRAConfig, TrainingConfig
from cotune.training.lora import TrainResult, train_lora
from cotune.training.sft_data import ChatExample
from cotune.training.trl_trainer import TRLTrainer


@runtime_checkable
class Trainer(Protocol):
    """Trains one LoRA adapter of ``lora``'s shape on chat examples (loss on the completions only), as
    ``training`` says, and saves it to ``output_dir``."""

    name: str

    def train(
        self,
        examples: Sequence[ChatExample],
        *,
        base_model_path: str | Path,
        output_dir: str | Path,
        lora: LoRAConfig,
        training: TrainingConfig,
        base_model: str | None = None,
        init_adapter: str | Path | None = None,
        events: EventSink | None = None,
    ) -> TrainResult: ...


@dataclass(frozen=True)
class LocalTrainer:
    """cotune's PEFT loop, in this process (`cotune.training.lora.train_lora`)."""

    name: str = "local"

    def train(
        self,
        examples: Sequence[ChatExample],
        *,
        base_model_path: str | Path,
        output_dir: str | Path,
        lora: LoRAConfig,
        training: TrainingConfig,
        base_model: str | None = None,
        init_adapter: str | Path | None = None,
        events: EventSink | None = None,
    ) -> TrainResult:
        return train_lora(
            examples,
            base_model_path=base_model_path,
            output_dir=output_dir,
            lora=lora,
            training=training,
            base_model=base_model,
            init_adapter=init_adapter,
            events=events,
        )


TRAINERS: dict[str, type] = {"local": LocalTrainer, "trl": TRLTrainer}


def build_trainer(name: str, *, processes: int = 1) -> Trainer:
    """The registered trainer ``name``, with ``processes`` data-parallel processes where it can run several.

    Raises:
        UnknownChoiceError: an unknown name (the registered ones are listed).
        ConfigError: ``processes`` is not an integer >= 1, or > 1 for a trainer that runs in one process; a
            trainer whose package is missing (the pip command is named).
    """
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ConfigError(f"processes must be an integer >= 1, got {processes!r}")
    if name not in TRAINERS:
        raise UnknownChoiceError("trainer", name, sorted(TRAINERS))
    if processes == 1:
        return TRAINERS[name]()
    parallel = sorted(n for n, cls in TRAINERS.items() if "processes" in {f.name for f in dataclasses.fields(cls)})
    if name not in parallel:
        raise ConfigError(
            f"trainer {name!r} trains in one process; processes={processes} needs trainer: {', '.join(parallel)}"
        )
    return TRAINERS[name](processes=processes)


def resolve_trainer(spec: str | Trainer) -> Trainer:
    """A trainer from its registered name, or ``spec`` itself when it already is one.

    Raises:
        UnknownChoiceError: an unknown name (the registered ones are listed).
        ConfigError: an object without ``name`` and ``train``; a trainer whose package is missing.
    """
    if isinstance(spec, str):
        return build_trainer(spec)
    if not isinstance(spec, Trainer):
        raise ConfigError(
            f"trainer must be a name ({', '.join(sorted(TRAINERS))}) or an object with `name` and "
            f"`train(examples, *, base_model_path, output_dir, lora, training, ...)`; got {type(spec).__name__}"
        )
    return spec
