"""LoRA training with a lean torch + PEFT loop: setup → train → save, top to bottom.

Why not TRL's SFTTrainer: the job is small (chat examples with a completion-only mask) and a plain loop
is faster here: it computes the vocabulary projection only at completion positions (on a 135M model the
output head is ~20% of the compute), groups examples of similar length so little padding is computed,
and has no dependency beyond torch + peft. Tested with torch 2.13, transformers 5.23, peft 0.21.2.

The adapter is saved unmerged (PEFT ``save_pretrained``: adapter_config.json + adapter_model.safetensors)
with ``cotune_adapter.json`` beside it: base model, training data hash, hyperparameters, final loss.

No process-wide state is changed: the seed drives a local ``torch.Generator`` (adapter initialization) and a
local ``random.Random`` (batch order); torch's default generators are never seeded (LoRA dropout > 0 draws its
masks from them), and the CPU thread count (``TrainingConfig.num_threads``) is set only while training and
restored afterwards.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cotune.errors import TrainingError
from cotune.events import EventSink, Progress, emit
from cotune.lm.adapters import METADATA_FILE
from cotune.training.adapter_folder import check_output_dir, library_versions, save_adapter
from cotune.training.checkpoint import Checkpoint
from cotune.training.config import LoRAConfig, TrainingConfig, flat_settings
from cotune.training.forward import batch_logits, checked_trunk, sharing_holds
from cotune.training.memory import MemoryWatch
from cotune.training.scoped import torch_threads
from cotune.training.setup import load_for_training, training_device
from cotune.training.sft_data import ChatExample, data_hash, tokenize


@dataclass
class TrainResult:
    """What a fine-tune produced and what it cost.

    ``losses`` holds the mean completion-token loss of every optimizer step; ``final_loss`` is the mean
    over the last epoch's steps (one step's loss is noisy). ``peak_memory_bytes`` is the peak CUDA
    allocation on GPU; on CPU, the process's peak resident memory during the training loop (so it
    includes whatever else the process holds, e.g. an inference copy of the model).
    """

    adapter_path: str
    losses: list[float]
    final_loss: float
    seconds: float
    steps: int
    n_examples: int
    n_tokens: int
    peak_memory_bytes: int
    device: str
    data_hash: str
    n_truncated: int = 0
    n_dropped: int = 0
    step_seconds: list[float] = field(default_factory=list)

    @property
    def seconds_per_step(self) -> float:
        return sum(self.step_seconds) / len(self.step_seconds) if self.step_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"seconds_per_step": self.seconds_per_step}


def train_lora(
    examples: Sequence[ChatExample],
    *,
    base_model_path: str | Path,
    output_dir: str | Path,
    lora: LoRAConfig | None = None,
    training: TrainingConfig | None = None,
    base_model: str | None = None,
    init_adapter: str | Path | None = None,
    events: EventSink | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``examples`` (loss on completions only) and save it to ``output_dir``.

    Args:
        examples: chat examples (see `cotune.training.sft_data.chat_examples`).
        base_model_path: a local Hugging Face model folder (weights + tokenizer).
        output_dir: where the adapter goes; created, and overwritten if it holds an adapter.
        lora: the adapter's shape; `LoRAConfig()` by default.
        training: how it is trained; `TrainingConfig()` by default.
        base_model: the base model's name to record in the metadata (defaults to the path).
        init_adapter: continue training this adapter instead of starting a new one from the base model.
        events: receives a ``finetune`` progress bar whose postfix carries the loss.

    Raises:
        TrainingError: no examples, every example too long, a config the model refuses (e.g. unknown
            target modules), out of memory, or a non-finite loss; the cause is chained.
    """
    lora, training = lora or LoRAConfig(), training or TrainingConfig()
    if not examples:
        raise TrainingError("no training examples: nothing to fine-tune on")
    with torch_threads(training.num_threads):
        return _train(
            examples, Path(base_model_path), Path(output_dir), lora, training, base_model, init_adapter, events
        )


