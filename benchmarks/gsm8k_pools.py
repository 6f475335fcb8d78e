"""GSM8K: do tuned programs score alike on unseen train.jsonl questions and on unseen test.jsonl questions?

Table 1's GSM8K dev set (50 questions from train.jsonl) ran far ahead of its test set for the tuned programs
(Π 44% dev, 25.5% test) but not for zero-shot (16 vs 16.5%). This probe tells noise from a pool effect (a model
that saw GSM8K's training questions): it scores zero-shot and saved programs on ``--n`` train.jsonl questions
that are in neither the table's train nor its dev split, and on the ``--n`` test.jsonl questions after the
table's test split.

    .venv/bin/python benchmarks/gsm8k_pools.py --data-dir ../shared/data/gsm8k RUN/seed-0/p/program.json ...

``--labeled 3,8`` also scores programs holding k labeled demos (gold solutions as reasoning, drawn from the
table's train split as `LabeledFewShot` draws them): do more worked examples help the model?
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from bench import RESULTS, arguments, write_results


def demo_counts(text: str) -> list[int]:
    """``"3,8"`` → [3, 8]; anything else is an argparse error that names the value."""
    try:
        counts = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected positive demo counts such as 3,8, got {text!r}")
    return counts


def main() -> None:
    ap = arguments(__doc__, RESULTS / "gsm8k_pools.json")
    ap.add_argument("programs", nargs="*", type=Path, help="saved programs (program.json) to score beside zero-shot")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--n", type=int, default=100, help="questions per pool")
    ap.add_argument("--train", type=int, default=200, help="the table's train size (excluded from the pool)")
    ap.add_argument("--dev", type=int, default=50, help="the table's dev size (excluded from the pool)")
    ap.add_argument("--test", type=int, default=200, help="the table's test size (the test pool starts after it)")
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument(
        "--labeled", type=demo_counts, default=[], help="comma-separated demo counts k: also score k labeled demos"
    )
    args = ap.parse_args()
    started = time.perf_counter()

    from cotune.evaluate.evaluate import evaluate
    from cotune.lm.registry import load
    from cotune.optimize.labeled import LabeledFewShot
    from cotune.tasks import load_task
    from cotune.tasks.gsm8k import GSM8KSolver, read_split

    task = load_task("gsm8k", data_dir=args.data_dir, seed=0, train=args.train, dev=args.dev, test=args.test)
    used = {ex["question"] for ex in [*task.train, *task.dev]}
    unseen = [ex for ex in read_split(args.data_dir, "train") if ex["question"] not in used]
    random.Random(1).shuffle(unseen)
    pools = {
        "train_pool": unseen[: args.n],
        "test_pool": list(read_split(args.data_dir, "test", limit=args.test + args.n))[args.test :],
    }
    lm = load(args.model)
    programs = {"zero-shot": GSM8KSolver().bind(lm)}
    for path in args.programs:
        programs["/".join(path.parts[-3:-1])] = GSM8KSolver().load(path, lm=lm)  # e.g. seed-0/p
    for k in args.labeled:
        programs[f"labeled k={k}"] = (
            LabeledFewShot(k=k, seed=0).compile(GSM8KSolver(), trainset=list(task.train)).bind(lm)
        )
    rows = []
    for name, program in programs.items():
        for p in program.predictors():
            p.config["max_tokens"] = args.max_tokens
        for pool, data in pools.items():
            result = evaluate(program, data, task.metric, num_threads=64, description=f"{name} {pool}")
            rows.append({"program": name, "pool": pool, "n": len(data), "accuracy": result.score})
            print(f"{name:<40} {pool:<10} {result.score:6.1%}  ({len(data)} questions)", flush=True)
    write_results(args.out, {"benchmark": "gsm8k_pools", "model": args.model, "rows": rows}, started=started)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
