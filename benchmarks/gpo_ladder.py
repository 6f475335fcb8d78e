"""GPO ladder on BIG-Bench Hard: what an optimizer LM's instructions add over none and over "think step by step".

    .venv/bin/python benchmarks/gpo_ladder.py --estimate     # the plan: calls and time per rung, loads nothing
    .venv/bin/python benchmarks/gpo_ladder.py --quick        # smoke run: two tasks, 8 test questions (~30 min)
    .venv/bin/python benchmarks/gpo_ladder.py                # the full ladder (~6.5 h)

The full command is the defaults: task model qwen2.5-coder-0.5b, optimizer model qwen2.5-coder-1.5b (``pip
install -e ".[qwen15]"``), tasks object_counting (free text), date_understanding and
logical_deduction_three_objects (multiple choice), each split once (seed 0) into 50 train (examples the
optimizer LM sees), 50 dev (GPO's mini-batch and final check) and 150 test questions. Rungs, each evaluated on
the same test questions with chain of thought:

    empty         no instruction at all
    CoT           "Let's think step by step."
    OPRO-style    GPO's loop with OPRO's choices: the top-scoring past instructions, no edit budget
    GPO           relevance retrieval, generation, a cosine edit budget (50 -> 10 words)

Both optimizers start from the CoT instruction (``--start empty`` starts them from nothing). Per rung: test
accuracy with its Wilson 95% interval, the instruction, its word edit distance from the start instruction, and
for the optimizers the optimizer calls (every attempt, retries included), the proposals rejected over budget,
unparsable, empty or duplicate (`GPO.rejected_`), the trajectory, and the calls and tokens of both models.

Resuming: every call goes through one request cache (``--cache``, default runs/gpo_ladder-cache.sqlite); run
the same command again after an interruption and it continues where it stopped. The results file is rewritten
after each rung, marked ``"complete": false`` until the last, each rung naming the commit that ran it. A rung
already in the results file (same settings) is kept, not run again: committed, the file carries a run that was
cut off to a machine without its cache (``--fresh`` runs everything). Progress lines go to stderr. The empty
and CoT rungs of every task run first, with the task model alone; the optimizer model is loaded after them (two
local models in one process slow each other's generations). Writes ``benchmarks/results/gpo_ladder.json``.

Time (``--estimate``; speeds and token counts in benchmarks/ladder_estimate.py; 2-core bf16 CPU): per task the
empty and CoT rungs take ~5 min each (150 chains of thought in batches of 64); each optimizer ~45 min: 1 + 6 x 4
mini-batch scorings of 16 dev questions (400 calls; a step's 4 proposals are scored together, in batches of 64),
136 calls to confirm the best 3 on the rest of dev, the 150 test calls, and 24 proposals of the 1.5B (up to 72
with retries), all 34/25 as long as alone with both models loaded. Three tasks: 4.8 h, up to 6.3 h if every
proposal is retried (``--estimate`` with other ``--steps`` / ``--candidates`` gives theirs).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import RESULTS, ROOT, arguments, commit, write_results
from ladder_estimate import gpo_plan, render, task_stats
from ladders import (
    CACHE_DIR,
    default_loader,
    earlier_run,
    kept_rungs,
    make_embedder,
    open_cache,
    pooled,
    progress_events,
    require_models,
    score_rung,
    settings_of,
    stderr_say,
    table,
    usage_delta,
    with_tokens,
)

DATA = ROOT / ".." / "shared" / "data" / "bbh"
TASKS = ("object_counting", "date_understanding", "logical_deduction_three_objects")
RUNGS = ("empty", "CoT", "OPRO-style", "GPO")
# The settings a kept rung must share with this run (the others say where things are, or which tasks run).
SAME = (
    *("model", "optimizer_model", "seed", "train", "dev", "test", "start", "opro_retrieval", "steps", "candidates"),
    *("minibatch", "num_confirm", "max_retries", "cot_tokens", "embedder", "dtype"),
)
COT_INSTRUCTION = "Let's think step by step."
STARTS = {"cot": COT_INSTRUCTION, "empty": ""}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = arguments(__doc__, RESULTS / "gpo_ladder.json")
    p.add_argument("--model", default="qwen2.5-coder-0.5b", help="the task model (cotune.lm.load name or path)")
    p.add_argument("--optimizer-model", default="qwen2.5-coder-1.5b", help="the model that writes instructions")
    p.add_argument(
        "--tasks", default=None, help=f"comma-separated BBH subtasks, free text or multiple choice ({','.join(TASKS)})"
    )
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--cache", type=Path, default=CACHE_DIR / "gpo_ladder-cache.sqlite", help="the run's request cache")
    p.add_argument("--seed", type=int, default=0, help="the split and the optimizers' seed")
    p.add_argument("--train", type=int, default=50, help="training examples (shown to the optimizer LM)")
    p.add_argument("--dev", type=int, default=50, help="validation examples (mini-batch and final check)")
    p.add_argument("--test", type=int, default=150, help="test questions per task")
    p.add_argument("--start", choices=sorted(STARTS), default="cot", help="the optimizers' start instruction")
    p.add_argument("--opro-retrieval", choices=("topk", "recency"), default="topk")
    p.add_argument("--steps", type=int, default=6, help="GPO steps")
    p.add_argument("--candidates", type=int, default=4, help="proposals per step")
    p.add_argument("--minibatch", type=int, default=16, help="dev questions each proposal is scored on")
    p.add_argument("--num-confirm", type=int, default=3, help="best proposals re-scored on the whole dev split")
    p.add_argument("--max-retries", type=int, default=2, help="retries of an over-budget or unparsable proposal")
    p.add_argument("--cot-tokens", type=int, default=256, help="generation limit of the task model's calls")
    p.add_argument("--embedder", choices=("default", "tfidf"), default="default", help="GPO's relevance retrieval")
    p.add_argument("--num-threads", type=int, default=64, help="questions in flight (the engine batches them)")
    p.add_argument("--dtype", default="auto", help="the models' dtype (cotune.lm.load)")
    p.add_argument("--estimate", action="store_true", help="print the planned calls and time, run nothing")
    p.add_argument("--quick", action="store_true", help="two tasks, 10 train / 6 dev / 8 test, 2 steps x 2 candidates")
    p.add_argument("--fresh", action="store_true", help="run every rung, none kept from the results file")
    args = p.parse_args(argv)
    if args.quick:
        args.train, args.dev, args.test = 10, 6, 8
        args.steps, args.candidates, args.minibatch, args.num_confirm = 2, 2, 4, 1
        args.tasks = args.tasks or ",".join(TASKS[:2])
    args.tasks = [t.strip() for t in (args.tasks or ",".join(TASKS)).split(",") if t.strip()]
    if not args.tasks:
        p.error(f"--tasks names no BBH subtask; e.g. --tasks {','.join(TASKS)}")
    return args


def program_with(task: Any, instruction: str, lm: Any, cot_tokens: int) -> Any:
    """The task's chain-of-thought program on ``lm`` with ``instruction`` (possibly empty) in every predictor."""
    program = with_tokens(task.program().bind(lm), cot_tokens)
    for predictor in program.predictors():
        predictor.instruction = instruction
    return program


