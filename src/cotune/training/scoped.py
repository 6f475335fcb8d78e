"""Training without process-wide side effects: a scoped CPU thread count and a seeded LoRA initialization
drawn from a generator of its own (torch's default generators are neither seeded nor advanced)."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_THREADS_LOCK = threading.Lock()


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with torch's CPU thread count at ``n`` (None: leave it), restoring the old count after.

    torch's count is process-wide, so concurrent blocks take turns: a second trainer waits rather than
    restoring a count the first one set.
    """
    if n is None:
        yield
        return
    import torch

    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def init_lora_weights(model: Any, seed: int) -> None:
    """PEFT's default LoRA initialization (A Kaiming-uniform, B zero), drawn from a generator seeded with ``seed``."""
    import torch

    generators: dict[Any, Any] = {}
    for module in model.modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if not isinstance(lora_a, torch.nn.ModuleDict) or not isinstance(lora_b, torch.nn.ModuleDict):
            continue
        for name, layer in lora_a.items():
            weight = layer.weight
            if weight.device not in generators:
                generators[weight.device] = torch.Generator(device=weight.device).manual_seed(seed)
            with torch.no_grad():
                torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generators[weight.device])
                torch.nn.init.zeros_(lora_b[name].weight)
