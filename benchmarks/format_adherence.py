"""Format adherence: does every call parse, constrained vs free? Accuracy, tokens and time per call too.

    .venv/bin/python benchmarks/format_adherence.py                       # both models, five tasks, 50 each
    .venv/bin/python benchmarks/format_adherence.py --models smollm2-135m --tasks iris --n 20

For each embedded model × task (iris, gsm8k, hotpotqa, bbh:date_understanding,
bbh:logical_deduction_three_objects), the task's own zero-shot program runs on the first N dev examples
twice: with constrained decoding (the default on local models) and free (``constrained=False``, the
lenient parser). Reported per run: the share of calls that parse, accuracy, completion tokens and
seconds per call, reasoning tokens per call, and for constrained runs the grammar engine's share of the
generation time (its per-step work: advance, check or mask, apply; ``--full-mask`` masks every row every step,
the reference for the optimistic check). The request cache is off, so every call runs.
Writes benchmarks/results/format_adherence.json. Targets: ≥ 99% parse constrained; grammar overhead ≤ 10%.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench import HERE, RESULTS, arguments, commit, cpu_model, write_results

DATA = HERE.parent.parent / "shared" / "data"
TASKS = ["iris", "gsm8k", "hotpotqa", "bbh:date_understanding", "bbh:logical_deduction_three_objects"]
MODELS = ["smollm2-135m", "qwen2.5-coder-0.5b"]


def data_dir(task: str, root: Path) -> Path | None:
    family = task.split(":")[0]
    return None if family == "iris" else root / family


def run_one(lm, task, n: int, constrained: bool, threads: int) -> dict:
    import cotune as ct

    program = task.program().bind(lm)
    for p in program.predictors():
        p.constrained = constrained
    examples = list(task.dev)[:n]
    engine = lm.engine
    grammar = engine.grammar
    mask0, gen0, usage0 = grammar.mask_seconds, engine.generate_seconds, lm.usage
    t0 = time.perf_counter()
    result = ct.evaluate(program, examples, task.metric, num_threads=threads, max_errors=len(examples) + 1)
    wall = time.perf_counter() - t0
    usage = lm.usage
    steps = [s for row in result.rows for s in row.trace]
    parsed = [s for s in steps if s.error is None]
    reasoning = [s.outputs.get("reasoning", "") for s in parsed if s.outputs]
    tok = engine.tokenizer
    calls = usage.calls - usage0.calls
    gen = engine.generate_seconds - gen0
    return {
        "examples": len(examples),
        "calls": calls,
        "parse_rate": len(parsed) / len(steps) if steps else 0.0,
        "accuracy": result.score,
        "completion_tokens_per_call": (usage.completion_tokens - usage0.completion_tokens) / max(calls, 1),
        "reasoning_tokens_per_call": sum(len(tok.encode(r)) for r in reasoning) / max(len(reasoning), 1),
        "seconds_per_call": wall / max(calls, 1),
        "wall_seconds": wall,
        "generate_seconds": gen,
        "grammar_seconds": grammar.mask_seconds - mask0,
        "grammar_share_of_generation": (grammar.mask_seconds - mask0) / gen if gen else 0.0,
        "failures": [s.completion[:300] for s in steps if s.error is not None][:3],
    }


def main() -> None:
    ap = arguments(__doc__, RESULTS / "format_adherence.json")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--threads", type=int, default=50)
    ap.add_argument("--data-root", type=Path, default=DATA)
    ap.add_argument(
        "--full-mask",
        action="store_true",
        help="fill every row's grammar bitmask every step (the reference for the optimistic check)",
    )
    args = ap.parse_args()
    started = time.perf_counter()

    import cotune as ct
    from cotune.hardware import cpu_has_bf16
    from cotune.tasks import load_task

    bf16_cpu = cpu_has_bf16()  # None where the CPU's flags cannot be read
    where = {"commit": commit()["commit"], "cpu": cpu_model()}

    out = {"n": args.n, "runs": []}
    if args.out.exists():  # keep the rows of other models and tasks when rerunning some
        old = json.loads(args.out.read_text())
        rerun = {(m, t) for m in args.models.split(",") for t in args.tasks.split(",")}
        out["runs"] = [r for r in old.get("runs", []) if (r["model"], r["task"]) not in rerun]
    for model in args.models.split(","):
        lm = ct.lm.load(model, cache=False)
        lm.engine.grammar.optimistic = not args.full_mask
        for name in args.tasks.split(","):
            task = load_task(name, data_dir=data_dir(name, args.data_root))
            row = {
                "model": model,
                "task": name,
                "dtype": str(lm.engine.dtype),
                "bf16_cpu": bf16_cpu,
                "created": time.strftime("%Y-%m-%d"),
                "grammar_mask": "full" if args.full_mask else "optimistic",
                **where,
            }  # rows of one file may come from different machines and commits
            for constrained in (True, False):
                key = "constrained" if constrained else "free"
                row[key] = run_one(lm, task, args.n, constrained, args.threads)
                r = row[key]
                print(
                    f"{model:20s} {name:38s} {key:11s} parse {r['parse_rate']:.0%} acc {r['accuracy']:.2f} "
                    f"tok/call {r['completion_tokens_per_call']:.0f} s/call {r['seconds_per_call']:.2f} "
                    f"grammar {r['grammar_share_of_generation']:.1%}",
                    flush=True,
                )
            out["runs"].append(row)
            write_results(args.out, out, started=started)
        lm.close()
    cons = [r["constrained"] for r in out["runs"]]
    out["targets"] = {
        "parse_at_least_99_constrained": all(c["parse_rate"] >= 0.99 for c in cons),
        "grammar_overhead_at_most_10_percent": all(c["grammar_share_of_generation"] <= 0.10 for c in cons),
        "min_parse_rate_constrained": min(c["parse_rate"] for c in cons),
        "max_grammar_share": max(c["grammar_share_of_generation"] for c in cons),
    }
    write_results(args.out, out, started=started)
    print(json.dumps(out["targets"], indent=2))


if __name__ == "__main__":
    main()
