"""A stand-in for `cotune run` on FakeLM, for the kill -9 tests: ``python fake_run.py RUN_DIR``.

Starts a run into RUN_DIR (strategy p-w on `FakeTask`), or resumes it when RUN_DIR holds a run. Its start-up,
Π and Θ steps and its end each take ``PAUSE`` seconds, so a kill can be aimed into any of them; calls take a
little time too. ``FAKE_RUN_FAIL_RESUME=1`` makes a resume exit with code 3 instead (a resume that breaks).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

PAUSE = 0.3


def main(run_dir: Path) -> int:
    print("fake run", flush=True)  # as `cotune run` says what it runs before it loads the model
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for experiment.fakes
    from cotune.experiment.config import ExperimentConfig
    from cotune.experiment.runner import Runner
    from cotune.lm import FakeLM
    from experiment.fakes import CountingPrompt, CountingWeights, FakeTask, fake_lm

    class SlowPrompt(CountingPrompt):
        def compile(self, program, **kwargs):
            time.sleep(PAUSE)
            return super().compile(program, **kwargs)

    class SlowWeights(CountingWeights):
        def compile(self, program, **kwargs):
            time.sleep(PAUSE)
            return super().compile(program, **kwargs)

    def factory(kind, seed, node):
        return SlowPrompt(Counter()) if kind == "p" else SlowWeights(Counter(), str(node / "adapter"))

    healthy = fake_lm()

    def respond(messages, adapter=None):
        time.sleep(0.01)
        return healthy._fn(messages, adapter=adapter)

    resume = (run_dir / "config.json").is_file()
    if resume and os.environ.get("FAKE_RUN_FAIL_RESUME"):
        return 3
    time.sleep(PAUSE)  # what loading a model costs
    parts = {"lm": FakeLM(respond), "task": FakeTask(), "optimizer_factory": factory}
    if resume:
        Runner.resume(run_dir, **parts)
    else:
        cfg = ExperimentConfig(
            task="fake", strategies=["p-w"], out_dir=str(run_dir.parent), name=run_dir.name, threads=2
        )
        Runner(cfg, **parts).start()
    time.sleep(PAUSE)  # what writing the report costs
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