def _train(examples, base_model_path, output_dir, lora, training, base_model, init_adapter, events) -> TrainResult:
    import torch

    device = training_device(training, torch)
    check_output_dir(output_dir)
    hashed = data_hash(examples)
    key = _checkpoint_key(hashed, lora, training, base_model_path, init_adapter)
    done = _finished(output_dir, key)
    if done is not None:  # trained to the end before a stop that came before its step finished: not again
        emit(events, "finetune.reused", adapter=str(output_dir), steps=done.steps)
        return done
    t_start = time.perf_counter()

    # -- setup ----------------------------------------------------------------------------------------
    tokenizer, model = load_for_training(base_model_path, init_adapter, lora, training, device)
    tokenized, n_dropped = [], 0
    for ex in examples:
        t = tokenize(ex, tokenizer, training.max_length)
        if t is None:
            n_dropped += 1
        else:
            tokenized.append(t)
    if not tokenized:
        raise TrainingError(
            f"all {len(examples)} examples are longer than max_length={training.max_length} before their completion "
            "starts; raise max_length"
        )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=training.learning_rate, weight_decay=training.weight_decay)
    batches_per_epoch = math.ceil(len(tokenized) / training.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / training.gradient_accumulation_steps)
    total_steps = steps_per_epoch * training.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_schedule(total_steps, training.warmup_ratio))
    trunk = checked_trunk(model, tokenized, pad_id, training, device)
    share = sharing_holds(model, tokenized, trunk, pad_id, training, device)
    checkpoint = Checkpoint(output_dir, key)
    losses, step_seconds = checkpoint.resume(model, optimizer, scheduler)
    emit(
        events,
        "finetune.start",
        examples=len(tokenized),
        dropped=n_dropped,
        steps=total_steps,
        device=device,
        trainable_params=sum(p.numel() for p in trainable),
        frozen_trunk_layers=trunk.first if trunk else 0,
        shared_prefix=share,
        resumed_at_step=len(losses),
    )

    # -- train ----------------------------------------------------------------------------------------
    model.train()
    rng = random.Random(training.seed)
    done, step = len(losses), 0
    with Progress(events, "finetune", total=total_steps) as bar, MemoryWatch(device, torch) as memory:
        if done:
            bar.advance(done, loss=round(losses[-1], 4))
        for _epoch in range(training.epochs):
            batches = _batches([len(t) for t in tokenized], training.batch_size, rng, training.group_by_length)
            for start in range(0, len(batches), training.gradient_accumulation_steps):
                step += 1
                if step <= done:  # done before a stop: the batch order is drawn again, the step skipped
                    continue
                group = batches[start : start + training.gradient_accumulation_steps]
                t0 = time.perf_counter()
                loss = _optimizer_step(
                    model, optimizer, scheduler, tokenized, group, trunk, pad_id, training, device, share
                )
                step_seconds.append(time.perf_counter() - t0)
                if not math.isfinite(loss):
                    raise TrainingError(
                        f"the loss became {loss} at step {len(losses) + 1}; lower learning_rate "
                        f"(now {training.learning_rate}) or turn off bf16"
                    )
                losses.append(loss)
                bar.advance(loss=round(loss, 4), lr=scheduler.get_last_lr()[0])
                if len(losses) < total_steps:
                    checkpoint.save_if_due(model, optimizer, scheduler, losses, step_seconds)

    # -- save -----------------------------------------------------------------------------------------
    final_loss = sum(losses[-steps_per_epoch:]) / len(losses[-steps_per_epoch:])
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
        data_hash=hashed,
        n_truncated=sum(t.truncated for t in tokenized),
        n_dropped=n_dropped,
        step_seconds=step_seconds,
    )
    metadata = adapter_metadata(
        result,
        lora,
        training,
        base_model_path=base_model_path,
        base_model=base_model,
        init_adapter=init_adapter,
        training_key=key,
        train_result=result.to_dict(),
    )
    save_adapter(model, metadata, output_dir)
    checkpoint.remove()
    emit(events, "finetune.done", adapter=str(output_dir), final_loss=final_loss, steps=result.steps)
    # ---- cleanup: drop the training copy of the model now rather than whenever the caller lets go.
    del model, optimizer
    return result


