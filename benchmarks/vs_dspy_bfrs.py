"""Head-to-head: DSPy's BootstrapFewShotWithRandomSearch vs cotune's, same model, settings, data and endpoint.

    .venv/bin/pip install dspy                                  # benchmark-only; not a cotune dependency
    .venv/bin/python benchmarks/vs_dspy_bfrs.py --quick         # 3 candidates, 6 train / 10 val / 20 test
    .venv/bin/python benchmarks/vs_dspy_bfrs.py                 # paper settings: 6 candidates, 50 test

(``pip install dspy`` pulls in litellm, which pins ``huggingface-hub<2`` and ``filelock<4``; if it
downgrades them, restore the versions in constraints.txt with ``pip install --no-deps``: both libraries
still import and this benchmark still runs.)

One process starts an OpenAI-compatible server on 127.0.0.1 over SmolLM2-135M (``cotune.serve.server``, no
server-side cache, batching across concurrent requests) and both libraries talk to it over HTTP:

- cotune: ``OpenAICompatible`` with a fresh, empty `RequestCache`, the task's `IrisClassifier`
  (one ChainOfThought predictor), `cotune.optimize.random_search.BootstrapFewShotWithRandomSearch`.
- DSPy: ``dspy.LM("openai/smollm2-135m", cache=False)`` with DSPy's caches switched off,
  ``dspy.ChainOfThought`` over the same signature, instruction and field descriptions, and
  ``dspy.BootstrapFewShotWithRandomSearch``. DSPy's ``num_candidate_programs=N`` builds N + 3 candidates
  (its seeds -3, -2, -1 are zero-shot, labeled-only and the unshuffled bootstrap), so N = candidates - 3
  gives both libraries the same candidate kinds.

Same settings on both sides: the Iris metric (``species_match``), candidates, 3 bootstrapped + 3 labeled
demos, one bootstrap round, 8 threads (cotune's client also keeps at most 8 requests in flight), temperature
0, the same ``max_tokens``, trainset 15 / valset 35 (the paper's split of Iris's 50 training flowers) and
the same test examples. Each compile starts from empty caches, so neither side gets free hits from the
other. Exceptions in DSPy (e.g. an unparseable answer after its JSON fallback) count as failures (score 0),
just as cotune counts a parse failure as a failed prediction; DSPy's ``max_errors`` is raised so that the
small model's format errors do not abort its compile.

Writes ``benchmarks/results/vs_dspy_bfrs.json`` (``--quick``: ``vs_dspy_bfrs_quick.json``): both compile wall
times, the ratio dspy/cotune, both test accuracies, per-side call counts, settings, versions and a machine
note. Wall times on a shared machine vary with its load; the ratio, measured within one run, is the number
to compare (the target is cotune >= 3x faster at equal or better accuracy).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench import RESULTS, arguments, write_results

DEFAULT_OUT = RESULTS / "vs_dspy_bfrs.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = arguments(
        __doc__,
        None,
        out_help=f"the results file (default: {DEFAULT_OUT.name}; {DEFAULT_OUT.stem}_quick.json with --quick)",
    )
    p.add_argument("--model", default="smollm2-135m", help="registry name served on the endpoint")
    p.add_argument("--num-candidates", type=int, default=6, help="candidate programs in all (paper: 6; >= 3)")
    p.add_argument("--max-bootstrapped", type=int, default=3)
    p.add_argument("--max-labeled", type=int, default=3)
    p.add_argument("--num-threads", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=96, help="generation limit per call (both sides)")
    p.add_argument("--train", type=int, default=15, help="trainset: the first N of Iris's 50 training flowers")
    p.add_argument("--val", type=int, default=35, help="valset: the next N training flowers")
    p.add_argument("--test-limit", type=int, default=50, help="test examples scored per compiled program")
    p.add_argument(
        "--timeout", type=float, default=600.0, help="seconds per HTTP request, both sides (litellm's default)"
    )
    p.add_argument("--seed", type=int, default=0, help="Iris split seed and cotune's search seed")
    p.add_argument("--order", default="dspy,cotune", help="which side compiles first (comma-separated)")
    p.add_argument("--quick", action="store_true", help="3 candidates, 6 train / 10 val / 20 test")
    args = p.parse_args(argv)
    if args.quick:
        args.num_candidates, args.train, args.val, args.test_limit = 3, 6, 10, 20
    if args.out is None:
        args.out = DEFAULT_OUT.with_name(f"{DEFAULT_OUT.stem}_quick.json") if args.quick else DEFAULT_OUT
    if args.num_candidates < 3:
        p.error(f"--num-candidates {args.num_candidates}: DSPy always builds its 3 fixed candidates; use >= 3")
    if args.train + args.val > 50:
        p.error(f"--train {args.train} + --val {args.val} must fit the 50 training flowers")
    args.order = [s.strip() for s in args.order.split(",") if s.strip()]
    if sorted(args.order) != ["cotune", "dspy"]:
        p.error(f"--order {','.join(args.order)!r}: name both sides once, e.g. dspy,cotune")
    return args


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


# -- cotune ------------------------------------------------------------------------------------------------


def run_cotune(task, trainset, valset, testset, url: str, args: argparse.Namespace) -> dict[str, Any]:
    from cotune.evaluate import evaluate
    from cotune.lm.cache import RequestCache
    from cotune.lm.remote.openai_compat import OpenAICompatible
    from cotune.optimize.registry import build_optimizer

    with tempfile.TemporaryDirectory() as tmp:
        lm = OpenAICompatible(
            args.model,
            base_url=url,
            api_key="x",
            max_concurrency=args.num_threads,
            timeout=args.timeout,
            cache=RequestCache(Path(tmp) / "requests.sqlite"),
        )
        program = task.program().bind(lm)
        for pred in program.predictors():
            pred.config = {**pred.config, "temperature": 0.0, "max_tokens": args.max_tokens}
        optimizer = build_optimizer(
            "bfrs",
            task.metric,
            num_candidates=args.num_candidates,
            bootstrap={"max_bootstrapped_demos": args.max_bootstrapped, "max_labeled_demos": args.max_labeled},
            num_threads=args.num_threads,
            seed=args.seed,
        )
        t0 = time.perf_counter()
        compiled = optimizer.compile(program, trainset=trainset, valset=valset)
        compile_s = time.perf_counter() - t0
        usage = lm.usage
        # The test flowers are disjoint from train/val, so the compile cache gives no free test answers.
        t1 = time.perf_counter()
        result = evaluate(compiled, testset, task.metric, num_threads=args.num_threads, max_errors=None)
        test_s = time.perf_counter() - t1
        lm.close()
    return {
        "compile_seconds": compile_s,
        "test_seconds": test_s,
        "test_accuracy": result.score,
        "test_parse_failures": result.parse_failures,
        "compile_calls": usage.calls,
        "compile_cache_hits": usage.cache_hits,
        "val_scores": [t["score"] for t in optimizer.trials_],
        "best_kind": optimizer.trials_[optimizer.best_index_]["kind"],
        "demos": {n: len(p.demos) for n, p in compiled.named_predictors()},
    }


# -- DSPy --------------------------------------------------------------------------------------------------


def _counting_callback():
    """A DSPy callback that counts LM calls (imported lazily: dspy is a benchmark-only dependency)."""
    from dspy.utils.callback import BaseCallback

    class CountingCallback(BaseCallback):
        def __init__(self):
            self.calls = 0
            self._lock = threading.Lock()

        def on_lm_start(self, call_id, instance, inputs):
            with self._lock:
                self.calls += 1

    return CountingCallback()


def dspy_signature(dspy):
    """The Iris signature in DSPy: same fields, instruction and field descriptions as cotune's."""
    from cotune.tasks import iris

    sig = dspy.Signature("petal_length, petal_width, sepal_length, sepal_width -> species", iris.INSTRUCTION)
    cotune_sig = iris.signature()
    for field in cotune_sig.inputs + cotune_sig.outputs:
        if field.desc:
            sig = sig.with_updated_fields(field.name, desc=field.desc)
    return sig


