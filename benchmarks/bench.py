"""What every benchmark records beside its numbers: the commit, the machine, and how to write results.

    from bench import machine_info, write_results

A figure is only comparable with another from the same kind of CPU, so the machine record names the CPU
model and the instruction sets that decide cotune's speed (bf16: AVX512-BF16 or AMX; else float32 on AVX2).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# The flags that decide which kernels run: bf16 (native or emulated), AVX-512 and AVX2 float32, AMX tiles.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


def commit() -> dict[str, Any]:
    """The checkout's commit and whether it had uncommitted changes (None where git can't tell)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform says."""
    path = Path("/proc/cpuinfo")
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """The machine a figure came from: CPU model, cores, the speed-relevant flags, and the software."""
    from cotune.hardware import cpu_flags, cpu_has_bf16

    flags = cpu_flags() or frozenset()
    info = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "cpu_flags": [f for f in SPEED_FLAGS if f in flags],
        "bf16": cpu_has_bf16(),
        "kind": "bf16" if cpu_has_bf16() else ("avx2" if "avx2" in flags else "other"),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def write_results(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` with the commit and machine beside it (the script's own keys win)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {**commit(), "machine": machine_info(), **data}
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return path
