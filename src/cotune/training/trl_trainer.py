"""`TRLTrainer`: the adapter trained by TRL's ``SFTTrainer``, in this process or in data-parallel processes.

The same contract as `cotune.training.lora.train_lora`: the `ChatExample` list in; an unmerged PEFT adapter
with ``cotune_adapter.json`` beside it (`cotune.training.lora.adapter_metadata`) and a `TrainResult` out.
The examples are tokenized by cotune (`cotune.training.sft_data.tokenize`: chat template, loss on the
completion tokens only) and handed to TRL pre-tokenized, so TRL applies no chat template and masks nothing
itself; the model is cotune's training copy (`cotune.training.setup.load_for_training`: LoRA rank, alpha,
dropout, target modules, ``top_layers``, a seeded initialization, or a continued adapter). What TRL adds:
`accelerate` (data parallel over GPUs, or CPU processes over gloo), gradient accumulation, bf16 on a CUDA
device that computes it natively (`TrainingConfig.trains_in_bf16`), and optional packing.

``TrainingConfig.batch_size`` is per process: one optimizer step sees ``batch_size × gradient_accumulation_steps
× processes`` sequences, and its loss is the mean over all their completion tokens (TRL counts the tokens
of every process), like the local trainer's. ``processes > 1`` runs `cotune.training.trl_launch` under
``accelerate launch``; ``processes == 1`` trains here. Unlike the local trainer, transformers' ``Trainer``
seeds the global random generators (restored afterwards when training in this process), batches in random
order rather than by length, and has no frozen-trunk cache: with ``top_layers`` the frozen layers run on
every step. Measured on 8 short examples, 2 steps: one process with batches of 4 and two CPU processes with
batches of 2 give the same losses (4.6503, 2.7591; equal to 1e-6), and the same first-step loss as the
local trainer on one batch of all 8 (4.3780 both).

Example:
    >>> TRLTrainer(processes=0)
    Traceback (most recent call last):
    ...
    cotune.errors.ConfigError: processes must be an integer >= 1, got 0
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cotune.errors import ConfigError, TrainingError
from cotune.events import EventSink
from cotune.training.config import LoRAConfig, TrainingConfig
from cotune.training.lora import TrainResult
from cotune.training.scoped import torch_threads
from cotune.training.sft_data import ChatExample
from cotune.training.trl_job import Job, Report

INSTALL_HINT = "pip install 'cotune[trl]'"


def require_trl() -> None:
    """Raise `ConfigError` with the install command when TRL is not installed (without importing it)."""
    if importlib.util.find_spec("trl") is None:
        raise ConfigError(f"trainer 'trl' needs the trl package: {INSTALL_HINT}")


@dataclass(frozen=True)
class TRLTrainer:
    """TRL's ``SFTTrainer`` through `accelerate`: ``processes`` data-parallel processes (one per GPU; on a
    machine without CUDA, CPU processes over gloo), each with ``TrainingConfig.batch_size`` sequences a step.

    Raises (when built):
        ConfigError: ``processes`` is not an integer >= 1, or trl is not installed (the pip command is named).
    """

    name: str = field(default="trl", init=False)
    processes: int = field(default=1, metadata={"help": "Data-parallel training processes (>= 1)."})
    packing: bool = field(
        default=False,
        metadata={"help": "Pack several examples into each max_length sequence (TRL's best-fit packing)."},
    )

    def __post_init__(self) -> None:
        if isinstance(self.processes, bool) or not isinstance(self.processes, int) or self.processes < 1:
            raise ConfigError(f"processes must be an integer >= 1, got {self.processes!r}")
        if not isinstance(self.packing, bool):
            raise ConfigError(f"packing must be True or False, got {self.packing!r}")
        require_trl()

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
        """Train and save the adapter; see `cotune.training.lora.train_lora` for the arguments.

        Raises:
            TrainingError: no examples, every example too long, a config the model refuses, out of memory, a
                non-finite loss, or a training process that failed (with the end of its error output).
        """
        if not examples:
            raise TrainingError("no training examples: nothing to fine-tune on")
        job = Job(
            list(examples),
            str(base_model_path),
            str(output_dir),
            lora,
            training,
            base_model,
            str(init_adapter) if init_adapter else None,
            self.processes,
            self.packing,
        )
        if self.processes > 1:
            # Imported here, not at the top: the launched processes run trl_launch with ``python -m``, which
            # warns when the package's import has already loaded the module it is about to run.
            from cotune.training.trl_launch import launch

            return launch(job, events)
        from cotune.training.trl_sft import train_sft  # torch and transformers: imported only to train

        report = Report(events)
        try:
            with torch_threads(training.num_threads), _global_rng_kept():
                result = train_sft(job, report)
        finally:
            report.close()
        assert result is not None  # one process is the main process
        return result


@contextlib.contextmanager
def _global_rng_kept() -> Iterator[None]:
    """transformers' Trainer seeds Python's, numpy's and torch's global generators: put them back afterwards."""
    import random

    import numpy as np
    import torch

    py, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)
