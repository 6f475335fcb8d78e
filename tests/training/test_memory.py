import subprocess
import sys

import pytest

SCRIPT = """
from cotune.training.memory import MemoryWatch, _rss
before = _rss()
with MemoryWatch("cpu", None) as watch:
    data = b"x" * 50_000_000
print(watch.peak - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="samples /proc/self/statm")
def test_the_cpu_watch_sees_memory_allocated_inside_the_block():
    # a fresh process: in the test process other threads may free memory while the block runs
    grown = int(subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout)
    assert grown > 40_000_000
