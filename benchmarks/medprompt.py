"""MedPrompt ladder on BIG-Bench Hard multiple-choice tasks: accuracy, tokens and calls per question, rung by rung.

    .venv/bin/python benchmarks/medprompt.py --estimate     # the plan: calls and time per rung, loads nothing
    .venv/bin/python benchmarks/medprompt.py --quick        # smoke run: 8 test questions on two tasks (~12 min)
    .venv/bin/python benchmarks/medprompt.py --task-model qwen2.5-coder-1.5b     # the full ladder (1.2-2.5 h)

The full command runs the defaults: task model qwen2.5-coder-0.5b on date_understanding,
logical_deduction_three_objects and hyperbaton, each split once (seed 0): 50 training questions (the demo pool,
self-generated chains) and 50 test questions a task, 150 in all. First a zero-shot check: every task's
zero-shot accuracy and answer distribution with ``--model``, printed and recorded. Every task's ladder runs
with ``--model``; a task where that accuracy is at chance (its 95% interval reaches the chance level) runs its
ladder with ``--task-model`` as well (the 1.5B: ``pip install -e ".[qwen15]"``), on the first
``--task-model-test`` test questions, after all of ``--model``'s (``tasks_on_task_model`` in the results;
without ``--task-model``: a warning). Every row names its model. The ladder (Nori et al. 2023), each
rung adding one technique:

    zero-shot     direct answer, no demos
    few-shot      direct answer, k random labeled demos
    + CoT         chain of thought, k random self-generated chains (the model's own passing runs on train)
    + kNN         chain of thought, the k self-generated chains nearest to each question (KNNFewShot)
    + ensemble    + ChoiceShuffleEnsemble: m option orders, answers mapped back, majority vote

Per rung: test accuracy with its Wilson 95% interval, prompt and completion tokens and calls per question (all
calls a question needs, so the ensemble shows its m-fold cost), parse failures, the answer distribution; per
task the share of self-generated chains that passed. Pooled over tasks per model and rung in ``summary``.

Resuming: every call goes through one request cache (``--cache``, default runs/medprompt-cache.sqlite); run the
same command again after an interruption and it continues where it stopped. The results file is rewritten after
each task, marked ``"complete": false`` until the last, and each ladder in it names the commit that ran it. A
ladder already in the results file (same settings) is kept, not run again: committed, the file carries a run that
was cut off to a machine without its cache (``--fresh`` runs everything). Progress lines go to stderr.
Writes ``benchmarks/results/medprompt.json``.

Time (``--estimate``; speeds and token counts in benchmarks/ladder_estimate.py; 2-core bf16 CPU): the zero-shot
check ~1 min a task; a ladder on the 0.5B with 50 questions makes 50 + 50 direct calls and 50 self-generation + 50
+ 50 + 200 chains of thought with 5 demos (hyperbaton's 2 options: 50 more, not 200), ~27 min for
date_understanding, 34 for logical_deduction_three_objects, 12 for hyperbaton: 1.2 h in all. A task at chance
also run on the 1.5B (30 questions) takes 55, 63 or 30 min more: 2.5 h more if all three are.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import RESULTS, ROOT, arguments, commit, write_results
from ladder_estimate import medprompt_plan, render, task_stats
from ladders import (
    CACHE_DIR,
    OnModelThread,
    answer_distribution,
    at_chance,
    chance_level,
    default_loader,
    earlier_run,
    kept_ladder,
    make_embedder,
    open_cache,
    pooled,
    progress_events,
    require_models,
    score_rung,
    settings_of,
    stderr_say,
    table,
    with_tokens,
)

DATA = ROOT / ".." / "shared" / "data" / "bbh"
TASKS = ("date_understanding", "logical_deduction_three_objects", "hyperbaton")
RUNGS = ("zero-shot", "few-shot", "+ CoT", "+ kNN", "+ ensemble")
# The settings a kept ladder must share with this run (the others say where things are, or which ladders run).
SAME = ("seed", "train", "test", "task_model_test", "k", "m", "cot_tokens", "direct_tokens", "embedder", "dtype")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = arguments(__doc__, RESULTS / "medprompt.json")
    p.add_argument("--model", default="qwen2.5-coder-0.5b", help="the task model and the zero-shot check's")
    p.add_argument(
        "--task-model", default=None, help="a second ladder's model where --model is at chance (e.g. the 1.5B)"
    )
    p.add_argument(
        "--task-model-when",
        choices=("at-chance", "always"),
        default="at-chance",
        help="which tasks --task-model's ladder runs on as well",
    )
    p.add_argument("--task-model-test", type=int, default=30, help="test questions a task run with --task-model")
    p.add_argument("--tasks", default=None, help=f"comma-separated BBH multiple-choice subtasks ({','.join(TASKS)})")
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--cache", type=Path, default=CACHE_DIR / "medprompt-cache.sqlite", help="the run's request cache")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=50, help="training questions (demo pool, self-generated chains)")
    p.add_argument("--test", type=int, default=50, help="test questions per task")
    p.add_argument("--k", type=int, default=5, help="demos per question")
    p.add_argument("--m", type=int, default=5, help="ensemble option orders")
    p.add_argument("--cot-tokens", type=int, default=256, help="generation limit of chain-of-thought calls")
    p.add_argument("--direct-tokens", type=int, default=24, help="generation limit of direct answers")
    p.add_argument("--embedder", choices=("default", "tfidf"), default="default", help="kNN's embedder")
    p.add_argument("--num-threads", type=int, default=64, help="questions in flight (the engine batches them)")
    p.add_argument("--dtype", default="auto", help="the models' dtype (cotune.lm.load)")
    p.add_argument("--estimate", action="store_true", help="print the planned calls and time, run nothing")
    p.add_argument("--quick", action="store_true", help="two tasks, 10 train / 8 test, k=3")
    p.add_argument("--fresh", action="store_true", help="run every ladder, none kept from the results file")
    args = p.parse_args(argv)
    if args.quick:
        args.train, args.test, args.k, args.task_model_test = 10, 8, 3, 6
        args.tasks = args.tasks or ",".join(TASKS[:2])
    args.tasks = [t.strip() for t in (args.tasks or ",".join(TASKS)).split(",") if t.strip()]
    if not args.tasks:
        p.error(f"--tasks names no BBH subtask; e.g. --tasks {','.join(TASKS)}")
    return args


def programs(task: Any, lm: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """The task's direct-answer and chain-of-thought programs on ``lm`` (answers: a choice of its letters)."""
    from cotune.tasks.multiple_choice import MultipleChoiceQA

    letters = max(len(ex["options"]) for ex in [*task.train, *task.dev, *task.test])
    instruction = task.program().choose.instruction
    direct = with_tokens(MultipleChoiceQA(instruction, cot=False, letters=letters).bind(lm), args.direct_tokens)
    cot = with_tokens(MultipleChoiceQA(instruction, letters=letters).bind(lm), args.cot_tokens)
    return direct, cot


