"""Sampled decoding: the seeded sampler's draw by inverting each row's distribution vs ``torch.multinomial``.

    .venv/bin/python benchmarks/sampling.py                     # draw timings and 40 GSM8K chains at T=0.7
    .venv/bin/python benchmarks/sampling.py --n 16 --rounds 1   # quicker

Every sampled call (Θ's rollouts, MedPrompt's self-generated chains, GPO's proposals) draws each token from a
generator of its own (`cotune.lm.engine.sampling`). ``multinomial`` is what the sampler did before: one
``torch.multinomial`` a row, which fills a random number for every token of the vocabulary; ``inverse_cdf``
is what it does now: one uniform number a row, block sums, one cumulative sum inside the chosen block.

- ``draw``: one draw for 8 and 40 rows over SmolLM2's (49,152) and Qwen's (151,936) vocabularies, milliseconds
  (median of 20, one compute thread, as the engine's model thread runs it on a 2-core CPU it shares).
- ``chains``: ``--n`` GSM8K dev questions through the GSM8K program (chain of thought, free text, at most
  ``--max-tokens`` new tokens) on ``--model`` at temperature 0.7, request cache off, all calls at once; the
  two draws alternate (A B A B, ``--rounds`` pairs) in one process on one loaded model, so their ratio holds
  when the machine's speed drifts. The samples differ (another random stream), so token counts are reported.

Writes ``benchmarks/results/sampling.json``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench import HERE, RESULTS, arguments, write_results

DATA = HERE.parent.parent / "shared" / "data"


def multinomial(probs, uniforms):
    """The draw before: one ``torch.multinomial`` per row (the uniforms are not used; the cost is the same as a
    per-row generator's, which the fill of a number per vocabulary token dominates)."""
    import torch

    return torch.cat([torch.multinomial(row, 1) for row in probs])


def draw_times() -> list[dict[str, Any]]:
    import torch

    from cotune.lm.engine import sampling

    torch.manual_seed(0)
    rows_out = []
    for vocab in (49_152, 151_936):
        for rows in (8, 40):
            probs = torch.softmax(torch.randn(rows, vocab) * 3 / 0.7, dim=-1)
            uniforms = torch.rand(rows, dtype=torch.float64)
            row: dict[str, Any] = {"vocab": vocab, "rows": rows}
            for name, fn in (("multinomial", multinomial), ("inverse_cdf", sampling.inverse_cdf)):
                times = []
                for _ in range(20):
                    t0 = time.perf_counter()
                    fn(probs, uniforms)
                    times.append(time.perf_counter() - t0)
                row[f"{name}_ms"] = round(1000 * statistics.median(times), 2)
            row["ratio"] = round(row["multinomial_ms"] / row["inverse_cdf_ms"], 1)
            print(
                f"  vocab {vocab:7d}  rows {rows:3d}  multinomial {row['multinomial_ms']:7.2f} ms  "
                f"inverse_cdf {row['inverse_cdf_ms']:6.2f} ms  ({row['ratio']}x)",
                flush=True,
            )
            rows_out.append(row)
    return rows_out


def chains(model: str, n: int, max_tokens: int, rounds: int, threads: int, data_root: Path) -> dict[str, Any]:
    from engine import build_set

    import cotune as ct
    from cotune.lm.engine import sampling

    program, examples, metric = build_set("gsm8k", n, data_root)
    lm = ct.lm.load(model, cache=False)
    draws = {"multinomial": multinomial, "inverse_cdf": sampling.inverse_cdf}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in draws}

    def run(rollout: int, cap: int, rows) -> tuple[float, int]:
        bound = program.bind(lm)
        for p in bound.predictors():
            p.config = {**p.config, "max_tokens": cap, "temperature": 0.7, "rollout_id": rollout}
        before = lm.usage.completion_tokens
        t0 = time.perf_counter()
        ct.evaluate(bound, rows, metric, num_threads=threads, max_errors=len(rows) + 1)
        return time.perf_counter() - t0, lm.usage.completion_tokens - before

    try:
        run(0, 8, examples[:2])  # warm-up
        for r in range(rounds):
            for name, fn in draws.items():
                sampling.inverse_cdf = fn
                wall, tokens = run(r + 1, max_tokens, examples)
                runs[name].append(
                    {"seconds": round(wall, 2), "completion_tokens": tokens, "tokens_per_s": round(tokens / wall, 1)}
                )
                print(
                    f"  round {r + 1} {name:12s} {wall:7.2f} s  {tokens:6d} tokens  {tokens / wall:6.1f}/s", flush=True
                )
    finally:
        sampling.inverse_cdf = draws["inverse_cdf"]
        lm.close()
    pairs = list(zip(runs["multinomial"], runs["inverse_cdf"], strict=True))
    return {
        "model": model,
        "n": n,
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "threads": threads,
        "runs": runs,
        "tokens_per_s_ratio_inverse_cdf_over_multinomial": [
            round(b["tokens_per_s"] / a["tokens_per_s"], 2) for a, b in pairs
        ],
    }


def main() -> None:
    parser = arguments(__doc__, RESULTS / "sampling.json")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    args = parser.parse_args()
    started = time.perf_counter()

    import torch

    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    print("draw (one compute thread):", flush=True)
    draw = draw_times()
    torch.set_num_threads(threads_before)
    print(f"chains ({args.n} GSM8K questions, {args.model}, T=0.7):", flush=True)
    result = chains(args.model, args.n, args.max_tokens, args.rounds, args.threads, args.data_dir)
    write_results(args.out, {"benchmark": "sampling", "draw": draw, "chains": result}, started=started)


if __name__ == "__main__":
    main()
