"""The local engine on HotPotQA's program: where the time of a many-threaded evaluation goes.

    .venv/bin/python benchmarks/hotpot_engine.py                 # 24 test questions, 64 threads
    .venv/bin/python benchmarks/hotpot_engine.py --n 8 --model smollm2-135m

Runs the zero-shot HotPotQA program (2 hops × 3 BM25 passages, then the answer; 3 chain-of-thought
predictors) on the first ``--n`` test questions of ``load_task("hotpotqa", seed=0, train=100, dev=50,
test=200)`` with ``--threads`` threads, request cache off, after a 2-question warm-up (not counted). Reports
the wall time, the requests and their prompt and completion tokens, tokens/s, the engine's batching
(`BatchStats`) and its own accounting (`cotune.lm.engine.counters.EngineCounters`: batch sizes, prefill
positions computed incl. padding vs real prompt tokens, decoding steps and rows, seconds in prefill vs
decoding, one line per batch), and every completion's text, so two runs' outputs can be compared
(``--compare`` another results file). Each run records the commit of the code it ran (``PYTHONPATH=<another
checkout>/src`` runs that checkout's engine, for a before/after in one file) and the load average before it.
Writes ``benchmarks/results/hotpot_engine.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from bench import HERE, RESULTS, arguments, commit, write_results

DATA = HERE.parent.parent / "shared" / "data" / "hotpotqa"


def texts_of(result) -> list[list[str | None]]:
    return [[step.completion for step in row.trace] if row.trace else [] for row in result.rows]


def run(args) -> dict[str, Any]:
    import cotune as ct
    from cotune.lm.engine.counters import EngineCounters
    from cotune.tasks import load_task

    task = load_task("hotpotqa", data_dir=args.data_dir, seed=0, train=100, dev=50, test=200)
    questions = list(task.test)[: args.n]
    waits = {"batch_wait_ms": args.batch_wait_ms, "busy_wait_ms": args.busy_wait_ms}
    lm = ct.lm.load(args.model, cache=False, **{k: v for k, v in waits.items() if v is not None})
    try:
        program = task.program().bind(lm)
        ct.evaluate(program, list(task.train)[:2], task.metric, num_threads=2, max_errors=3)  # warm-up
        engine = lm.engine
        engine.counters = EngineCounters()
        batches, requests = engine.stats.batches, engine.stats.requests
        before = lm.usage
        load = os.getloadavg()
        t0 = time.perf_counter()
        result = ct.evaluate(program, questions, task.metric, num_threads=args.threads, max_errors=len(questions) + 1)
        wall = time.perf_counter() - t0
        usage = lm.usage
        counters = engine.counters.to_dict()
        n_requests = engine.stats.requests - requests
        prompt = usage.prompt_tokens - before.prompt_tokens
        completion = usage.completion_tokens - before.completion_tokens
        return {
            "cotune_source": commit(Path(ct.__file__).parent),  # a run of another checkout's code says which
            "load_before": [round(x, 2) for x in load],
            "model": args.model,
            "dtype": lm.dtype,
            "questions": len(questions),
            "threads": args.threads,
            "seconds": round(wall, 1),
            "score": round(result.score, 4),
            "requests": n_requests,
            "requests_per_minute": round(60 * n_requests / wall, 2),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "completion_tokens_per_s": round(completion / wall, 2),
            "prompt_tokens_per_s": round(prompt / wall, 1),
            "worker_batches": engine.stats.batches - batches,
            "engine": counters,
            "texts": texts_of(result),
        }
    finally:
        lm.close()


def summary(out: dict[str, Any]) -> str:
    e = out["engine"]
    return (
        f"{out['seconds']} s, {out['requests']} requests ({out['requests_per_minute']}/min), prompt {out['prompt_tokens']}"
        f" completion {out['completion_tokens']} ({out['completion_tokens_per_s']} tok/s); batches {e['batches']} "
        f"sizes {e['batch_sizes']}; prefill {e['prefill_tokens']} positions for {e['prompt_tokens']} prompt tokens "
        f"({e['reused_tokens']} reused) in {e['prefill_seconds']} s, {e['prefill_passes']} passes; decoding "
        f"{e['decode_steps']} steps, {e['decode_rows']} rows for {e['new_tokens']} tokens in {e['decode_seconds']} s; "
        f"{e.get('joined_rows', 0)} rows joined running batches at {e.get('join_steps', 0)} steps"
    )


def main() -> None:
    parser = arguments(__doc__, RESULTS / "hotpot_engine.json")
    parser.add_argument("--n", type=int, default=24, help="test questions (default 24)")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--batch-wait-ms", type=float, help="the engine's batch wait (default: its own)")
    parser.add_argument(
        "--busy-wait-ms", type=float, help="the wait while other batches run (default: the engine's, 0; 250 measured)"
    )
    parser.add_argument("--label", default="run", help="the key this run is kept under in the results file")
    parser.add_argument("--compare", type=Path, help="a results file whose run's texts to compare with")
    args = parser.parse_args()
    started = time.perf_counter()
    out = run(args)
    print(summary(out), flush=True)
    runs = {}
    if args.out.is_file():  # other labels' runs are kept: before and after sit in one file
        runs = json.loads(args.out.read_text()).get("runs", {})
    if args.compare is not None:
        other = json.loads(args.compare.read_text())
        for label, theirs in other.get("runs", {}).items():
            pairs = [
                (a, b) for x, y in zip(out["texts"], theirs["texts"], strict=False) for a, b in zip(x, y, strict=False)
            ]
            out.setdefault("same_texts_as", {})[label] = f"{sum(a == b for a, b in pairs)}/{len(pairs)}"
        print("same texts:", out.get("same_texts_as"))
    runs[args.label] = out
    write_results(args.out, {"benchmark": "hotpot_engine", "runs": runs}, started=started)


if __name__ == "__main__":
    main()
