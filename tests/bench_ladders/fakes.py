"""FakeLM models and a small made-up BBH folder for the ladder benchmarks' tests."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cotune.errors import LMConnectionError
from cotune.lm import FakeLM

GOOD = "Let's think step by step carefully."


def write_bbh(root: Path, n: int = 24) -> Path:
    """object_counting (free text), date_understanding (3 options) and hyperbaton (2), the gold option never
    (A): "a plus b"."""
    free, mc = [], []
    for i in range(n):
        a, b = i % 7 + 1, i % 5 + 2
        free.append({"input": f"What is {a} plus {b}?", "target": str(a + b)})
        options = [a + b + 1, a + b, a + b + 2] if i % 2 else [a + b - 1, a + b + 3, a + b]
        lines = "\n".join(f"({'ABC'[j]}) {o}" for j, o in enumerate(options))
        mc.append({"input": f"What is {a} plus {b}?\nOptions:\n{lines}", "target": f"({'BC'[i % 2 == 0]})"})
    two = [{"input": f"What is {i} plus 1?\nOptions:\n(A) {i}\n(B) {i + 1}", "target": "(B)"} for i in range(n)]
    (root / "bbh").mkdir(parents=True)
    for name, rows in (("object_counting", free), ("date_understanding", mc), ("hyperbaton", two)):
        (root / "bbh" / f"{name}.json").write_text(json.dumps({"examples": rows}))
    return root


def solver(skill: str):
    """A task model: right always ("always"), never ("never": it says (A) or 0), only when its instruction
    says "carefully" ("instructed"), or only between two options ("two")."""

    def answer(messages):
        system, last = messages[0]["content"], messages[-1]["content"]
        a, b = map(int, re.search(r"What is (\d+) plus (\d+)", last).groups())
        shown = re.findall(r"^\(([A-Z])\) (.*)$", last, re.MULTILINE)
        right = skill == "always" or (skill == "instructed" and "carefully" in system)
        right = right or (skill == "two" and len(shown) == 2)
        if shown:
            said = "(" + (next(k for k, o in shown if o == str(a + b)) if right else "A") + ")"
        else:
            said = str(a + b) if right else "0"
        reasoning = f"Reasoning: {a} plus {b}.\n" if "reasoning" in system.lower() else ""
        return f"{reasoning}Answer: {said}"

    return answer


def proposer(messages):
    """An optimizer LM that first proposes 60 words (over any budget but "none"), then, reminded, GOOD."""
    text = "\n".join(m["content"] for m in messages)
    if "previous attempt changed" in text or "No limit" in text:
        return f"New Instruction: {GOOD}"
    return "New Instruction: " + " ".join(["word"] * 60)


class Models:
    """``load_model`` for the scripts: FakeLMs by name, on the run's cache; ``down_after`` calls, the task
    model's connection fails (an interrupted run)."""

    def __init__(self, skills: dict[str, str], down_after: int | None = None):
        self.skills, self.down_after, self.loaded, self.log = skills, down_after, {}, []

    def __call__(self, name, cache):
        self.log.append(f"load {name}")
        if self.skills[name] == "proposer":
            lm = FakeLM(proposer, name=name, cache=cache)
        else:
            answer = solver(self.skills[name])
            made = []

            def maybe_down(messages):
                if self.down_after is not None and len(made) >= self.down_after:
                    raise LMConnectionError("model server went away")
                made.append(1)
                return answer(messages)

            lm = FakeLM(maybe_down, name=name, cache=cache)
        lm.close = lambda: self.log.append(f"close {name}")
        self.loaded[name] = lm
        return lm


class BagOfWords:
    """A deterministic embedder that records what it is asked to embed."""

    def __init__(self):
        self.asked: list[list[str]] = []

    def embed(self, texts):
        import numpy as np

        self.asked.append(list(texts))
        vectors = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                vectors[i, sum(map(ord, word)) % 64] += 1
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


class ComputeCountingLM(FakeLM):
    def __init__(self):
        super().__init__(["unused"])
        self.computed = 0

    def run_compute(self, fn):
        self.computed += 1
        return fn()
