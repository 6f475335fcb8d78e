"""How long a ladder will take, from the calls each rung makes and the speeds measured on this project's CPU.

Speeds (Qwen2.5-Coder-0.5B, bf16, 2 CPU cores): a prefill of ~300 prompt tokens/s; a decode of ~10 tokens/s
for one request and ~87 tokens/s for a batch of 64 together. Batches in between are interpolated on a power
law through those two points (20 tokens/s at 4 rows, 42 at 16). Qwen2.5-Coder-1.5B is about 3x slower at both.

Tokens a call takes, read from the data where they can be: a question's prompt is its BBH input in words times
1.4, plus 90 tokens of instruction, output format and chat template; a chain of thought writes ~150 tokens
(capped by the run's limit), a direct answer ~5; a demo costs its question (plus its chain, for a CoT demo);
a GPO proposal reads ~620 tokens (meta-instruction, 3 task examples cut to 300 characters, 3 past
instructions) and writes ~50.

The GPO ladder's optimizer rungs count 34/25 as long: both models are loaded then (see ``TWO_MODELS``).
What is left out: the engine's prefix store may reuse demos across batches (few-shot and ensemble rungs then
cost less prefill); longer chains than 150 tokens cost more. Treat the figures as +-50%.
Pure Python on purpose: ``--estimate`` answers without loading torch or a model.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFILL_TPS = 300.0
DECODE_TPS_ONE = 10.0
DECODE_TPS_64 = 87.0
SLOWER = {"qwen2.5-coder-0.5b": 1.0, "qwen2.5-coder-1.5b": 3.0}
# Two local models in one process: more OpenMP threads than cores, and every generation slows (README: a second,
# idle engine made GSM8K 25 -> 34 s). The GPO ladder's optimizer rungs run with both loaded.
TWO_MODELS = 34 / 25

SYSTEM_TOKENS = 90
TOKENS_PER_WORD = 1.4
COT_COMPLETION = 150
DIRECT_COMPLETION = 5
PROPOSE_PROMPT = 620
PROPOSE_COMPLETION = 50
_OPTION = re.compile(r"^\([A-Z]\) ", re.MULTILINE)


def slowdown(model: str) -> float:
    """How many times slower than the 0.5B a model is (1 for a model not in the table)."""
    return SLOWER.get(str(model).lower(), 1.0)


def decode_rate(batch: int) -> float:
    """Tokens per second a batch of ``batch`` rows decodes together (0.5B), on the power law through 1 and 64."""
    batch = max(1, min(batch, 64))
    return DECODE_TPS_ONE * batch ** (math.log(DECODE_TPS_64 / DECODE_TPS_ONE) / math.log(64))


@dataclass(frozen=True)
class Work:
    """``calls`` requests sent together (``batch`` at a time): each reads ``prompt`` tokens of its own after
    ``shared`` tokens every call starts with (computed once), and writes ``completion`` tokens."""

    calls: int
    prompt: float
    completion: float
    batch: int
    shared: float = 0.0
    model: str = "qwen2.5-coder-0.5b"

    def seconds(self) -> float:
        if self.calls <= 0:
            return 0.0
        prefill = (self.calls * self.prompt + self.shared) / PREFILL_TPS
        decode = self.calls * self.completion / decode_rate(min(self.batch, self.calls))
        return (prefill + decode) * slowdown(self.model)


@dataclass(frozen=True)
class TaskStats:
    """A task's mean prompt tokens (see the module docstring) and mean options per question (0: free text)."""

    tokens: float = 250.0
    options: float = 0.0

    def orders(self, m: int) -> float:
        """Mean option orders the ensemble asks per question: ``m``, or all of them when there are fewer."""
        return min(m, math.factorial(round(self.options))) if self.options else 1.0


def task_stats(data_dir: Path, task: str) -> TaskStats:
    """`TaskStats` from the task's BBH file; the defaults when it cannot be read."""
    for path in (Path(data_dir) / "bbh" / f"{task}.json", Path(data_dir) / f"{task}.json"):
        if path.is_file():
            rows = json.loads(path.read_text(encoding="utf-8"))["examples"]
            n = max(1, len(rows))
            words = sum(len(str(r["input"]).split()) for r in rows) / n
            options = sum(len(_OPTION.findall(str(r["input"]))) for r in rows) / n
            return TaskStats(SYSTEM_TOKENS + TOKENS_PER_WORD * words, options)
    return TaskStats()


def rung(name: str, work: list[Work], **counts: Any) -> dict[str, Any]:
    return {"rung": name, "calls": sum(w.calls for w in work), "seconds": sum(w.seconds() for w in work)} | counts