def adapter_metadata(
    result: TrainResult,
    lora: LoRAConfig,
    training: TrainingConfig,
    *,
    base_model_path: str | Path,
    base_model: str | None = None,
    init_adapter: str | Path | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """What ``cotune_adapter.json`` holds: base model, training data hash, hyperparameters (both configs in one
    mapping, `flat_settings`), losses, versions; ``extra`` adds trainer-specific entries (e.g. the trainer's name
    and its library versions)."""
    return {
        "base_model": base_model or str(base_model_path),
        "base_model_path": str(base_model_path),
        "init_adapter": str(init_adapter) if init_adapter else None,
        "data_hash": result.data_hash,
        "hyperparameters": flat_settings(lora, training),
        "final_loss": result.final_loss,
        "losses": result.losses,
        "train_seconds": result.seconds,
        "steps": result.steps,
        "n_examples": result.n_examples,
        "device": result.device,
        "versions": library_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    } | extra


def read_adapter_metadata(path: str | Path) -> dict[str, Any]:
    """The ``cotune_adapter.json`` saved beside an adapter."""
    meta = Path(path) / METADATA_FILE
    if not meta.is_file():
        raise TrainingError(f"{path} has no {METADATA_FILE}: not an adapter saved by cotune")
    return json.loads(meta.read_text())


# -- pieces of the recipe ---------------------------------------------------------------------------------
def _checkpoint_key(hashed: str, lora, training, base_model_path: Path, init_adapter) -> dict[str, Any]:
    """What a checkpoint, or a finished adapter, must match to be taken up: the examples, every setting, the
    base model, the start (as JSON reads it back)."""
    key = {
        "data_hash": hashed,
        "settings": flat_settings(lora, training),
        "base_model_path": str(base_model_path),
        "init_adapter": str(init_adapter) if init_adapter else None,
    }
    return json.loads(json.dumps(key, default=str))


def _finished(output_dir: Path, key: dict[str, Any]) -> TrainResult | None:
    """The result of an adapter in ``output_dir`` that this training already produced (its saved key matches)."""
    meta = output_dir / METADATA_FILE
    if not (output_dir / "adapter_config.json").is_file() or not meta.is_file():
        return None
    try:
        saved = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("training_key") != key or not isinstance(saved.get("train_result"), dict):
        return None
    fields = {k: v for k, v in saved["train_result"].items() if k != "seconds_per_step"}
    return TrainResult(**(fields | {"adapter_path": str(output_dir)}))


def _batches(lengths: Sequence[int], batch_size: int, rng: random.Random, by_length: bool) -> list[list[int]]:
    """One epoch's batches of example indices: shuffled; with ``by_length``, sorted by length inside windows of
    16 batches, cut into batches, and the batches shuffled.

    By length, similar lengths share a batch (little padding) while the order still changes every epoch; but a
    set smaller than a window is sorted whole, so the batches are the same every epoch, and where length
    follows the label (a classifier's label names) each batch holds one label.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * 16
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _linear_schedule(total_steps: int, warmup_ratio: float):
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def _optimizer_step(model, optimizer, scheduler, tokenized, group, trunk, pad_id, training, device, share) -> float:
    """Forward/backward every micro-batch of ``group`` (lists of indices into ``tokenized``), then one
    optimizer step; with a ``trunk`` cache the micro-batches run through the trained top layers only.

    The loss is the mean over all completion tokens of the group (not a mean of per-batch means), so
    gradient accumulation gives the same update as one big batch.
    """
    import torch

    n_tokens = sum(tokenized[i].n_completion_tokens for batch in group for i in batch)
    total = 0.0
    with training_errors(training):
        for batch in group:
            logits, targets = batch_logits(
                model, [tokenized[i] for i in batch], batch, trunk, pad_id, training, device, share
            )
            loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum") / n_tokens
            loss.backward()
            total += loss.item()
        if training.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], training.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return total


@contextlib.contextmanager
def training_errors(training: TrainingConfig) -> Iterator[None]:
    """Training steps inside raise `TrainingError`: out of memory with what to lower, anything else from
    torch with the step's error (both trainers use it)."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError as e:
        raise TrainingError(_oom_message(training, e)) from e
    except RuntimeError as e:
        if "out of memory" in str(e).lower() or "can't allocate memory" in str(e).lower():
            raise TrainingError(_oom_message(training, e)) from e
        raise TrainingError(f"training step failed: {e}") from e
    except MemoryError as e:
        raise TrainingError(_oom_message(training, e)) from e


def _oom_message(training: TrainingConfig, e: BaseException) -> str:
    return (
        f"out of memory with batch_size={training.batch_size}, max_length={training.max_length}: lower batch_size "
        f"(raise gradient_accumulation_steps to keep the effective batch), lower max_length, or set "
        f"gradient_checkpointing=True ({type(e).__name__}: {e})"
    )
