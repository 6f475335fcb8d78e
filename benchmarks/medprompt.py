"""MedPrompt ladder and GPO on BIG-Bench Hard multiple-choice tasks: test accuracy and tokens per question.

    .venv/bin/python benchmarks/medprompt.py --quick                 # small splits, ~10-30 min on 2 CPU cores
    .venv/bin/python benchmarks/medprompt.py                          # 30 train / 20 dev / 100 test a task
    .venv/bin/python benchmarks/medprompt.py --model qwen2.5-coder-0.5b

The ladder (MedPrompt, Nori et al. 2023), each rung adding one technique:

    zero-shot        direct answer, no demos
    few-shot         direct answer, k random labeled demos
    + CoT            chain of thought, k random self-generated CoT demos (the model's own passing runs)
    + kNN            chain of thought, the k self-generated demos nearest to each question (KNNFewShot)
    + ensemble       + ChoiceShuffleEnsemble: m option orders, answers mapped back, majority vote

Instruction optimization on the same tasks (chain of thought, no demos): zero-shot vs an OPRO-style
ablation (top-scoring past instructions, no edit budget) vs GPO (relevance retrieval, cosine budget).

Per rung: test accuracy, prompt / completion tokens per question (all calls a question needs, so the
ensemble shows its m-fold cost), calls per question, parse failures. One request cache per run, so the
ensemble's first (original) order reuses the kNN rung's answers and self-generation runs once; the
tokens are counted either way. Writes ``benchmarks/results/medprompt.json``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import RESULTS, ROOT, arguments, write_results

DATA = ROOT / ".." / "shared" / "data" / "bbh"
TASKS = ("hyperbaton", "logical_deduction_three_objects", "date_understanding")
RUNGS = ("zero-shot", "few-shot", "+ CoT", "+ kNN", "+ ensemble")
GPO_VARIANTS = ("zero-shot CoT", "OPRO-style", "GPO")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = arguments(__doc__, RESULTS / "medprompt.json")
    p.add_argument("--model", default="smollm2-135m", help="registry name or path (cotune.lm.load)")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated BBH multiple-choice subtasks")
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=30, help="training examples (demo pool, GPO task examples)")
    p.add_argument("--dev", type=int, default=20, help="GPO validation examples")
    p.add_argument("--test", type=int, default=100, help="test examples per task")
    p.add_argument("--k", type=int, default=5, help="demos per question")
    p.add_argument("--m", type=int, default=5, help="ensemble option orders")
    p.add_argument("--cot-tokens", type=int, default=160, help="generation limit of chain-of-thought calls")
    p.add_argument("--direct-tokens", type=int, default=24, help="generation limit of direct answers")
    p.add_argument("--gpo-steps", type=int, default=4)
    p.add_argument("--gpo-candidates", type=int, default=3)
    p.add_argument("--gpo-minibatch", type=int, default=16)
    p.add_argument("--no-gpo", action="store_true", help="skip the instruction-optimization part")
    p.add_argument("--num-threads", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="10 train / 6 dev / 12 test, k=3, 2 GPO steps x 2 candidates")
    args = p.parse_args(argv)
    if args.quick:
        args.train, args.dev, args.test, args.k = 10, 6, 12, 3
        args.gpo_steps, args.gpo_candidates, args.gpo_minibatch = 2, 2, 6
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    return args


def with_tokens(program, limit: int):
    for predictor in program.predictors():
        predictor.config = {**predictor.config, "max_tokens": limit}
    return program


def score(name: str, program, testset, metric, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    from cotune.evaluate import evaluate

    result = evaluate(program, testset, metric, num_threads=args.num_threads, max_errors=None, description=name)
    n, u = len(testset), result.usage
    row = {
        "rung": name,
        "test_accuracy": result.score,
        "prompt_tokens_per_question": u.prompt_tokens / n,
        "completion_tokens_per_question": u.completion_tokens / n,
        "tokens_per_question": (u.prompt_tokens + u.completion_tokens) / n,
        "calls_per_question": u.calls / n,
        "parse_failures": result.parse_failures,
        "errors": result.errors,
        "seconds": result.seconds,
    } | extra
    agreements = [r.prediction["agreement"] for r in result.rows if r.prediction and "agreement" in r.prediction]
    if agreements:
        row["mean_agreement"] = statistics.fmean(agreements)
    print(
        f"  {name:14s} acc {row['test_accuracy']:.3f}  tokens/q {row['tokens_per_question']:7.0f}  "
        f"calls/q {row['calls_per_question']:.1f}  parse fails {row['parse_failures']}",
        file=sys.stderr,
    )
    return row


def ladder(task, lm, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from cotune.data import Example
    from cotune.optimize.bootstrap import BootstrapFewShot
    from cotune.optimize.knn import KNNFewShot
    from cotune.optimize.labeled import LabeledFewShot
    from cotune.optimize.self_cot import self_generated_demos
    from cotune.program.ensemble import ChoiceShuffleEnsemble
    from cotune.tasks.multiple_choice import MultipleChoiceQA

    instruction = task.program().choose.instruction
    direct = with_tokens(MultipleChoiceQA(instruction, cot=False).bind(lm), args.direct_tokens)
    cot = with_tokens(MultipleChoiceQA(instruction).bind(lm), args.cot_tokens)
    rows = [score("zero-shot", direct, task.test, task.metric, args)]

    few = LabeledFewShot(k=args.k, seed=args.seed).compile(direct, trainset=task.train)
    rows.append(score("few-shot", few, task.test, task.metric, args, demos=len(few.choose.demos)))

    t0 = time.perf_counter()
    bootstrap = BootstrapFewShot(task.metric, num_threads=args.num_threads, seed=args.seed)
    generated = self_generated_demos(cot, task.train, bootstrap=bootstrap)
    generate_s = time.perf_counter() - t0
    pool = generated.demos["choose"]
    rng = random.Random(args.seed)
    chosen = rng.sample(pool, min(args.k, len(pool)))
    if len(chosen) < args.k:  # too few passing runs: labeled demos fill the rest
        fill = LabeledFewShot(k=args.k - len(chosen), seed=args.seed).compile(cot, trainset=task.train).choose.demos
        chosen += [Example(d) for d in fill]
    random_cot = cot.deepcopy()
    random_cot.choose.demos = chosen
    rows.append(score("+ CoT", random_cot, task.test, task.metric, args, demos=len(chosen)))

    knn_opt = KNNFewShot(args.k, bootstrap=bootstrap, seed=args.seed)  # same runs: answered from the cache
    knn = knn_opt.compile(cot, trainset=task.train)
    rows.append(score("+ kNN", knn, task.test, task.metric, args, demos=args.k))

    ensemble = ChoiceShuffleEnsemble(knn, m=args.m, seed=args.seed)
    rows.append(score("+ ensemble", ensemble, task.test, task.metric, args, demos=args.k, m=args.m))
    info = {
        "self_generated": {"passed": generated.n_passed, "run": generated.n_run, "seconds": generate_s},
        "knn_pool": knn_opt.pool_sizes_["choose"],
        "embedder": knn_opt.embedder_,
    }
    return rows, info


def instruction_optimization(task, lm, args: argparse.Namespace) -> list[dict[str, Any]]:
    from cotune.optimize.gpo import GPO
    from cotune.tasks.multiple_choice import MultipleChoiceQA

    cot = with_tokens(MultipleChoiceQA(task.program().choose.instruction).bind(lm), args.cot_tokens)
    rows = [score("zero-shot CoT", cot, task.test, task.metric, args)]
    common = {
        "num_steps": args.gpo_steps,
        "candidates_per_step": args.gpo_candidates,
        "minibatch_size": args.gpo_minibatch,
        "num_threads": args.num_threads,
        "seed": args.seed,
    }
    variants = {
        "OPRO-style": GPO(task.metric, retrieval="topk", edit_budget="none", **common),
        "GPO": GPO(task.metric, **common),
    }
    for name, optimizer in variants.items():
        t0 = time.perf_counter()
        best = optimizer.compile(cot, trainset=task.train, valset=task.dev)
        compile_s = time.perf_counter() - t0
        rows.append(
            score(
                name,
                best,
                task.test,
                task.metric,
                args,
                compile_seconds=compile_s,
                val_score=optimizer.best_score_,
                instruction=best.choose.instruction,
            )
        )
    return rows


def summarize(per_task: dict[str, dict[str, Any]], key: str, names: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for name in names:
        rows = [r for t in per_task.values() for r in t.get(key, []) if r["rung"] == name]
        if rows:
            out[name] = {
                "test_accuracy_mean": statistics.fmean(r["test_accuracy"] for r in rows),
                "tokens_per_question_mean": statistics.fmean(r["tokens_per_question"] for r in rows),
                "calls_per_question_mean": statistics.fmean(r["calls_per_question"] for r in rows),
            }
    return out


def table(per_task: dict[str, dict[str, Any]], key: str, names: tuple[str, ...], title: str) -> str:
    tasks = list(per_task)
    head = f"| {title} | " + " | ".join(tasks) + " | mean acc | tokens/q |"
    lines = [head, "|" + "---|" * (len(tasks) + 3)]
    summary = summarize(per_task, key, names)
    for name in names:
        if name not in summary:
            continue
        cells = []
        for t in tasks:
            row = next((r for r in per_task[t].get(key, []) if r["rung"] == name), None)
            cells.append("–" if row is None else f"{row['test_accuracy']:.2f}")
        s = summary[name]
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {s['test_accuracy_mean']:.3f} | {s['tokens_per_question_mean']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import cotune.lm
    from cotune.lm.cache import RequestCache
    from cotune.tasks import load_task
    from cotune.tasks.bbh import is_multiple_choice

    t0 = time.perf_counter()
    lm = cotune.lm.load(args.model)
    load_s = time.perf_counter() - t0
    per_task: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        lm.cache = RequestCache(Path(tmp) / "requests.sqlite")  # fresh per run: every call is made here
        for subtask in args.tasks:
            task = load_task(
                f"bbh:{subtask}", data_dir=args.data_dir, seed=args.seed, train=args.train, dev=args.dev, test=args.test
            )
            if not is_multiple_choice(task):
                raise SystemExit(f"--tasks: bbh:{subtask} is not multiple choice")
            print(
                f"bbh:{subtask} ({len(task.train)} train / {len(task.dev)} dev / {len(task.test)} test)",
                file=sys.stderr,
            )
            t1 = time.perf_counter()
            rows, info = ladder(task, lm, args)
            per_task[subtask] = {"ladder": rows, "info": info, "options": len(task.test[0]["options"])}
            if not args.no_gpo:
                per_task[subtask]["instructions"] = instruction_optimization(task, lm, args)
            per_task[subtask]["seconds"] = time.perf_counter() - t1
        lm.cache = None
    report = {
        "benchmark": "medprompt",
        "model": args.model,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model_load_seconds": load_s,
        "summary": {
            "ladder": summarize(per_task, "ladder", RUNGS),
            "instructions": summarize(per_task, "instructions", GPO_VARIANTS),
        },
        "tasks": per_task,
        "wall_seconds": time.perf_counter() - t0,
    }
    write_results(args.out, report)
    print(table(per_task, "ladder", RUNGS, f"MedPrompt ladder ({args.model})"))
    if not args.no_gpo:
        print()
        print(table(per_task, "instructions", GPO_VARIANTS, f"Instruction optimization ({args.model})"))
    print(f"\nwrote {args.out} in {report['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