def optimizer(name: str, task: Any, args: argparse.Namespace, optimizer_lm: Any, embedder: Any) -> Any:
    from cotune.optimize.gpo import GPO

    common = dict(
        optimizer_lm=optimizer_lm,
        num_steps=args.steps,
        candidates_per_step=args.candidates,
        minibatch_size=args.minibatch,
        num_confirm=args.num_confirm,
        max_retries=args.max_retries,
        num_threads=args.num_threads,
        seed=args.seed,
    )
    if name == "OPRO-style":
        return GPO(task.metric, retrieval=args.opro_retrieval, update="generation", edit_budget="none", **common)
    return GPO(
        task.metric, retrieval="relevance", update="generation", edit_budget="cosine", embedder=embedder, **common
    )


def optimizer_record(gpo: Any) -> dict[str, Any]:
    """What a compiled GPO tells about its search: every optimizer call it made (each attempt ends as a
    proposal in the trajectory, a duplicate, or a rejection), the rejections by reason, the trajectory."""
    rejected: dict[str, int] = {}
    for counts in gpo.rejected_.values():
        for reason, n in counts.items():
            rejected[reason] = rejected.get(reason, 0) + n
    proposals = sum(len(steps) - 1 for steps in gpo.trajectory_.values())  # step 0 is the start
    return {
        "optimizer_calls": proposals + sum(rejected.values()),
        "proposals_scored": proposals,
        "rejected": rejected,
        "val_score": gpo.best_score_,
        "confirmed": {name: list(scores.values()) for name, scores in gpo.confirmed_.items()},
        "trajectory": [dict(e, predictor=name) for name, steps in gpo.trajectory_.items() for e in steps],
    }


