"""The engine's attention on grouped key/value heads vs transformers' sdpa, which copies them per query head.

    .venv/bin/python benchmarks/grouped_attention.py        # 16 date_understanding questions, m = 5 (~6 min)

On a CPU, given a mask, transformers' sdpa attention repeats each key/value head once per query head it serves
(Qwen2.5-Coder-0.5B: 2 kv heads for 14 query heads) in every layer of every pass; the engine's attention
(`cotune.lm.engine.attention`) attends on the grouped heads (``enable_gqa``). The copy costs most where a pass
has few new tokens per row over a long cache: the rows' own tokens after a shared prefix, prefill chunks,
joiners. Measured on what has many of those: MedPrompt's choice-shuffle ensemble (kNN demos, option orders sent
together) over the built-in BBH program, ``--k`` nearest labeled demos, reasoning capped at
``--reasoning-tokens``, request cache off, ``--threads`` questions at a time. The two attentions alternate,
``--rounds`` times each, in one process (the engine's model switched between them). Reported per attention:
wall seconds (median), the seconds the engine spent in prefill passes, and how many votes differ from the
first run's. Writes ``benchmarks/results/grouped_attention.json``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench import RESULTS, arguments, differing_votes, write_results
from ensemble_orders import ensemble_arguments, knn_program


def main() -> None:
    parser = arguments(__doc__, RESULTS / "grouped_attention.json")
    parser = ensemble_arguments(parser, model="qwen2.5-coder-0.5b", threads=16)
    args = parser.parse_args()
    started = time.perf_counter()

    import cotune as ct
    from cotune.lm.engine.attention import NAME
    from cotune.program.ensemble import ChoiceShuffleEnsemble

    task, lm, inner = knn_program(args)
    ensemble = ChoiceShuffleEnsemble(inner, m=args.m)
    model = lm.engine.model
    attentions = {"grouped (cotune)": NAME, "sdpa (transformers)": "sdpa"}
    ct.evaluate(ensemble, task.test[:2], task.metric, num_threads=2)  # warm-up
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in attentions}
    for _ in range(args.rounds):
        for name, implementation in attentions.items():
            model.set_attn_implementation(implementation)
            counters = lm.engine.counters
            before = (counters.prefill_seconds, counters.prefill_tokens)
            t0 = time.perf_counter()
            result = ct.evaluate(ensemble, task.test, task.metric, num_threads=args.threads)
            seconds = time.perf_counter() - t0
            runs[name].append(
                {
                    "seconds": round(seconds, 2),
                    "prefill_seconds": round(counters.prefill_seconds - before[0], 2),
                    "prefill_computed": counters.prefill_tokens - before[1],
                    "accuracy": result.score,
                    "votes": [row.prediction and row.prediction.get("votes") for row in result.rows],
                }
            )
            print(f"{name:20s} {seconds:6.1f} s  prefill {runs[name][-1]['prefill_seconds']:6.1f} s", flush=True)
    reference = runs["grouped (cotune)"][0]["votes"]
    summary = {
        name: {
            "seconds_median": statistics.median(r["seconds"] for r in rs),
            "seconds": [r["seconds"] for r in rs],
            "prefill_seconds": [r["prefill_seconds"] for r in rs],
            "prefill_computed": [r["prefill_computed"] for r in rs],
            "accuracy": [r["accuracy"] for r in rs],
            "votes_differing_from_first_run": [differing_votes(r["votes"], reference) for r in rs],
        }
        for name, rs in runs.items()
    }
    speedup = summary["sdpa (transformers)"]["seconds_median"] / summary["grouped (cotune)"]["seconds_median"]
    print(f"grouped: {speedup:.2f}x faster")
    write_results(
        args.out,
        {
            "benchmark": "grouped_attention",
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "attentions": summary,
            "grouped_speedup": round(speedup, 2),
        },
        started=started,
    )


if __name__ == "__main__":
    main()
