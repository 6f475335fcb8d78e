"""The training forward: a micro-batch's completion logits through the fastest path that is exact.

`batch_logits` gives the float32 logits at the completion positions and their targets. Two shortcuts make it
cheaper, each checked against the plain forward on the first batch before training relies on it:
`checked_trunk` (the frozen layers below the adapter run once per example, `cotune.training.trunk`) and
`sharing_holds` (a micro-batch's shared prompt prefix runs once, `cotune.training.shared_prefix`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from cotune.training.config import TrainingConfig
from cotune.training.sft_data import IGNORE_INDEX, TokenizedExample
from cotune.training.shared_prefix import prefix_logits, shared_length
from cotune.training.trunk import TrunkCache, collate_ids, first_trained_layer, kept_logits


def collate(batch: Sequence[TokenizedExample], pad_id: int, device: str, torch: Any):
    ids, mask = collate_ids(batch, pad_id, device, torch)
    labels = torch.full(ids.shape, IGNORE_INDEX, dtype=torch.long)
    for row, t in enumerate(batch):
        labels[row, : len(t)] = torch.tensor(t.labels)
    return ids, labels.to(device), mask


def batch_logits(model, batch, indices, trunk, pad_id, training, device, share: bool = False) -> tuple[Any, Any]:
    """(float32 logits at the completion positions, their target ids) for one micro-batch; with ``share``
    the tokens every row starts with run once (`cotune.training.shared_prefix`)."""
    import torch

    autocast = training.trains_in_bf16(device)
    ids, labels, mask = collate(batch, pad_id, device, torch)
    # Position t predicts token t+1: keep only positions whose next token is a completion token.
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    targets = labels[:, 1:][keep[:, :-1]]
    shared = shared_length(batch) if share else 0
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
        if trunk is None:
            logits = completion_logits(model, ids, mask, keep, shared)
        else:
            logits = trunk.logits(indices, mask, keep, model.get_input_embeddings().weight.dtype, device, shared)
    return logits.float(), targets


def checked_trunk(model, tokenized, pad_id, training: TrainingConfig, device: str) -> TrunkCache | None:
    """A cache of the frozen layers' output when the adapter leaves the lower layers untouched and the cached
    path gives the full forward's logits on the first batch."""
    first = first_trained_layer(model)
    if not first:
        return None
    trunk = TrunkCache.build(
        model, first, tokenized, pad_id, device, training.batch_size, checkpointing=training.gradient_checkpointing
    )
    if trunk is None:
        return None
    indices = list(range(min(training.batch_size, len(tokenized))))
    if _agrees(model, tokenized, indices, pad_id, training, device, (trunk, False), (None, False)):
        return trunk
    warnings.warn(
        "the frozen-trunk cache does not reproduce this model's forward; training through every layer",
        RuntimeWarning,
        stacklevel=2,
    )
    return None


def sharing_holds(model, tokenized, trunk, pad_id, training: TrainingConfig, device: str) -> bool:
    """Whether training runs each micro-batch's shared prefix once: asked for (``share_prefix``, and no
    gradient checkpointing: checkpointed layers run without the KV cache it needs) and giving the plain
    forward's logits on the first batch that shares one (True when none does: then nothing is shared)."""
    if not training.share_prefix or training.gradient_checkpointing:
        return False
    batch_size = training.batch_size
    batches = [list(range(i, min(i + batch_size, len(tokenized)))) for i in range(0, len(tokenized), batch_size)]
    indices = next((b for b in batches if shared_length([tokenized[i] for i in b])), None)
    if indices is None:
        return True
    try:
        holds = _agrees(model, tokenized, indices, pad_id, training, device, (trunk, True), (trunk, False))
    except (TypeError, ValueError, RuntimeError):  # a model whose forward takes no cache or positions
        holds = False
    if not holds:
        warnings.warn(
            "running the shared prompt prefix once does not reproduce this model's forward; every row runs its "
            "whole sequence",
            RuntimeWarning,
            stacklevel=2,
        )
    return holds


def _agrees(
    model, tokenized, indices, pad_id, training: TrainingConfig, device: str, fast: tuple, plain: tuple
) -> bool:
    """Whether the ``fast`` and ``plain`` paths ((trunk, share) each) give the same logits on the batch
    ``indices``, in eval mode (dropout off) and within the dtype's tolerance."""
    import torch

    batch = [tokenized[i] for i in indices]
    model.eval()
    try:
        with torch.no_grad():
            a, _ = batch_logits(model, batch, indices, fast[0], pad_id, training, device, share=fast[1])
            b, _ = batch_logits(model, batch, indices, plain[0], pad_id, training, device, share=plain[1])
    finally:
        model.train()
    tolerance = 5e-2 if training.trains_in_bf16(device) else 1e-3
    return a.shape == b.shape and (a - b).abs().max().item() <= tolerance * max(1.0, b.abs().max().item())


def completion_logits(model: Any, ids: Any, mask: Any, keep: Any, shared: int = 0) -> Any:
    """Logits at the ``keep`` positions only, shape (n_kept, vocab); the first ``shared`` tokens (the same in
    every row) computed once.

    transformers >= 5 projects only those hidden states onto the vocabulary (``logits_to_keep`` as a
    boolean mask); models that do not take it get full logits, and the positions are picked afterwards.
    """
    if shared:
        return kept_logits(prefix_logits(model, shared, mask, keep, input_ids=ids), keep[:, shared:])
    try:
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
    except TypeError:  # a model class without logits_to_keep
        logits = model(input_ids=ids, attention_mask=mask).logits
    return kept_logits(logits, keep)
