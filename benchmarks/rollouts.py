"""Θ's trace collection: sampled rollouts one at a time vs grouped into full rounds (`collect_traces`).

    .venv/bin/python benchmarks/rollouts.py                  # Iris train split, 16 rollouts at T=2 until a pass

The built-in Iris program on SmolLM2-135M (request cache off), the 50 training flowers, greedy first and then
up to 15 runs sampled at temperature 2 until one passes (Iris's run defaults). ``one at a time`` runs rollout r
on the flowers no earlier rollout passed, so late rounds hold a dozen calls; ``grouped`` (the default) runs
several rollouts of the remaining flowers in one round, about as many calls as the first, and keeps the
same traces; ``grouped, prompts kept`` adds the engine's prefix store (`cotune.lm.engine.prefix_store`: a flower's
prompt computed in round 0 is not computed again). All in one process, one after the other. Writes ``benchmarks/results/rollouts.json``.
"""

from __future__ import annotations

import json
import time

from bench import RESULTS, arguments, write_results


def main() -> None:
    args = arguments(__doc__, RESULTS / "rollouts.json").parse_args()
    started = time.perf_counter()

    import cotune as ct
    from cotune.optimize import rollouts as traces_mod
    from cotune.tasks import load_task

    task = load_task("iris", seed=0)
    lm = ct.lm.load("smollm2-135m", cache=False)
    program = task.program().bind(lm)
    ct.evaluate(program, task.train[:8], task.metric, num_threads=8)  # warm-up: grammar compiled, threads up
    store, rows, keys = lm.engine.prefixes, [], {}
    capacity = store.max_bytes
    grouped = traces_mod.ROLLOUT_FILL
    for name, fill, keep in (
        ("one at a time", 1, False),
        ("grouped", grouped, False),
        ("grouped, prompts kept", grouped, True),
    ):
        traces_mod.ROLLOUT_FILL = fill
        store.clear()
        store.max_bytes = capacity if keep else 0
        t0 = time.perf_counter()
        runs = traces_mod.collect_traces(
            program,
            task.train,
            task.metric,
            num_rollouts=16,
            temperature=2.0,
            num_threads=64,
            seed=0,
            stop_at_first_pass=True,
        )
        seconds = time.perf_counter() - t0
        keys[name] = [(t.example_index, t.rollout_id, t.score) for t in runs]
        rows.append(
            {
                "mode": name,
                "round_fill": fill,
                "prefix_store": keep,
                "seconds": round(seconds, 1),
                "traces": len(runs),
                "passed": sum(t.passed() for t in runs),
                "reused_prompt_tokens": store.stats.reused_tokens if keep else 0,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    out = {
        "benchmark": "rollouts",
        "model": "smollm2-135m",
        "task": "iris train (50)",
        "rollouts": 16,
        "temperature": 2.0,
        "rows": rows,
        "speedup": round(rows[0]["seconds"] / rows[1]["seconds"], 2),
        "speedup_of_kept_prompts": round(rows[1]["seconds"] / rows[2]["seconds"], 2),
        "same_traces": len({json.dumps(k) for k in keys.values()}) == 1,
    }
    write_results(args.out, out, started=started)
    print(
        f"grouping {out['speedup']}x, kept prompts {out['speedup_of_kept_prompts']}x more, same traces: "
        f"{out['same_traces']}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
