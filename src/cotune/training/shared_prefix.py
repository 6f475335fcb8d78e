"""Train on sequences that start alike: the tokens a micro-batch shares run through the model once.

Θ's training data is one predictor's calls, so every sequence of a micro-batch starts with the same rendered
instruction (and the same demos, when they are kept): on Iris 75 of each prompt's 113 tokens. `shared_length`
finds how many leading tokens a batch has in common; `prefix_logits` runs them once (one row), repeats their
keys and values for every row, and runs each row's own tokens on top, positions continuing from the prefix.
The layers then see ``shared + batch × own`` tokens instead of ``batch × (shared + own)`` (Iris, batch 4: 247
instead of 472). The gradient that reaches the shared tokens is the sum of every row's, as in the plain
forward, so the update is the same up to float summation order; `cotune.training.lora` checks the logits
against the plain forward before it trains this way. With LoRA dropout the shared tokens get one dropout mask
for the whole batch instead of one per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cotune.training.sft_data import IGNORE_INDEX, TokenizedExample

# Below this many shared tokens the extra forward call costs more than it saves.
MIN_SHARED = 16


def shared_length(batch: Sequence[TokenizedExample], min_shared: int = MIN_SHARED) -> int:
    """How many leading tokens every sequence of ``batch`` shares, ending before the first position whose
    logits the loss reads (the one before each row's first completion token); 0 when that is under
    ``min_shared`` or the batch has one row.

    >>> a = TokenizedExample([1] * 20 + [5, 6], [IGNORE_INDEX] * 21 + [6])
    >>> b = TokenizedExample([1] * 20 + [7, 8], [IGNORE_INDEX] * 21 + [8])
    >>> shared_length([a, b])
    20
    >>> shared_length([a])
    0
    """
    if len(batch) < 2:
        return 0
    first = batch[0].input_ids
    n = min(len(t) for t in batch)
    for t in batch[1:]:
        n = min(n, _common(first, t.input_ids, n))
    n = min([n] + [_first_completion(t) - 1 for t in batch])
    return n if n >= min_shared else 0


def prefix_logits(
    model: Any, shared: int, mask: Any, keep: Any, *, input_ids: Any = None, inputs_embeds: Any = None
) -> Any:
    """The model's logits at the ``keep`` positions of a right-padded batch whose first ``shared`` tokens are
    the same in every row, those computed once. Give the batch as ``input_ids`` or ``inputs_embeds``."""
    import torch

    rows, width = mask.shape
    head, tail = (
        ({"input_ids": input_ids[:1, :shared]}, {"input_ids": input_ids[:, shared:]})
        if input_ids is not None
        else ({"inputs_embeds": inputs_embeds[:1, :shared]}, {"inputs_embeds": inputs_embeds[:, shared:]})
    )
    # No logits from the prefix (an all-False mask): its cache is what the rows need. `logits_to_keep=1` would
    # project one position, and torch's matmul of that (1, 1, hidden) view copied the transposed output head
    # (113 MB on SmolLM2) into a batched product: ~90 ms of a 0.6 s training step (measured under bf16 autocast).
    none = torch.zeros(1, shared, dtype=torch.bool, device=mask.device)
    prefix = model(**head, attention_mask=mask[:1, :shared], use_cache=True, logits_to_keep=none)
    cache = prefix.past_key_values
    cache.batch_repeat_interleave(rows)
    positions = torch.arange(shared, width, device=mask.device)
    out = model(
        **tail,
        attention_mask=mask,
        position_ids=positions[None].expand(rows, -1),
        cache_position=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=keep[:, shared:],
    )
    return out.logits


def _common(a: list[int], b: list[int], limit: int) -> int:
    for i in range(limit):
        if a[i] != b[i]:
            return i
    return limit


def _first_completion(t: TokenizedExample) -> int:
    return next(i for i, label in enumerate(t.labels) if label != IGNORE_INDEX)
