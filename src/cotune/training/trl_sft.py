"""The TRL recipe behind `cotune.training.trl_trainer.TRLTrainer`, run in each training process: setup → train
→ save (main process only). Imports torch, transformers, datasets and trl, so it is imported only to train.

Tested with trl 1.16.0, accelerate 1.15.0, transformers 5.23, peft 0.21.2.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from cotune.errors import TrainingError
from cotune.training.adapter_folder import check_output_dir, library_versions, save_adapter
from cotune.training.config import TrainingConfig
from cotune.training.lora import TrainResult, adapter_metadata, training_errors
from cotune.training.memory import MemoryWatch
from cotune.training.setup import load_for_training, training_device
from cotune.training.sft_data import ChatExample, TokenizedExample, data_hash, tokenize
from cotune.training.trl_job import Job, Report


def train_sft(job: Job, report: Report) -> TrainResult | None:
    """Run ``job`` in this process: all of it, or this process's share under ``accelerate launch``.

    The main process saves the adapter and returns the `TrainResult`; the others return None.
    """
    training, output_dir = job.training, Path(job.output_dir)
    device = training_device(training, torch)
    check_output_dir(output_dir)
    t_start = time.perf_counter()
    bf16 = training.trains_in_bf16(device)

    # -- setup ----------------------------------------------------------------------------------------
    with tempfile.TemporaryDirectory(prefix="cotune-trl-") as scratch:
        # The arguments come first: they start accelerate's process state, which picks this process's GPU.
        args = _sft_config(job, device, bf16, scratch)
        args.device  # noqa: B018 (set up now, before the model is moved to "cuda")
        tokenizer, model = load_for_training(job.base_model_path, job.init_adapter, job.lora, training, device)
        tokenized, n_dropped = _tokenized(job.examples, tokenizer, training.max_length)
        trainer = _sft_trainer(model, tokenizer, tokenized, args)
        steps = _Steps(
            report, training, examples=len(tokenized), dropped=n_dropped, device=device, processes=job.processes
        )
        trainer.add_callback(steps)

        # -- train ------------------------------------------------------------------------------------
        with training_errors(training), MemoryWatch(device, torch) as memory:
            trainer.train()
    if not trainer.accelerator.is_main_process:
        return None

    # -- save (main process) --------------------------------------------------------------------------
    losses = steps.losses
    per_epoch = max(1, trainer.state.max_steps // training.epochs)
    final_loss = sum(losses[-per_epoch:]) / len(losses[-per_epoch:])
    result = TrainResult(
        adapter_path=str(output_dir),
        losses=losses,
        final_loss=final_loss,
        seconds=time.perf_counter() - t_start,
        steps=len(losses),
        n_examples=len(tokenized),
        n_tokens=sum(len(t) for t in tokenized),
        peak_memory_bytes=memory.peak,
        device=device,
        data_hash=data_hash(job.examples),
        n_truncated=sum(t.truncated for t in tokenized),
        n_dropped=n_dropped,
        step_seconds=steps.seconds,
    )
    metadata = adapter_metadata(
        result,
        job.lora,
        training,
        base_model_path=job.base_model_path,
        base_model=job.base_model,
        init_adapter=job.init_adapter,
        trainer={"name": "trl", "processes": job.processes, "packing": job.packing, "bf16": bf16},
        versions=library_versions() | _trl_versions(),
    )
    save_adapter(trainer.model, metadata, output_dir)
    report.done(adapter=str(output_dir), final_loss=final_loss, steps=result.steps)
    return result


def _tokenized(examples: Sequence[ChatExample], tokenizer: Any, max_length: int) -> tuple[list[TokenizedExample], int]:
    """cotune's tokenization (exactly the local trainer's), and how many examples lost every completion token."""
    tokenized = [tokenize(ex, tokenizer, max_length) for ex in examples]
    kept = [t for t in tokenized if t is not None]
    if not kept:
        raise TrainingError(
            f"all {len(examples)} examples are longer than max_length={max_length} before their completion "
            "starts; raise max_length"
        )
    return kept, len(tokenized) - len(kept)


def _sft_config(job: Job, device: str, bf16: bool, scratch: str) -> Any:
    from trl import SFTConfig

    training = job.training
    return SFTConfig(
        output_dir=scratch,  # transformers wants one; nothing is saved there (save_strategy="no")
        per_device_train_batch_size=training.batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        num_train_epochs=training.epochs,
        learning_rate=training.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=training.warmup_ratio,  # a float < 1 is a share of the steps
        weight_decay=training.weight_decay,
        max_grad_norm=training.max_grad_norm if training.max_grad_norm is not None else 0.0,  # 0: no clipping
        optim="adamw_torch",
        seed=training.seed,
        data_seed=training.seed,
        train_sampling_strategy="group_by_length" if training.group_by_length else "random",
        bf16=bf16,
        fp16=False,
        use_cpu=device == "cpu",
        ddp_backend="gloo" if device == "cpu" and job.processes > 1 else None,
        ddp_find_unused_parameters=False,  # every LoRA weight gets a gradient every step
        average_tokens_across_devices=True,  # the loss: the mean over the completion tokens of every process
        activation_checkpointing=training.gradient_checkpointing,  # TRL turns it on by default; cotune's config decides
        max_length=training.max_length,
        packing=job.packing,
        dataloader_pin_memory=device != "cpu",
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )


def _sft_trainer(model: Any, tokenizer: Any, tokenized: list[TokenizedExample], args: Any) -> Any:
    from datasets import Dataset
    from trl import SFTTrainer

    # Pre-tokenized (an input_ids column): TRL applies no chat template and keeps these labels as they are.
    dataset = Dataset.from_dict(
        {"input_ids": [t.input_ids for t in tokenized], "labels": [t.labels for t in tokenized]}
    )
    try:
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    except (ValueError, TypeError) as e:
        raise TrainingError(f"TRL's SFTTrainer refused the setup: {e}") from e
    for callback in (PrinterCallback, ProgressCallback):  # progress goes through cotune's events instead
        trainer.remove_callback(callback)
    return trainer


class _Steps(TrainerCallback):
    """Collects each step's loss and time, reports them from the main process, stops on a non-finite loss."""

    def __init__(self, report: Report, training: TrainingConfig, **start_fields: Any):
        self.report, self.training, self.start_fields = report, training, start_fields
        self.losses: list[float] = []
        self.seconds: list[float] = []
        self._t0 = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) if model is not None else None
            self.report.start(steps=state.max_steps, trainable_params=trainable, **self.start_fields)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0 = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds.append(time.perf_counter() - self._t0)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:  # the run's summary has "train_loss" instead
            return
        loss = float(logs["loss"])  # already the mean over every process's completion tokens
        if not math.isfinite(loss):
            raise TrainingError(
                f"the loss became {loss} at step {len(self.losses) + 1}; lower learning_rate "
                f"(now {self.training.learning_rate}) or turn off bf16"
            )
        self.losses.append(loss)
        if state.is_world_process_zero:
            self.report.step(loss, logs.get("learning_rate"))


def _trl_versions() -> dict[str, str]:
    import accelerate
    import trl

    return {"trl": trl.__version__, "accelerate": accelerate.__version__}