def run_dspy(task, trainset, valset, testset, url: str, args: argparse.Namespace) -> dict[str, Any]:
    import dspy

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    counter = _counting_callback()
    lm = dspy.LM(
        f"openai/{args.model}",
        api_base=url,
        api_key="x",
        cache=False,
        temperature=0.0,
        max_tokens=args.max_tokens,
        timeout=args.timeout,
        callbacks=[counter],
    )
    dspy.configure(lm=lm)

    def to_dspy(ex):
        return dspy.Example(**{k: ex[k] for k in ex.keys()}).with_inputs(*task.about.inputs)

    d_train, d_val, d_test = ([to_dspy(e) for e in s] for s in (trainset, valset, testset))

    def metric(example, pred, trace=None):
        return task.metric(example, {"species": getattr(pred, "species", "") or ""})

    student = dspy.ChainOfThought(dspy_signature(dspy))
    optimizer = dspy.BootstrapFewShotWithRandomSearch(
        metric=metric,
        max_bootstrapped_demos=args.max_bootstrapped,
        max_labeled_demos=args.max_labeled,
        max_rounds=1,
        num_candidate_programs=args.num_candidates - 3,  # plus DSPy's 3 fixed candidates
        num_threads=args.num_threads,
        max_errors=10**6,
    )
    t0 = time.perf_counter()
    compiled = optimizer.compile(student, trainset=d_train, valset=d_val)
    compile_s = time.perf_counter() - t0
    compile_calls = counter.calls

    def score(ex) -> tuple[float, bool]:
        try:
            return metric(ex, compiled(**ex.inputs())), False
        except Exception:  # DSPy raises on unparseable output; a failed prediction, as in cotune
            return 0.0, True

    t1 = time.perf_counter()
    with ThreadPoolExecutor(args.num_threads) as pool:
        rows = list(pool.map(score, d_test))
    test_s = time.perf_counter() - t1
    return {
        "compile_seconds": compile_s,
        "test_seconds": test_s,
        "test_accuracy": sum(s for s, _ in rows) / len(rows),
        "test_errors": sum(e for _, e in rows),
        "compile_calls": compile_calls,
        "val_scores_percent": [c["score"] for c in getattr(compiled, "candidate_programs", [])],  # best first
        "demos": {n: len(p.demos) for n, p in compiled.named_predictors()},
    }


