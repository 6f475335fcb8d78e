"""Prompt optimization on Iris: test accuracy of zero-shot vs BFRS (vs GPO), several seeds, wall time each.

    .venv/bin/python benchmarks/prompt_opt.py --quick          # a few minutes on 2 CPU cores
    .venv/bin/python benchmarks/prompt_opt.py                  # the paper's sizes: 15 train / 35 val / 50 test

Per seed the task is re-split (``load_task("iris", seed=...)``); the optimizers get the first ``--train``
training examples as trainset and the next ``--val`` as valset (the paper: 15 / 35 of its 50), and every
program is scored on ``--test`` test examples. Each (optimizer, seed) run starts from an empty request
cache, so wall times include every model call it needs (and no call it did not). Writes JSON to
``benchmarks/results/prompt_opt.json`` (``--quick``: ``prompt_opt_quick.json``): per run accuracy, compile
and test wall time, LM usage and the BFRS trials; per optimizer mean ± sample std over seeds. Wall times
on a shared machine vary with its load: compare runs made side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import RESULTS, arguments, write_results

DEFAULT_OUT = RESULTS / "prompt_opt.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from cotune.optimize.registry import optimizer_names

    optimizers = ("zero-shot", *optimizer_names("prompt"))
    p = arguments(
        __doc__,
        None,
        out_help=f"the results file (default: {DEFAULT_OUT.name}; {DEFAULT_OUT.stem}_quick.json with --quick)",
    )
    p.add_argument("--model", default="smollm2-135m", help="registry name or path (cotune.lm.load)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--optimizers", default="zero-shot,bfrs,gpo", help=f"comma-separated, from: {', '.join(optimizers)}")
    p.add_argument("--train", type=int, default=15, help="trainset size (from the task's train split)")
    p.add_argument("--val", type=int, default=35, help="valset size (the train split after --train)")
    p.add_argument("--test", type=int, default=50, help="test examples scored per program")
    p.add_argument("--num-candidates", type=int, default=6, help="BFRS candidates (paper: 6)")
    p.add_argument("--max-bootstrapped", type=int, default=3)
    p.add_argument("--max-labeled", type=int, default=3)
    p.add_argument(
        "--concurrent-candidates", type=int, default=None, help="BFRS candidates scored at once (default all)"
    )
    p.add_argument("--gpo-steps", type=int, default=4)
    p.add_argument("--gpo-candidates", type=int, default=3)
    p.add_argument("--gpo-minibatch", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=96, help="generation limit per call")
    p.add_argument("--num-threads", type=int, default=8)
    p.add_argument(
        "--max-batch-size", type=int, default=None, help="the local model's batch limit (default: backend's)"
    )
    p.add_argument(
        "--quick", action="store_true", help="small sizes: 6 train / 10 val / 20 test, 3 candidates, 2 GPO steps"
    )
    p.add_argument(
        "--resume", action="store_true", help="keep the runs already in --out (same settings) and do the rest"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.train, args.val, args.test = 6, 10, 20
        args.num_candidates, args.gpo_steps, args.gpo_candidates, args.gpo_minibatch = 3, 2, 2, 10
    if args.out is None:
        args.out = DEFAULT_OUT.with_name(f"{DEFAULT_OUT.stem}_quick.json") if args.quick else DEFAULT_OUT
    args.optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    unknown = [o for o in args.optimizers if o not in optimizers]
    if unknown:
        p.error(f"unknown optimizer(s) {', '.join(unknown)} for --optimizers; choose from: {', '.join(optimizers)}")
    if args.train + args.val > 50:
        p.error(f"--train {args.train} + --val {args.val} must fit the 50 training flowers")
    return args


def make_optimizer(name: str, metric, seed: int, args: argparse.Namespace):
    """The optimizer from cotune's registry, with this script's settings for BFRS and GPO; None for zero-shot."""
    if name == "zero-shot":
        return None
    params = {
        "bfrs": {
            "num_candidates": args.num_candidates,
            "bootstrap.max_bootstrapped_demos": args.max_bootstrapped,
            "bootstrap.max_labeled_demos": args.max_labeled,
            "concurrent_candidates": args.concurrent_candidates,
        },
        "gpo": {
            "num_steps": args.gpo_steps,
            "candidates_per_step": args.gpo_candidates,
            "minibatch_size": args.gpo_minibatch,
        },
    }.get(name, {})
    from cotune.optimize.registry import build_optimizer

    return build_optimizer(name, metric, num_threads=args.num_threads, seed=seed, **params)


def run_one(name: str, seed: int, lm, args: argparse.Namespace) -> dict[str, Any]:
    from cotune.evaluate import evaluate
    from cotune.lm.cache import RequestCache
    from cotune.tasks import load_task

    task = load_task("iris", seed=seed)
    trainset, valset = task.train[: args.train], task.train[args.train : args.train + args.val]
    testset = task.test[: args.test]
    with tempfile.TemporaryDirectory() as tmp:
        lm.cache = RequestCache(Path(tmp) / "requests.sqlite")  # a cold cache per run: honest wall times
        program = task.program().bind(lm)
        for p in program.predictors():
            p.config = {**p.config, "max_tokens": args.max_tokens}
        usage0 = lm.usage
        t0 = time.perf_counter()
        optimizer = make_optimizer(name, task.metric, seed, args)
        if optimizer is not None:
            program = optimizer.compile(program, trainset=trainset, valset=valset)
        compile_s = time.perf_counter() - t0
        usage1 = lm.usage
        result = evaluate(program, testset, task.metric, num_threads=args.num_threads)
        lm.cache = None
    run: dict[str, Any] = {
        "optimizer": name,
        "seed": seed,
        "test_accuracy": result.score,
        "compile_seconds": compile_s,
        "test_seconds": result.seconds,
        "compile_calls": usage1.calls - usage0.calls,
        "compile_cache_hits": usage1.cache_hits - usage0.cache_hits,
        "compile_completion_tokens": usage1.completion_tokens - usage0.completion_tokens,
        "test_parse_failures": result.parse_failures,
        "test_prompt_tokens_per_call": result.usage.per_call()["prompt_tokens"],
        "demos": {n: len(p.demos) for n, p in program.named_predictors()},
    }
    if name == "bfrs":
        run["best_kind"] = optimizer.trials_[optimizer.best_index_]["kind"]
        run["trials"] = [
            {k: t[k] for k in ("index", "kind", "seed", "max_bootstrapped_demos", "demo_counts", "score", "n_passed")}
            for t in optimizer.trials_
        ]
    if name == "gpo":
        run["instructions"] = dict(optimizer.best_instructions_)
        run["val_score"] = optimizer.best_score_
    return run


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for name in dict.fromkeys(r["optimizer"] for r in runs):
        mine = [r for r in runs if r["optimizer"] == name]
        acc = [r["test_accuracy"] for r in mine]
        secs = [r["compile_seconds"] for r in mine]
        out[name] = {
            "seeds": [r["seed"] for r in mine],
            "test_accuracy_mean": statistics.fmean(acc),
            "test_accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "compile_seconds_mean": statistics.fmean(secs),
            "compile_seconds_std": statistics.stdev(secs) if len(secs) > 1 else 0.0,
        }
    return out


# Settings that do not change what a run measures, so --resume may differ in them.
_FREE_SETTINGS = {"seeds", "optimizers", "resume", "out"}


def previous_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The runs saved in ``args.out`` by a run with the same settings (for ``--resume``)."""
    if not args.out.is_file():
        return []
    saved = json.loads(args.out.read_text())
    mine = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in _FREE_SETTINGS}
    theirs = {k: v for k, v in saved.get("settings", {}).items() if k not in _FREE_SETTINGS}
    if mine != theirs:
        changed = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        raise SystemExit(f"--resume: {args.out} was written with other settings ({', '.join(changed)}); drop --resume")
    return list(saved.get("runs", []))