def zero_shot_check(task: Any, lm: Any, args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    """Zero-shot accuracy and answer distribution of ``--model`` on the whole test split, against chance."""
    direct, _ = programs(task, lm, args)
    say(f"[zero-shot check] {task.name} with {args.model}")
    row = score_rung(
        "zero-shot", direct, task.test, task.metric, model=args.model, num_threads=args.num_threads, say=say
    )
    chance = chance_level(task.test)
    row |= {"chance": chance, "at_chance": at_chance(row, chance), "gold": answer_distribution(task.test)}
    say(
        f"  answers {row['answers']}  gold {row['gold']}  chance {chance:.2f}{'  AT CHANCE' if row['at_chance'] else ''}"
    )
    return row


def ladder(task: Any, testset: Any, lm: Any, model: str, args: argparse.Namespace, say: Callable[[str], None]):
    """The five rungs on ``testset``; returns the rows and what self-generation and kNN found."""
    from cotune.data import Example
    from cotune.optimize.bootstrap import BootstrapFewShot
    from cotune.optimize.knn import KNNFewShot
    from cotune.optimize.labeled import LabeledFewShot
    from cotune.optimize.self_cot import self_generated_demos
    from cotune.program.ensemble import ChoiceShuffleEnsemble

    direct, cot = programs(task, lm, args)
    common = dict(model=model, num_threads=args.num_threads, say=say)

    def step(i: int) -> None:
        say(f"[medprompt] {task.name} rung {i}/{len(RUNGS)}: {RUNGS[i - 1]} ({model}, {len(testset)} questions)")

    step(1)
    rows = [score_rung("zero-shot", direct, testset, task.metric, **common)]
    step(2)
    few = LabeledFewShot(k=args.k, seed=args.seed).compile(direct, trainset=task.train)
    rows.append(score_rung("few-shot", few, testset, task.metric, demos=len(few.choose.demos), **common))

    step(3)
    t0 = time.perf_counter()
    bootstrap = BootstrapFewShot(task.metric, num_threads=args.num_threads, seed=args.seed)
    events = progress_events(say, "  self-generation")
    generated = self_generated_demos(cot, task.train, bootstrap=bootstrap, events=events)
    generate_s = round(time.perf_counter() - t0, 1)
    pool = generated.demos["choose"]
    say(f"  self-generated chains: {generated.n_passed}/{generated.n_run} passed ({generate_s:.0f} s)")
    chosen = random.Random(args.seed).sample(pool, min(args.k, len(pool)))
    filled = args.k - len(chosen)
    if filled:  # too few passing runs: labeled demos fill the rest
        fill = LabeledFewShot(k=filled, seed=args.seed).compile(cot, trainset=task.train).choose.demos
        chosen += [Example(d) for d in fill]
    random_cot = cot.deepcopy()
    random_cot.choose.demos = chosen
    rows.append(score_rung("+ CoT", random_cot, testset, task.metric, demos=len(chosen), labeled_fill=filled, **common))

    step(4)
    embedder = make_embedder(args.embedder, lm)
    knn_opt = KNNFewShot(args.k, bootstrap=bootstrap, embedder=embedder, seed=args.seed)
    knn = knn_opt.compile(cot, trainset=task.train)  # the same runs as above: answered by the cache
    ensemble = ChoiceShuffleEnsemble(knn, m=args.m, seed=args.seed)
    if isinstance(embedder, OnModelThread):  # every query of both rungs, embedded before they run
        embedder.warm(query_texts(testset, knn.choose.signature.input_names, ensemble.permutations))
    rows.append(score_rung("+ kNN", knn, testset, task.metric, demos=args.k, **common))

    step(5)
    rows.append(score_rung("+ ensemble", ensemble, testset, task.metric, demos=args.k, m=args.m, **common))
    info = {
        "self_generated": {
            "passed": generated.n_passed,
            "run": generated.n_run,
            "share_passed": generated.n_passed / generated.n_run if generated.n_run else 0.0,
            "seconds": generate_s,
        },
        "knn_pool": knn_opt.pool_sizes_["choose"],
        "embedder": repr(embedder),
    }
    return rows, info


def query_texts(testset: Any, fields: Any, orders: Callable[[Any], Any]) -> list[str]:
    """What kNN embeds for each test question in each option order the ensemble asks (the first: kNN's own)."""
    from cotune.program.choices import format_options
    from cotune.program.selectors import demo_text

    texts = []
    for ex in testset:
        for order in orders(ex["options"]):
            shown = [ex["options"][i] for i in order]
            texts.append(demo_text({"question": ex["question"], "choices": format_options(shown)}, fields))
    return texts


def ladder_runs(
    tasks: list[Any], checks: dict[str, Any], args: argparse.Namespace
) -> list[tuple[Any, str, int | None]]:
    """(task, model, test questions or None for all) of every ladder to run: each task's with ``--model``, then
    ``--task-model``'s where ``--model`` is at chance (or on every task): all of one model's before the other's, as
    a second local model in the process slows the first one's generations (README, "Good to know")."""
    runs = [(task, args.model, None) for task in tasks]
    if args.task_model:
        wanted = [t for t in tasks if args.task_model_when == "always" or checks[t.name]["at_chance"]]
        runs += [(task, args.task_model, args.task_model_test) for task in wanted]
    return runs


def estimate(args: argparse.Namespace) -> str:
    stats = {t: task_stats(args.data_dir, t) for t in args.tasks}
    text = render(medprompt_plan(args, stats, args.model, args.test), f"MedPrompt ladder ({args.model})")
    if args.task_model:
        alt = medprompt_plan(args, stats, args.task_model, args.task_model_test)
        title = f"\nand where --model is at chance, {args.task_model} ({args.task_model_test} questions) as well"
        text += render({t: rows[1:] for t, rows in alt.items()}, title)
    return text


def main(argv: list[str] | None = None, *, load_model: Callable[[str, Any], Any] | None = None) -> int:
    """Run the check and the ladder; ``load_model(name, cache)`` loads a model (tests pass a FakeLM maker)."""
    args = parse_args(argv)
    say = stderr_say
    if args.estimate:
        print(estimate(args))
        return 0
    from cotune.tasks import load_task
    from cotune.tasks.bbh import is_multiple_choice

    started = time.perf_counter()
    tasks = []
    for name in args.tasks:
        task = load_task(f"bbh:{name}", data_dir=args.data_dir, seed=args.seed, train=args.train, dev=0, test=args.test)
        if not is_multiple_choice(task):
            raise SystemExit(f"--tasks: bbh:{name} is not multiple choice (the ensemble shuffles options)")
        tasks.append(task)
    if load_model is None:
        require_models(args.model, *([args.task_model] if args.task_model else []))
    cache = open_cache(args.cache, say)
    held = len(cache)
    load = load_model or default_loader(args.dtype)
    earlier = earlier_run(args.out, args, SAME, say)
    models: dict[str, Any] = {}

    def model_lm(name: str) -> Any:
        """``name`` loaded, alone: a second local model in the process slows the first one's generations."""
        if name not in models:
            for lm in models.values():
                lm.close()
            models.clear()
            models[name] = load(name, cache)
        return models[name]

    checks = {}
    for task in tasks:
        kept = (earlier or {}).get("zero_shot_check", {}).get(task.name)
        if kept and kept.get("model") == args.model:
            say(f"[zero-shot check] {task.name}: kept from {args.out}")
            checks[task.name] = kept
        else:
            checks[task.name] = zero_shot_check(task, model_lm(args.model), args, say)
    runs = ladder_runs(tasks, checks, args)
    per_model: dict[str, dict[str, dict[str, Any]]] = {args.model: {}, args.task_model: {}}
    kept_names: list[str] = []

    def write(complete: bool) -> dict[str, Any]:
        report = {
            "benchmark": "medprompt",
            "complete": complete,
            "model": args.model,
            "task_model": args.task_model,
            "settings": settings_of(args),
            "request_cache": {"path": str(args.cache), "calls_held_at_start": held},
            "kept_from_earlier_run": kept_names,
            "zero_shot_check": checks,
            "summary": pooled(
                [r for ladders in per_model.values() for t in ladders.values() for r in t["rungs"]], RUNGS
            ),
            "tasks": per_model[args.model],
            "tasks_on_task_model": per_model.get(args.task_model, {}) if args.task_model else {},
        }
        write_results(args.out, report, started=started)
        return report

    report = write(complete=False)  # the check, kept even if a ladder is cut off
    for i, (task, model, n) in enumerate(runs, 1):
        if checks[task.name]["at_chance"] and model == args.model and not args.task_model:
            say(f"warning: {args.model} is at chance on {task.name}; --task-model NAME runs its ladder with NAME too")
        section = "tasks" if model == args.model else "tasks_on_task_model"
        kept = kept_ladder(earlier, section, task.name, model)
        if kept is not None:
            say(f"[medprompt] {task.name} on {model}: kept from {args.out} (commit {str(kept['commit'])[:7]})")
            per_model[model][task.name] = kept
            kept_names.append(f"{model} {task.name}")
            report = write(complete=i == len(runs))
            continue
        testset = task.test if n is None else task.test[:n]
        t0 = time.perf_counter()
        rows, info = ladder(task, testset, model_lm(model), model, args, say)
        done = {"model": model, "options": len(task.test[0]["options"]), "rungs": rows} | info
        per_model[model][task.name] = done | {
            "seconds": round(time.perf_counter() - t0, 1),
            "commit": commit()["commit"],
        }
        report = write(complete=i == len(runs))
    for lm in models.values():
        lm.close()
    for name, c in checks.items():
        verdict = "at chance" if c["at_chance"] else "above chance"
        print(
            f"zero-shot check {name} ({args.model}): {c['test_accuracy']:.3f} [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]"
            f", chance {c['chance']:.2f}: {verdict}; answers {c['answers']}, gold {c['gold']}"
        )
    print(table(report["summary"], "MedPrompt ladder"))
    print(f"\nwrote {args.out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