# -- main --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    # litellm otherwise tries to fetch a price list from the internet at import.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import dspy  # noqa: F401
    except ImportError as e:
        print(f"dspy is not importable ({e}); install it with: .venv/bin/pip install dspy", file=sys.stderr)
        return 2
    import cotune.lm.registry
    from cotune.serve.server import start_server
    from cotune.tasks import load_task

    task = load_task("iris", seed=args.seed)
    trainset, valset = task.train[: args.train], task.train[args.train : args.train + args.val]
    testset = task.test[: args.test_limit]

    t0 = time.perf_counter()
    lm = cotune.lm.registry.load(args.model, cache=False)
    load_s = time.perf_counter() - t0
    runners = {"cotune": run_cotune, "dspy": run_dspy}
    sides: dict[str, dict[str, Any]] = {}
    with start_server(lm, port=0) as handle:
        for name in args.order:
            sides[name] = runners[name](task, trainset, valset, testset, handle.url, args)
            s = sides[name]
            print(
                f"{name:6s} compile {s['compile_seconds']:.1f}s ({s['compile_calls']} calls)  "
                f"test acc {s['test_accuracy']:.3f}",
                file=sys.stderr,
            )
    ratio = sides["dspy"]["compile_seconds"] / sides["cotune"]["compile_seconds"]
    report = {
        "benchmark": "vs_dspy_bfrs",
        "task": "iris",
        "model": args.model,
        "compile_seconds": {k: sides[k]["compile_seconds"] for k in ("dspy", "cotune")},
        "ratio_dspy_over_cotune": ratio,
        "test_accuracy": {k: sides[k]["test_accuracy"] for k in ("dspy", "cotune")},
        "target_met": ratio >= 3.0 and sides["cotune"]["test_accuracy"] >= sides["dspy"]["test_accuracy"],
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "dspy_num_candidate_programs": args.num_candidates - 3,
            "temperature": 0.0,
            "max_rounds": 1,
            "caches": "fresh/empty per side; server uncached",
        },
        "versions": {
            "cotune": _version("cotune"),
            "dspy": _version("dspy"),
            "litellm": _version("litellm"),
            "torch": _version("torch"),
            "transformers": _version("transformers"),
        },
        "model_load_seconds": load_s,
        "machine": {"note": "shared machine (other jobs running); absolute times vary with load, compare the ratio"},
        "sides": sides,
    }
    write_results(args.out, report, started=started)
    print(
        f"compile: dspy {sides['dspy']['compile_seconds']:.1f}s  cotune {sides['cotune']['compile_seconds']:.1f}s  "
        f"ratio {ratio:.2f}x   test acc: dspy {sides['dspy']['test_accuracy']:.3f}  "
        f"cotune {sides['cotune']['test_accuracy']:.3f}"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