def write_report(args: argparse.Namespace, runs: list[dict[str, Any]], load_s: float, started: float) -> None:
    report = {
        "benchmark": "prompt_opt",
        "task": "iris",
        "model": args.model,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model_load_seconds": load_s,
        "summary": summarize(runs),
        "runs": runs,
    }
    write_results(args.out, report, started=started)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import cotune.lm

    t0 = started = time.perf_counter()
    lm = cotune.lm.load(args.model, **({"max_batch_size": args.max_batch_size} if args.max_batch_size else {}))
    load_s = time.perf_counter() - t0
    runs = previous_runs(args) if args.resume else []
    done = {(r["optimizer"], r["seed"]) for r in runs}
    for name in args.optimizers:  # optimizer-major: a slow optimizer does not hold up the others' seeds
        for seed in args.seeds:
            if (name, seed) in done:
                continue
            run = run_one(name, seed, lm, args)
            runs.append(run)
            write_report(args, runs, load_s, started)  # after every run, so a killed benchmark keeps what it measured
            print(
                f"seed {seed} {name:9s} test acc {run['test_accuracy']:.3f}  compile {run['compile_seconds']:.1f}s"
                f"  ({run['compile_calls']} calls)",
                file=sys.stderr,
            )
    summary = summarize(runs)
    for name, s in summary.items():
        print(
            f"{name:9s} test accuracy {s['test_accuracy_mean']:.3f} ± {s['test_accuracy_std']:.3f}   "
            f"compile {s['compile_seconds_mean']:.1f} ± {s['compile_seconds_std']:.1f} s",
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
