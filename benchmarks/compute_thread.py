"""One compute thread per process: generation after torch work on another thread, against through `run_compute`.

    .venv/bin/python benchmarks/compute_thread.py            # SmolLM2-135M, the machine's default dtype

The Θ step trains an adapter between generations. Trained on the calling thread, that work starts a second
team of OpenMP threads beside the engine's; with more OpenMP threads than cores libgomp stops spinning between
parallel regions, and every later generation is slower. Through ``lm.run_compute`` it runs on the engine's model
thread. Each way runs in its own process: a batch of greedy generations (the "before"), torch work standing
in for training (matrix products with gradients), the same batch again (the "after"), three rounds each.
Writes ``benchmarks/results/compute_thread.json``: the after/before ratio of each way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from bench import RESULTS, arguments, write_results

PROMPTS = 32
MAX_TOKENS = 48


def child(way: str, dtype: str) -> dict:
    """In a fresh process: generation seconds before and after torch work done ``way``."""
    import torch

    import cotune as ct

    lm = ct.lm.load("smollm2-135m", cache=False, dtype=dtype, constrained=False)
    prompts = [[{"role": "user", "content": f"Describe flower number {i} in one sentence."}] for i in range(PROMPTS)]

    def generate() -> float:
        t = time.perf_counter()
        lm.generate(prompts, max_tokens=MAX_TOKENS, temperature=0.0)
        return time.perf_counter() - t

    def train_like() -> None:
        w = torch.randn(576, 576, requires_grad=True)
        x = torch.randn(256, 576)
        for _ in range(60):
            loss = torch.tanh(x @ w @ w.T).sum()
            loss.backward()

    generate()  # warm-up
    rounds = []
    for _ in range(3):
        before = generate()
        lm.run_compute(train_like) if way == "run_compute" else train_like()
        rounds.append({"before": before, "after": generate()})
    return {"way": way, "dtype": lm.dtype, "rounds": rounds}


def main() -> None:
    ap = arguments(__doc__, RESULTS / "compute_thread.json")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--child", default=None, help=argparse_hidden())
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dtype)))
        return
    started = time.perf_counter()
    rows = []
    for way in ("calling thread", "run_compute"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", way, "--dtype", args.dtype],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["after_over_before"] = sum(r["after"] for r in row["rounds"]) / sum(r["before"] for r in row["rounds"])
        rows.append(row)
        print(f"{way:<16} after/before {row['after_over_before']:.2f}  {row['rounds']}")
    write_results(args.out, {"prompts": PROMPTS, "max_tokens": MAX_TOKENS, "rows": rows}, started=started)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
