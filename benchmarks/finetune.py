"""Weight optimization Θ on Iris: test accuracy zero-shot vs BootstrapFinetune, training speed and memory.

    .venv/bin/python benchmarks/finetune.py --quick        # 3 seeds, smaller splits and fewer rollouts
    .venv/bin/python benchmarks/finetune.py                # 3 seeds, 50 train / 50 test, 4 rollouts
    .venv/bin/python benchmarks/finetune.py --learning-rates 1e-4,3e-4,1e-3   # the learning-rate sweep
    .venv/bin/python benchmarks/finetune.py --labeled-demos 2     # Π(labeled demos)→Θ instead of Θ only
    .venv/bin/python benchmarks/finetune.py --overhead-only       # just the cotune / bare PEFT step ratio

On a CPU shared with other jobs add ``--torch-threads 1``: oversubscribed torch threads were up to 10x
slower there.

Per seed the task is re-split (``load_task("iris", seed=...)``). The zero-shot program is scored on the
test examples (with ``--labeled-demos``, the program first gets that many labeled demos per species,
and "zero_shot" in the results means that prompt); then BootstrapFinetune collects the program's own traces on the training examples (greedy
plus sampled rollouts: the zero-shot SmolLM2 rarely answers Iris right, so sampling finds the passing
runs), trains one LoRA adapter per learning rate on the same traces (collected once, reused through
``traces=FILE``), and the fine-tuned program is scored on the same test examples.

Overhead: cotune's `train_lora` and a bare PEFT loop (the loop a user would write: HF loss over full
logits, random batches) train on the same chat examples with the same hyperparameters, alternately,
``--overhead-reps`` times; the ratio of their median step times is reported (target <= 1.2).

Timings on a shared CPU are noisy: the overhead runs alternate so both loops see the same load.
Writes JSON to ``benchmarks/results/finetune.json``.
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = arguments(__doc__, RESULTS / "finetune.json")
    p.add_argument("--model", default="smollm2-135m", help="registry name or path (cotune.lm.load)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train", type=int, default=50, help="training examples (traces are collected on them)")
    p.add_argument("--test", type=int, default=50, help="test examples scored per program")
    p.add_argument("--rollouts", type=int, default=4, help="runs per training example (1 greedy + sampled)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the extra rollouts")
    p.add_argument("--learning-rates", default=None, help="comma-separated; default: TrainingConfig's default")
    p.add_argument("--epochs", type=int, default=None, help="default: TrainingConfig's default")
    p.add_argument(
        "--labeled-demos",
        type=int,
        default=0,
        help="labeled demos per species in the program before Θ (a stand-in for a Π step); 0: Θ only",
    )
    p.add_argument("--max-tokens", type=int, default=96, help="generation limit per call")
    p.add_argument("--num-threads", type=int, default=16)
    p.add_argument("--overhead-reps", type=int, default=3, help="alternating cotune / bare PEFT runs")
    p.add_argument("--overhead-steps", type=int, default=6, help="optimizer steps per overhead run")
    p.add_argument(
        "--overhead-only",
        action="store_true",
        help="only the cotune / bare PEFT step-time ratio, on labeled Iris completions",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's); 1 is far faster on a CPU shared with other jobs",
    )
    p.add_argument("--quick", action="store_true", help="30 train / 30 test, 3 rollouts, 3 epochs, 2 overhead reps")
    args = p.parse_args(argv)
    if args.quick:
        args.train, args.test, args.rollouts, args.overhead_reps = 30, 30, 3, 2
        args.epochs = args.epochs or 3
    from cotune.training import TrainingConfig

    default = TrainingConfig()
    args.learning_rates = (
        [float(x) for x in args.learning_rates.split(",")] if args.learning_rates else [default.learning_rate]
    )
    args.epochs = args.epochs or default.epochs
    return args


def with_tokens(program, limit: int):
    for predictor in program.predictors():
        predictor.config = {**predictor.config, "max_tokens": limit}
    return program


def run_seed(lm, seed: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from cotune.errors import TrainingError
    from cotune.evaluate import evaluate
    from cotune.optimize.finetune import BootstrapFinetune
    from cotune.tasks import load_task
    from cotune.training import TrainingConfig

    task = load_task("iris", seed=seed)
    train, test = list(task.train)[: args.train], list(task.test)[: args.test]
    program = with_tokens(task.program().bind(lm), args.max_tokens)
    if args.labeled_demos:
        program.classify.demos = labeled_demos(train, args.labeled_demos, seed)
    t0 = time.perf_counter()
    zero = evaluate(program, test, task.metric, num_threads=args.num_threads)
    out: dict[str, Any] = {
        "seed": seed,
        "labeled_demos": len(program.classify.demos),
        "zero_shot": {
            "accuracy": zero.score,
            "seconds": time.perf_counter() - t0,
            "parse_failures": zero.parse_failures,
        },
    }
    traces = None
    out["finetune"] = []
    for lr in args.learning_rates:
        tuner = BootstrapFinetune(
            task.metric,
            training=TrainingConfig(learning_rate=lr, epochs=args.epochs),
            num_rollouts=args.rollouts,
            rollout_temperature=args.temperature,
            output_dir=workdir / f"seed{seed}-lr{lr:g}",
            traces=traces,
            num_threads=args.num_threads,
            seed=seed,
        )
        t0 = time.perf_counter()
        try:
            tuned = tuner.compile(program, trainset=train)
        except TrainingError as e:
            out["finetune"].append({"learning_rate": lr, "error": str(e), "n_traces": tuner.n_traces_})
            print(f"seed {seed} lr {lr:g}: {e}", file=sys.stderr)
            continue
        compile_s = time.perf_counter() - t0
        traces = tuner.traces_path_  # every later learning rate trains on the same traces
        result = tuner.train_result_
        t0 = time.perf_counter()
        scored = evaluate(tuned, test, task.metric, num_threads=args.num_threads)
        steps = result.step_seconds[1:] or result.step_seconds  # the first step pays one-time setup
        row = {
            "learning_rate": lr,
            "accuracy": scored.score,
            "parse_failures": scored.parse_failures,
            "n_traces": tuner.n_traces_,
            "n_passed": tuner.n_passed_,
            "passed_by_predictor": tuner.passed_by_predictor_,
            "n_examples": result.n_examples,
            "steps": result.steps,
            "seconds_per_step_median": statistics.median(steps),
            "train_seconds": result.seconds,
            "compile_seconds": compile_s,
            "test_seconds": time.perf_counter() - t0,
            "peak_memory_gb": result.peak_memory_bytes / 1e9,
            "first_loss": result.losses[0],
            "final_loss": result.final_loss,
            "losses": result.losses,
        }
        out["finetune"].append(row)
        print(
            f"seed {seed}: zero-shot {zero.score:.3f} → Θ(lr={lr:g}) {scored.score:.3f} "
            f"({tuner.n_passed_}/{tuner.n_traces_} traces, {row['seconds_per_step_median']:.2f} s/step)",
            file=sys.stderr,
        )
    return out


def bare_peft_steps(examples, model_path: str, lora, config, n_steps: int) -> list[float]:
    """The loop a user would write with transformers + PEFT; returns seconds per optimizer step."""
    import random

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(config.seed)
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
        ),
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    rows = []
    for ex in examples:
        prompt = tok.apply_chat_template(ex.chat, tokenize=False, add_generation_prompt=True)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tok(ex.completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append((p_ids + c_ids, [-100] * len(p_ids) + c_ids))
    rng = random.Random(config.seed)
    times = []
    model.train()
    while len(times) < n_steps:
        rng.shuffle(rows)
        for i in range(0, len(rows) - config.batch_size + 1, config.batch_size):
            t0 = time.perf_counter()
            batch = rows[i : i + config.batch_size]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x, _ in batch])
            labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in batch])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in batch])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
            if len(times) >= n_steps:
                break
    return times


def labeled_demos(train, per_species: int, seed: int):
    """The first ``per_species`` training flowers of each species, shuffled."""
    import random

    demos = [
        ex
        for sp in ("setosa", "versicolor", "virginica")
        for ex in [e for e in train if e["species"] == sp][:per_species]
    ]
    random.Random(seed).shuffle(demos)
    return demos


def labeled_examples(seed: int):
    """Chat examples from the labeled Iris training flowers (when no traces passed, or --overhead-only)."""
    from cotune.tasks import load_task
    from cotune.training import ChatExample

    task = load_task("iris", seed=seed)
    predictor = task.program().classify
    return [
        ChatExample.create(
            predictor.messages(**ex.inputs()), f"Reasoning: measured.\nSpecies: {ex['species']}", "classify"
        )
        for ex in task.train
    ]


def overhead(examples, model_path: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from cotune.training import LoRAConfig, TrainingConfig, train_lora

    n = args.overhead_steps * 8
    examples = (list(examples) * (n // max(1, len(examples)) + 1))[:n]  # exactly overhead_steps batches of 8
    lora, config = LoRAConfig(), TrainingConfig(epochs=1, warmup_ratio=0.0)
    cotune_medians, bare_medians = [], []
    for rep in range(args.overhead_reps):
        result = train_lora(
            examples, base_model_path=model_path, output_dir=workdir / f"overhead{rep}", lora=lora, training=config
        )
        cotune_medians.append(statistics.median(result.step_seconds[1:]))
        bare_medians.append(
            statistics.median(bare_peft_steps(examples, model_path, lora, config, args.overhead_steps)[1:])
        )
    c, b = statistics.median(cotune_medians), statistics.median(bare_medians)
    return {
        "cotune_seconds_per_step": c,
        "bare_peft_seconds_per_step": b,
        "ratio": c / b,
        "cotune_runs": cotune_medians,
        "bare_runs": bare_medians,
        "steps_per_run": args.overhead_steps,
        "batch_size": config.batch_size,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def stats(values: list[float]) -> dict[str, float]:
        return {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values),
        }

    if not runs:
        return {}
    out = {"zero_shot": stats([r["zero_shot"]["accuracy"] for r in runs])}
    lrs = sorted({f["learning_rate"] for r in runs for f in r["finetune"]})
    for lr in lrs:
        rows = [f for r in runs for f in r["finetune"] if f["learning_rate"] == lr and "accuracy" in f]
        if rows:
            out[f"theta_lr{lr:g}"] = stats([f["accuracy"] for f in rows]) | {
                "seconds_per_step": statistics.fmean(f["seconds_per_step_median"] for f in rows),
                "peak_memory_gb": max(f["peak_memory_gb"] for f in rows),
                "failed_seeds": sum(
                    1 for r in runs for f in r["finetune"] if f["learning_rate"] == lr and "error" in f
                ),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import cotune
    from cotune.lm import GenerationConfig, RequestCache
    from cotune.optimize.traces import load_traces, passing
    from cotune.training import chat_examples

    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="cotune-ft-bench-") as tmp:
        workdir = Path(tmp)
        lm = cotune.lm.load(
            args.model,
            cache=RequestCache(workdir / "requests.sqlite"),
            config=GenerationConfig(max_tokens=args.max_tokens),
        )
        runs = [] if args.overhead_only else [run_seed(lm, seed, args, workdir) for seed in args.seeds]
        traces_file = next(workdir.glob("seed*/traces.jsonl"), None)
        kept = passing(load_traces(traces_file)) if traces_file else []
        examples = chat_examples([t.steps for t in kept]) or labeled_examples(args.seeds[0])
        over = overhead(examples, lm.model_path, args, workdir) | {"data": "passing traces" if kept else "labeled"}
        lm.close()
    report = {
        "benchmark": "finetune",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "model": args.model,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "summary": summarize(runs),
        "overhead": over,
        "runs": runs,
        "wall_seconds": time.time() - started,
    }
    write_results(args.out, report)
    print(
        json.dumps(
            {"summary": report["summary"], "overhead": {k: v for k, v in over.items() if "runs" not in k}}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
