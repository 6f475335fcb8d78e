"""MedPrompt's choice-shuffle ensemble on a local model: its option orders one after another vs together.

    .venv/bin/python benchmarks/ensemble_orders.py          # 16 date_understanding questions, m = 5 (~7 min)

`ChoiceShuffleEnsemble` runs a question's original order first, pins the demos it was shown (kNN), and sends the
other orders at once, so the engine batches them and computes their shared prompt (instruction, demos,
question) once. ``one after another`` is the same ensemble sending each order after the last one answered (what
it did before): the same prompts, so the same votes. The built-in BBH program with ``--k`` nearest labeled
demos (kNN, default embedder) on SmolLM2-135M, request cache off, ``--threads`` questions at a time, the
reasoning capped at ``--reasoning-tokens`` so every run reaches its answer letter (the prompts' prefill is what
the orders share; a chain of thought's decoding is not shared, so longer reasoning dilutes the gain). The two ways alternate, ``--rounds`` times each, in one process.
Reported per way: wall seconds (median), prompt tokens, the prompt positions the engine computed (a prefix
shared in a batch counts once), and how many votes differ from the first run's (greedy answers hang on
float rounding, which the make-up of a batch changes). Writes
``benchmarks/results/ensemble_orders.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench import RESULTS, arguments, differing_votes, write_results


def main() -> None:
    parser = ensemble_arguments(arguments(__doc__, RESULTS / "ensemble_orders.json"), model="smollm2-135m", threads=8)
    args = parser.parse_args()
    started = time.perf_counter()

    import cotune as ct
    from cotune.program.demo_pins import DemoPins
    from cotune.program.ensemble import ChoiceShuffleEnsemble

    class OneAfterAnother(ChoiceShuffleEnsemble):
        """The ensemble with each order sent after the last one answered (its demos pinned all the same)."""

        def _runs(self, inputs: dict[str, Any], options: Any) -> list:
            pins = DemoPins()
            orders = self.permutations(options)
            return [
                self._vote(inputs, options, o, pins.replaying if i else pins.recording) for i, o in enumerate(orders)
            ]

    task, lm, inner = knn_program(args)
    ways = {"one after another": OneAfterAnother, "together": ChoiceShuffleEnsemble}
    ct.evaluate(ChoiceShuffleEnsemble(inner, m=args.m), task.test[:2], task.metric, num_threads=2)  # warm-up
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, cls in ways.items():
            counters = lm.engine.counters
            before = (counters.prompt_tokens, counters.prefill_tokens)
            t0 = time.perf_counter()
            result = ct.evaluate(cls(inner, m=args.m), task.test, task.metric, num_threads=args.threads)
            seconds = time.perf_counter() - t0
            runs[name].append(
                {
                    "seconds": round(seconds, 2),
                    "prompt_tokens": counters.prompt_tokens - before[0],
                    "prefill_computed": counters.prefill_tokens - before[1],
                    "calls": result.usage.calls,
                    "accuracy": result.score,
                    "votes": [row.prediction and row.prediction.get("votes") for row in result.rows],
                    "parse_failures": result.parse_failures,
                }
            )
            print(f"{name:18s} {seconds:6.1f} s  prefill computed {runs[name][-1]['prefill_computed']}", flush=True)
    summary = {
        name: {
            "seconds_median": statistics.median(r["seconds"] for r in rs),
            "seconds": [r["seconds"] for r in rs],
            "prompt_tokens": rs[0]["prompt_tokens"],
            "prefill_computed": [r["prefill_computed"] for r in rs],
            "calls": rs[0]["calls"],
            "accuracy": rs[0]["accuracy"],
            "parse_failures": rs[0]["parse_failures"],
            "votes_cast": sum(v is not None for row in rs[0]["votes"] if row for v in row),
        }
        for name, rs in runs.items()
    }
    # Greedy answers hang on float rounding, which a batch's make-up changes: count the votes that differ from
    # the first run's, per run (the same way's runs differ too, as their batches are made up by timing).
    reference = runs["one after another"][0]["votes"]
    for name, rs in runs.items():
        summary[name]["votes_differing_from_first_run"] = [differing_votes(r["votes"], reference) for r in rs]
    same_votes = all(r["votes"] == reference for rs in runs.values() for r in rs)
    speedup = summary["one after another"]["seconds_median"] / summary["together"]["seconds_median"]
    print(f"together: {speedup:.2f}x faster; same votes: {same_votes}")
    write_results(
        args.out,
        {
            "benchmark": "ensemble_orders",
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "ways": summary,
            "together_speedup": round(speedup, 2),
            "same_votes": same_votes,
        },
        started=started,
    )


def ensemble_arguments(parser: argparse.ArgumentParser, *, model: str, threads: int) -> argparse.ArgumentParser:
    """The settings of an ensemble run over kNN demos: task, model, questions, demos, orders, reasoning, rounds."""
    parser.add_argument("--task", default="bbh:date_understanding")
    parser.add_argument("--data-dir", default="../shared/data/bbh")
    parser.add_argument("--model", default=model)
    parser.add_argument("--n", type=int, default=16, help="test questions")
    parser.add_argument("--k", type=int, default=3, help="nearest labeled demos per question")
    parser.add_argument("--m", type=int, default=5, help="option orders per question")
    parser.add_argument("--reasoning-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--rounds", type=int, default=3)
    return parser


def knn_program(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """``(task, lm, program)``: the task's program on ``--model`` (request cache off), its reasoning capped at
    ``--reasoning-tokens``, showing each question its ``--k`` nearest labeled demos."""
    import cotune as ct
    from cotune.optimize.knn import KNNFewShot
    from cotune.tasks import load_task

    task = load_task(args.task, data_dir=args.data_dir, seed=0, dev=0, test=args.n)
    lm = ct.lm.load(args.model, cache=False)
    program = task.program().bind(lm)
    for _, predictor in program.named_predictors():
        predictor.reasoning_budget = args.reasoning_tokens
        predictor.config["max_tokens"] = args.reasoning_tokens + 24  # room for the answer line
    return task, lm, KNNFewShot(args.k, demos="labeled").compile(program, trainset=task.train)


if __name__ == "__main__":
    main()
