"""Peak memory of a block of work, on CPU or CUDA, without extra dependencies.

Example (Linux; tests/training/test_memory.py runs it in a fresh process, because in a busy one other
threads free memory while it runs)::

    before = _rss()
    with MemoryWatch("cpu", None) as watch:
        data = b"x" * 50_000_000
    assert watch.peak - before > 40_000_000
"""

from __future__ import annotations

import resource
import sys
import threading
from typing import Any


class MemoryWatch:
    """Peak memory while training: CUDA's allocator peak on GPU; on CPU, resident memory sampled every
    20 ms (Linux ``/proc/self/statm``), else the process's lifetime peak (``ru_maxrss``)."""

    def __init__(self, device: str, torch: Any):
        self.device, self.torch = device, torch
        self.peak = 0
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self) -> MemoryWatch:
        if self.device == "cuda":
            self.torch.cuda.reset_peak_memory_stats()
        elif _rss() is not None:
            self._thread = threading.Thread(target=self._sample, name="cotune-memory-watch", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, _rss() or 0)
            if self._stop.wait(0.02):
                return

    def __exit__(self, *exc: object) -> None:
        if self.device == "cuda":
            self.peak = int(self.torch.cuda.max_memory_allocated())
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss() or 0)
        else:
            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.peak = kb if sys.platform == "darwin" else kb * 1024  # macOS reports bytes, Linux kilobytes


def _rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return None
