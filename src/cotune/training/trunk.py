"""Train only the top layers fast: the frozen layers below run once per example, not once per step.

When the adapter touches only the last N of a model's L decoder layers (``LoRAConfig.top_layers``), the hidden
state entering layer L-N depends on frozen weights alone, so it is the same in every epoch. `TrunkCache`
computes it once per training sequence (the forward stops at that layer; sequences that start with the same
prompt run that prefix once per batch, as training does, `cotune.training.shared_prefix`) and each training
step runs only the top N layers on the cached states: the model's own forward, given the states as
``inputs_embeds`` with its layer list cut to the top N, so rotary positions, masks and the output head are the
model's.

Exact, and checked rather than assumed: before training, the first batch's completion logits through the
cached path are compared with the full forward; a model whose forward transforms ``inputs_embeds`` (some scale
them) fails the check and trains the slow way. The cache is kept only while it fits ``max_bytes``.

Measured on SmolLM2-135M (30 layers), CPU, 2 threads, Iris prompts of 118 tokens, batch 4: see
benchmarks/results/lora_speed.json.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from cotune.training.sft_data import TokenizedExample
from cotune.training.shared_prefix import prefix_logits, shared_length

DEFAULT_MAX_BYTES = 2 << 30
BUILD_BATCH = 16  # sequences a trunk forward runs at once (no gradients: larger products, one prefix per batch)
GROUP_TOKENS = 64  # leading tokens that group sequences for the trunk's batches


class _Stop(Exception):
    """Raised by the hook on the first trained layer: the forward below it is all the cache needs."""

    def __init__(self, hidden: Any):
        self.hidden = hidden


def decoder_layers(model: Any) -> tuple[Any, str, Any] | None:
    """(parent module, attribute name, ModuleList) of the model's decoder layers, or None if not found.

    The list is the first ModuleList that holds ``config.num_hidden_layers`` blocks (``model.layers`` in
    Llama, Qwen2, Mistral and Gemma; ``transformer.h`` in GPT-2).
    """
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    n = getattr(getattr(base, "config", None), "num_hidden_layers", None)
    for module in base.modules():
        for name, child in module.named_children():
            if isinstance(child, torch.nn.ModuleList) and len(child) == n:
                return module, name, child
    return None


def first_trained_layer(model: Any) -> int | None:
    """Index of the lowest decoder layer with a trainable parameter, when every trainable parameter sits in
    that layer or above it; None otherwise (an embedding or head that trains, or no layer list found)."""
    found = decoder_layers(model)
    if found is None:
        return None
    _, _, layers = found
    in_layers = {id(p) for layer in layers for p in layer.parameters()}
    if any(p.requires_grad and id(p) not in in_layers for p in model.parameters()):
        return None
    trained = [i for i, layer in enumerate(layers) if any(p.requires_grad for p in layer.parameters())]
    return trained[0] if trained else None


@contextmanager
def top_only(model: Any, first: int) -> Iterator[None]:
    """Within the block the model's decoder layer list holds layers ``first`` and above only, numbered from 0
    for the KV cache (an attention module's ``layer_idx``), so a cache the model builds holds them from its
    first entry, where the cache reads its length."""
    import torch

    parent, name, layers = decoder_layers(model)
    top = list(layers)[first:]
    attention = [getattr(layer, "self_attn", None) for layer in top]
    renumbered = [(a, a.layer_idx) for a in attention if isinstance(getattr(a, "layer_idx", None), int)]
    setattr(parent, name, torch.nn.ModuleList(top))
    for a, index in renumbered:
        a.layer_idx = index - first
    try:
        yield
    finally:
        setattr(parent, name, layers)
        for a, index in renumbered:
            a.layer_idx = index


class TrunkCache:
    """The hidden states entering decoder layer ``first``, one tensor (length × hidden) per training sequence."""

    def __init__(self, model: Any, first: int, states: list[Any], checkpointing: bool = False):
        self.model, self.first, self.states = model, first, states
        self.checkpointing = checkpointing  # reentrant checkpoints pass gradients only to inputs that need them

    @classmethod
    def build(
        cls,
        model: Any,
        first: int,
        examples: Sequence[TokenizedExample],
        pad_id: int,
        device: str,
        batch_size: int,
        max_bytes: int = DEFAULT_MAX_BYTES,
        checkpointing: bool = False,
    ) -> TrunkCache | None:
        """Run the frozen layers once over ``examples``; None when the states would exceed ``max_bytes``."""
        import torch

        hidden = model.get_base_model().config.hidden_size if hasattr(model, "get_base_model") else None
        hidden = hidden or model.config.hidden_size
        if sum(len(t) for t in examples) * hidden * 4 > max_bytes:
            return None
        _, _, layers = decoder_layers(model)

        def stop(_module: Any, args: tuple, kwargs: dict) -> None:
            raise _Stop(args[0] if args else kwargs["hidden_states"])

        # Sequences that start alike (one predictor's calls share its rendered instruction) sit together, shortest
        # first, so each batch runs its shared prefix once (`trunk_states`) and pads little.
        order = sorted(range(len(examples)), key=lambda i: (examples[i].input_ids[:GROUP_TOKENS], len(examples[i])))
        states: list[Any] = [None] * len(examples)
        per_batch = max(batch_size, BUILD_BATCH)
        handle = layers[first].register_forward_pre_hook(stop, with_kwargs=True)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(order), per_batch):
                    rows = order[start : start + per_batch]
                    batch = [examples[i] for i in rows]
                    ids, mask = collate_ids(batch, pad_id, device, torch)
                    try:
                        caught = trunk_states(model, ids, mask, shared_length(batch), torch)
                    except (TypeError, ValueError, RuntimeError):  # a forward that takes no cache or positions
                        caught = trunk_states(model, ids, mask, 0, torch)
                    for row, i in enumerate(rows):
                        states[i] = caught[row, : len(examples[i])].float()
        finally:
            handle.remove()
            model.train(was_training)
        return cls(model, first, states, checkpointing)

    def batch(self, indices: Sequence[int], dtype: Any, device: str) -> Any:
        """The cached states of ``indices``, right-padded with zeros to the longest: (batch, width, hidden)."""
        import torch

        width = max(len(self.states[i]) for i in indices)
        out = torch.zeros(len(indices), width, self.states[indices[0]].shape[-1], dtype=dtype, device=device)
        for row, i in enumerate(indices):
            out[row, : len(self.states[i])] = self.states[i]
        return out

    def logits(self, indices: Sequence[int], mask: Any, keep: Any, dtype: Any, device: str, shared: int = 0) -> Any:
        """Completion logits of the batch ``indices`` through the top layers only, shape (n_kept, vocab); the
        first ``shared`` positions, the same in every row, computed once (`cotune.training.shared_prefix`)."""
        states = self.batch(indices, dtype, device)
        if self.checkpointing:
            states.requires_grad_(True)
        with top_only(self.model, self.first):
            if shared:
                return kept_logits(
                    prefix_logits(self.model, shared, mask, keep, inputs_embeds=states), keep[:, shared:]
                )
            logits = self.model(inputs_embeds=states, attention_mask=mask, logits_to_keep=keep).logits
        return kept_logits(logits, keep)


def trunk_states(model: Any, ids: Any, mask: Any, shared: int, torch: Any) -> Any:
    """The hidden states entering the first trained layer, for a right-padded batch whose first ``shared``
    tokens are the same in every row (0: none), those run once: the prefix through the frozen layers with a KV
    cache of its own, then every row's own tokens on it, positions continuing from the prefix (as
    `cotune.training.shared_prefix.prefix_logits` does for the trained layers). The model must carry the
    `_Stop` hook on that layer, which ends each forward there."""
    if not shared:
        return _stopped(model, input_ids=ids, attention_mask=mask)
    from transformers import DynamicCache

    rows, width = mask.shape
    cache = DynamicCache(config=model.config)  # the layers below the hook fill it before the forward stops
    head = _stopped(
        model, input_ids=ids[:1, :shared], attention_mask=mask[:1, :shared], past_key_values=cache, use_cache=True
    )
    cache.batch_repeat_interleave(rows)
    positions = torch.arange(shared, width, device=mask.device)
    tail = _stopped(
        model,
        input_ids=ids[:, shared:],
        attention_mask=mask,
        position_ids=positions[None].expand(rows, -1),
        cache_position=positions,
        past_key_values=cache,
        use_cache=True,
    )
    return torch.cat([head.expand(rows, -1, -1), tail], dim=1)


def _stopped(model: Any, **inputs: Any) -> Any:
    """The hidden states the `_Stop` hook caught in ``model(**inputs)``."""
    try:
        model(**inputs)
    except _Stop as s:
        return s.hidden
    raise RuntimeError("the trunk hook did not fire")  # pragma: no cover - the hook always fires


def kept_logits(logits: Any, keep: Any) -> Any:
    """The ``keep`` positions' logits as (n_kept, vocab): a model that took ``logits_to_keep`` returned only
    those; one that did not returned every position, picked here."""
    if logits.dim() == 3 and logits.shape[:2] == keep.shape:
        logits = logits[keep]
    return logits.reshape(-1, logits.shape[-1])


def collate_ids(batch: Sequence[TokenizedExample], pad_id: int, device: str, torch: Any) -> tuple[Any, Any]:
    width = max(len(t) for t in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, t in enumerate(batch):
        ids[row, : len(t)] = torch.tensor(t.input_ids)
        mask[row, : len(t)] = 1
    return ids.to(device), mask.to(device)
