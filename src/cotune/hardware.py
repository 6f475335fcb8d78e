"""What the machine computes fast: bf16 or float32.

bf16 halves memory traffic, so it is the faster choice on CUDA GPUs that support it and on CPUs with
native bf16 arithmetic (AVX512-BF16, AMX). On a CPU without it, torch emulates bf16 and the same work
costs several times more — measured on a 2-core AVX2 machine with SmolLM2-135M: prefill 4.6× slower,
a LoRA training step 13× slower (bf16 autocast) than float32. So "auto" must ask the hardware.
"""

from __future__ import annotations

import functools
from pathlib import Path

# CPU flags (Linux /proc/cpuinfo: x86 "flags", ARM "Features") that mean native bf16 arithmetic.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` text (read when None); None where there is no such file."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        if not path.is_file():
            return None
        cpuinfo = path.read_text(errors="replace")
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def cpu_has_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU lists bf16 instructions in ``cpuinfo`` text (``/proc/cpuinfo`` when None); None: unknown."""
    flags = cpu_flags(cpuinfo)
    return None if flags is None else bool(flags & BF16_CPU_FLAGS)


@functools.cache
def bf16_is_fast(device: str = "cpu") -> bool:
    """True when bf16 compute is native (not emulated) on ``device`` ("cpu" or "cuda[:n]").

    CUDA: ``torch.cuda.is_bf16_supported()``. CPU: the bf16 flags where the OS lists them (Linux), else a
    20 ms matmul race between bf16 and float32 (macOS, Windows).
    """
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    listed = cpu_has_bf16()
    return _bf16_matmul_faster(torch) if listed is None else listed


def _bf16_matmul_faster(torch) -> bool:
    import time

    def seconds(dtype) -> float:
        a = torch.ones(256, 256, dtype=dtype)
        a @ a  # warm-up
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(4):
                a @ a
            best = min(best, time.perf_counter() - t)
        return best

    return seconds(torch.bfloat16) < seconds(torch.float32)