def rung_row(name: str, program: Any, task: Any, args: argparse.Namespace, say: Callable, **extra: Any) -> dict:
    """A rung's row (see ladders.score_rung) with its instruction and word edit distance from the start."""
    from cotune.optimize.edit import word_edit_distance

    instruction = next(iter(program.predictors())).instruction
    distance = word_edit_distance(STARTS[args.start], instruction)
    common = dict(model=args.model, num_threads=args.num_threads, say=say)
    row = score_rung(name, program, task.test, task.metric, **common, instruction=instruction, **extra)
    return row | {"edit_distance_from_start": distance, "commit": commit()["commit"]}


def baselines(
    task: Any, lm: Any, args: argparse.Namespace, say: Callable[[str], None], kept: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The empty and CoT rungs (no optimizer model needed), each kept from an earlier run where ``kept`` has it."""
    rows = []
    for i, (name, instruction) in enumerate((("empty", ""), ("CoT", COT_INSTRUCTION)), 1):
        say(f"[gpo ladder] {task.name} rung {i}/{len(RUNGS)}: {name}{' (kept)' if name in kept else ''}")
        row = kept.get(name) or rung_row(name, program_with(task, instruction, lm(), args.cot_tokens), task, args, say)
        rows.append(row)
    return rows


def optimized(
    task: Any,
    lm: Any,
    optimizer_lm: Any,
    args: argparse.Namespace,
    embedder: Any,
    say: Callable[[str], None],
    rows: list[dict[str, Any]],
    done: Callable[[], None],
) -> None:
    """The OPRO-style and GPO rungs, each compiled from the start instruction, then evaluated on test, appended to
    ``rows`` (``done()`` after each); a rung already in ``rows`` (kept from an earlier run) is not run again."""
    have = {r["rung"] for r in rows}
    for i, name in enumerate(RUNGS[2:], 3):
        say(f"[gpo ladder] {task.name} rung {i}/{len(RUNGS)}: {name}{' (kept)' if name in have else ''}")
        if name in have:
            continue
        gpo = optimizer(name, task, args, optimizer_lm, embedder)
        task_before, opt_before = lm.usage, optimizer_lm.usage
        t0 = time.perf_counter()
        best = gpo.compile(
            program_with(task, STARTS[args.start], lm, args.cot_tokens),
            trainset=task.train,
            valset=task.dev,
            events=progress_events(say, f"  {name}"),
        )
        compile_s = round(time.perf_counter() - t0, 1)
        usage = {"task_model": usage_delta(task_before, lm.usage)}
        if optimizer_lm is not lm:  # one LM for both: its calls are the task model's too
            usage["optimizer_model"] = usage_delta(opt_before, optimizer_lm.usage)
        extra = dict(compile_seconds=compile_s, compile_usage=usage, **optimizer_record(gpo))
        rows.append(rung_row(name, best, task, args, say, **extra))
        say(f"  {name}: {rows[-1]['instruction']!r} ({rows[-1]['edit_distance_from_start']} words from the start)")
        done()


def main(argv: list[str] | None = None, *, load_model: Callable[[str, Any], Any] | None = None) -> int:
    """Run the ladder; ``load_model(name, cache)`` loads a model (tests pass one that returns a FakeLM).

    The empty and CoT rungs of every task run first, with the task model alone: a second local model in the
    process slows the first one's generations (README, "Good to know"), so the optimizer model is loaded only
    for the rungs that need it.
    """
    args = parse_args(argv)
    say = stderr_say
    if args.estimate:
        stats = {t: task_stats(args.data_dir, t) for t in args.tasks}
        print(render(gpo_plan(args, stats, dict.fromkeys(args.tasks, args.test)), f"GPO ladder ({args.model})"))
        return 0
    from cotune.tasks import load_task

    started = time.perf_counter()
    sizes = {"train": args.train, "dev": args.dev, "test": args.test}
    tasks = [load_task(f"bbh:{t}", data_dir=args.data_dir, seed=args.seed, **sizes) for t in args.tasks]
    if load_model is None:
        require_models(args.model, args.optimizer_model)
    cache = open_cache(args.cache, say)
    held = len(cache)
    load = load_model or default_loader(args.dtype)
    earlier = earlier_run(args.out, args, SAME, say)
    kept = {task.name: kept_rungs(earlier, task.name, args.model) for task in tasks}
    loaded: list[Any] = []

    def lm() -> Any:
        """The task model, loaded when a rung first needs it (a run whose rungs are all kept loads none)."""
        if not loaded:
            loaded.append(load(args.model, cache))
        return loaded[0]

    per_task: dict[str, dict[str, Any]] = {}

    def write(complete: bool) -> dict[str, Any]:
        report = {
            "benchmark": "gpo_ladder",
            "complete": complete,
            "model": args.model,
            "optimizer_model": args.optimizer_model,
            "start_instruction": STARTS[args.start],
            "settings": settings_of(args),
            "request_cache": {"path": str(args.cache), "calls_held_at_start": held},
            "kept_from_earlier_run": [f"{t} {r}" for t, rows in kept.items() for r in rows],
            "summary": pooled([r for t in per_task.values() for r in t["rungs"]], RUNGS),
            "tasks": per_task,
        }
        write_results(args.out, report, started=started)
        return report

    for i, task in enumerate(tasks, 1):
        kind = "multiple choice" if "options" in task.test[0] else "free text"
        n = f"{len(task.train)} train / {len(task.dev)} dev / {len(task.test)} test"
        say(f"{task.name} ({kind}; {n}) [{i}/{len(tasks)}]")
        t0 = time.perf_counter()
        per_task[task.name] = {"kind": kind, "rungs": baselines(task, lm, args, say, kept[task.name])}
        per_task[task.name]["seconds"] = round(time.perf_counter() - t0, 1)
        report = write(complete=False)

    optimizer_lm = None
    for i, task in enumerate(tasks, 1):
        rows = per_task[task.name]["rungs"]
        rows += [kept[task.name][r] for r in RUNGS[2:] if r in kept[task.name]]
        if optimizer_lm is None and any(r not in kept[task.name] for r in RUNGS[2:]):
            optimizer_lm = lm() if args.optimizer_model == args.model else load(args.optimizer_model, cache)
            embedder = make_embedder(args.embedder, lm())
        say(f"{task.name}: the optimizers [{i}/{len(tasks)}]")
        t0 = time.perf_counter()
        if optimizer_lm is not None:
            optimized(task, lm(), optimizer_lm, args, embedder, say, rows, lambda: write(complete=False))
        per_task[task.name]["seconds"] += round(time.perf_counter() - t0, 1)
        report = write(complete=i == len(tasks))
    if optimizer_lm is not None and loaded and optimizer_lm is not loaded[0]:
        optimizer_lm.close()
    print(table(report["summary"], f"GPO ladder ({args.model}, optimizer {args.optimizer_model})"))
    for name, t in per_task.items():
        for r in t["rungs"]:
            print(f"{name} {r['rung']}: {r['instruction']!r} ({r['edit_distance_from_start']} words from the start)")
    print(f"\nwrote {args.out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