def gpo_plan(args: Any, stats: Mapping[str, TaskStats], test_sizes: Mapping[str, int]) -> dict[str, list[dict]]:
    """Per task, each GPO-ladder rung's task-model calls, optimizer calls and seconds (``seconds_max``: every
    proposal retried ``max_retries`` times)."""
    plan = {}
    cot = min(args.cot_tokens, COT_COMPLETION)
    for task in args.tasks:
        q, n = stats[task].tokens, test_sizes[task]
        test = Work(n, q, cot, args.num_threads, model=args.model)
        rows = [rung("empty", [test]), rung("CoT", [test])]
        mb = min(args.minibatch, args.dev)
        for name in ("OPRO-style", "GPO"):
            score = Work(mb, q, cot, args.num_threads, model=args.model)
            confirm = Work((1 + args.num_confirm) * (args.dev - mb), q, cot, args.num_threads, model=args.model)
            # GPO scores a step's candidates at the same time: one batch of mini-batch × candidates calls
            step = Work(mb * args.candidates, q, cot, args.num_threads * args.candidates, model=args.model)
            candidates = [step] * args.steps
            propose = Work(
                args.candidates, PROPOSE_PROMPT, PROPOSE_COMPLETION, args.candidates, model=args.optimizer_model
            )
            proposals = args.steps * args.candidates
            task_work = [score, *candidates, confirm, test]
            both = TWO_MODELS if args.optimizer_model != args.model else 1.0
            once = both * (sum(w.seconds() for w in task_work) + args.steps * propose.seconds())
            retried = once + both * args.steps * args.max_retries * propose.seconds()
            rows.append(
                {
                    "rung": name,
                    "calls": sum(w.calls for w in task_work),
                    "optimizer_calls": proposals,
                    "optimizer_calls_max": proposals * (1 + args.max_retries),
                    "seconds": once,
                    "seconds_max": retried,
                }
            )
        plan[task] = rows
    return plan


def medprompt_plan(args: Any, stats: Mapping[str, TaskStats], model: str, test: int) -> dict[str, list[dict]]:
    """Per task, the zero-shot check and each MedPrompt rung's calls and seconds for ``model`` on ``test``
    questions (the zero-shot rung is answered by the check's cache when the model is the check's)."""
    plan = {}
    cot = min(args.cot_tokens, COT_COMPLETION)
    direct = min(args.direct_tokens, DIRECT_COMPLETION)
    b = args.num_threads
    for task in args.tasks:
        q = stats[task].tokens
        own = q - SYSTEM_TOKENS
        check = Work(args.test, q, direct, b, model=args.model)
        zero = Work(test, q, direct, b, model=model)
        zero_seconds = 0.0 if model == args.model else zero.seconds()  # else the check's calls, from the cache
        few = Work(test, q, direct, b, shared=args.k * (own + direct), model=model)
        generate = Work(args.train, q, cot, b, model=model)
        random_cot = Work(test, q, cot, b, shared=args.k * (own + cot), model=model)
        knn = Work(test, q + args.k * (own + cot), cot, b, model=model)
        orders = Work(
            round(test * (stats[task].orders(args.m) - 1)), q + args.k * (own + cot), cot, b, model=model
        )  # the first is kNN's
        plan[task] = [
            rung("zero-shot check", [check], model=args.model, n=args.test),
            rung("zero-shot", [zero], model=model, n=test) | {"seconds": zero_seconds},
            rung("few-shot", [few], model=model, n=test),
            rung("+ CoT", [generate, random_cot], model=model, n=test, self_generation_calls=args.train),
            rung("+ kNN", [knn], model=model, n=test),
            rung("+ ensemble", [orders], model=model, n=test),
        ]
    return plan


def render(plan: Mapping[str, list[dict]], title: str) -> str:
    """The plan as lines: per task and rung, calls and minutes; the total in hours."""
    lines = [title]
    total = total_max = 0.0
    for task, rows in plan.items():
        lines.append(f"  {task}")
        for r in rows:
            extra = ""
            if "optimizer_calls" in r:
                extra = f" + {r['optimizer_calls']}-{r['optimizer_calls_max']} optimizer calls"
            upper = f" (up to {r['seconds_max'] / 60:.0f})" if "seconds_max" in r else ""
            lines.append(f"    {r['rung']:16s} {r['calls']:5d} calls{extra}: {r['seconds'] / 60:6.0f} min{upper}")
            total += r["seconds"]
            total_max += r.get("seconds_max", r["seconds"])
    more = f" (up to {total_max / 3600:.1f} h with every proposal retried)" if total_max > total else ""
    lines.append(f"  total: {total / 3600:.1f} h{more}")
    return "\n".join(lines)
