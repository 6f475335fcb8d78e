"""Local-model throughput: one request at a time vs 8 threads coalesced into batched generation.

    .venv/bin/python benchmarks/lm_throughput.py                       # SmolLM2-135M, bf16 and fp32
    .venv/bin/python benchmarks/lm_throughput.py --dtypes auto --requests 8 --max-tokens 16   # quicker

Single stream: the requests one after another from one thread (what a plain loop gets). Coalesced:
``--threads`` threads take requests from a shared list, each calling the LM with a batch of one, as
`cotune.evaluate` does; the engine merges them into batched ``generate`` calls. Throughput is completion
tokens per wall-clock second; each mode runs ``--repeats`` times, interleaved with the other dtype so
load from other processes hits both alike, and the best and median runs are kept. Greedy decoding, no
cache. Also records how many ``generate`` calls the coalesced runs needed, and whether their outputs
equal the single-stream ones. Writes ``benchmarks/results/lm_throughput.json``.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Any

from bench import RESULTS, arguments, write_results

TOPICS = [
    "volcanoes",
    "bees",
    "the moon",
    "rivers",
    "bread",
    "glaciers",
    "owls",
    "copper",
    "tides",
    "maple trees",
    "lightning",
    "coral reefs",
    "bicycles",
    "salt",
    "comets",
    "wool",
]


def prompts(n: int) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": f"Explain how {TOPICS[i % len(TOPICS)]} work, in a few sentences."}]
        for i in range(n)
    ]


def single_stream(lm, batch, max_tokens: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = [lm(m, max_tokens=max_tokens) for m in batch]
    return _row(out, time.perf_counter() - t0, calls=len(batch))


def coalesced(lm, batch, max_tokens: int, threads: int) -> dict[str, Any]:
    out: list[Any] = [None] * len(batch)
    next_index, lock = iter(range(len(batch))), threading.Lock()
    before = lm.engine.stats.batches

    def work() -> None:
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            out[i] = lm(batch[i], max_tokens=max_tokens)

    t0 = time.perf_counter()
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return _row(out, time.perf_counter() - t0, calls=lm.engine.stats.batches - before)


def _row(out, seconds: float, calls: int) -> dict[str, Any]:
    tokens = sum(c.completion_tokens for c in out)
    return {
        "seconds": seconds,
        "completion_tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "generate_calls": calls,
        "texts": [c.text for c in out],
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["tokens_per_s"] for r in runs]
    best = max(runs, key=lambda r: r["tokens_per_s"])
    return {
        "tokens_per_s_best": round(max(rates), 2),
        "tokens_per_s_median": round(statistics.median(rates), 2),
        "tokens_per_s_all": [round(x, 2) for x in rates],
        "completion_tokens": best["completion_tokens"],
        "seconds_best": round(best["seconds"], 2),
        "generate_calls": best["generate_calls"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = arguments(__doc__, RESULTS / "lm_throughput.json")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtypes", default="bfloat16,float32", help="comma-separated; 'auto' is the default choice")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    started = time.perf_counter()

    from cotune.lm import registry

    batch = prompts(args.requests)
    lms = {d: registry.load(args.model, dtype=d, cache=False) for d in args.dtypes.split(",")}
    for lm in lms.values():  # warm-up: first calls pay for lazy initialisation
        lm.generate(batch[:2], max_tokens=4)
    runs: dict[str, dict[str, list]] = {d: {"single": [], "coalesced": []} for d in lms}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        for d, lm in lms.items():
            runs[d]["single"].append(single_stream(lm, batch, args.max_tokens))
            runs[d]["coalesced"].append(coalesced(lm, batch, args.max_tokens, args.threads))
    results = {}
    for d, lm in lms.items():
        single, merged = summarize(runs[d]["single"]), summarize(runs[d]["coalesced"])
        same = [a == b for a, b in zip(runs[d]["single"][0]["texts"], runs[d]["coalesced"][0]["texts"], strict=True)]
        results[d] = {
            "dtype": lm.dtype,
            "single_stream": single,
            "coalesced": merged,
            "speedup": round(merged["tokens_per_s_best"] / single["tokens_per_s_best"], 2),
            "coalesced_outputs_equal_single": f"{sum(same)}/{len(same)}",
        }
        lm.close()
    report = {
        "benchmark": "lm_throughput",
        "model": args.model,
        "device": next(iter(lms.values())).device,
        "requests": args.requests,
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "repeats": args.repeats,
        "results": results,
        "machine": {"load_average_before": [round(x, 2) for x in load_before]},  # the record adds the load after
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_results(args.out, report, started=started)
    return report


if __name__ == "__main__":
    report = main()
    for dtype, r in report["results"].items():
        s, c = r["single_stream"], r["coalesced"]
        print(
            f"{dtype}: single {s['tokens_per_s_best']} tok/s, {report['threads']} threads coalesced "
            f"{c['tokens_per_s_best']} tok/s in {c['generate_calls']} generate calls (x{r['speedup']}); "
            f"outputs equal {r['coalesced_outputs_equal_single']}"
        )
