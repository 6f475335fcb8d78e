"""`cotune optimize` and `cotune finetune`: optimize a task program's prompts, or train a LoRA adapter on its own
successful runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cotune.cli.options import (
    DataDirOpt,
    EvalSplitOpt,
    ForceOpt,
    NoCacheOpt,
    ParamOpt,
    SeedOpt,
    SplitSeedOpt,
    TaskOpt,
    ThreadsOpt,
    console,
    out,
    parse_params,
)
from cotune.optimize.registry import optimizer_names


def optimize_cmd(
    task: TaskOpt = "iris",
    optimizer: Annotated[
        str, typer.Option("--optimizer", "-O", help=f"One of {', '.join(optimizer_names())}.")
    ] = "bfrs",
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model (see `cotune models`). Default: smollm2-135m.")
    ] = None,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Where to save the optimized program (JSON).")] = Path(
        "program.json"
    ),
    param: ParamOpt = None,
    eval_split: EvalSplitOpt = "test",
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 8,
    seed: SeedOpt = 0,
    split_seed: SplitSeedOpt = 0,
    force: ForceOpt = False,
    no_cache: NoCacheOpt = False,
    optimizer_model: Annotated[
        str | None,
        typer.Option(
            "--optimizer-model",
            help="GPO: the model that writes the instructions (-P optimizer_lm=NAME), e.g. qwen2.5-coder-1.5b. Default: the task model.",
        ),
    ] = None,
) -> None:
    """Optimize a task program's prompts (demos or instructions); trains on train, selects on dev."""
    from cotune.cli.optimize_cmds import run_optimize

    run_optimize(
        task=task,
        optimizer=optimizer,
        model=model,
        out_path=out_path,
        params=parse_params(param, "--param"),
        data_dir=data_dir,
        threads=threads,
        seed=seed,
        cache=not no_cache,
        evaluate_on=eval_split or None,
        console=console,
        out=out,
        split_seed=split_seed,
        force=force,
        optimizer_model=optimizer_model,
    )


def finetune_cmd(
    task: TaskOpt = "iris",
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Base model (see `cotune models`), or with --base-url the served model's name. Default: smollm2-135m.",
        ),
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the adapter and the fine-tuned program.")
    ] = Path("adapters/finetuned"),
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            help="Run the program on this OpenAI-compatible server (http://host:8000/v1) and load the adapter into it at runtime (vLLM: --enable-lora, VLLM_ALLOW_RUNTIME_LORA_UPDATING=True).",
        ),
    ] = None,
    base_model: Annotated[
        str | None,
        typer.Option(
            "--base-model",
            help="With --base-url: a local copy of the served base model (registry name or folder) to train on.",
        ),
    ] = None,
    lora_r: Annotated[int | None, typer.Option("--lora-r", help="LoRA rank.")] = None,
    lora_alpha: Annotated[float | None, typer.Option("--lora-alpha", help="LoRA alpha.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Sequences per step.")] = None,
    traces: Annotated[
        Path | None, typer.Option(help="Reuse traces saved as JSONL instead of running the teacher.")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Keep traces scoring at least this (default: full marks, score >= 1).")
    ] = None,
    rollouts: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Runs per training example; runs after the first sample at --rollout-temperature. Default: the task's run defaults (`cotune tasks`), else 1.",
        ),
    ] = None,
    rollout_temperature: Annotated[
        float | None,
        typer.Option(
            min=0.0, help="Sampling temperature of the rollouts after the first. Default: the task's, else 0.7."
        ),
    ] = None,
    stop_at_first_pass: Annotated[
        bool | None,
        typer.Option(
            "--stop-at-first-pass/--all-rollouts",
            help="No more rollouts for an example once one passed. Default: the task's, else all rollouts.",
        ),
    ] = None,
    fill_with_labels: Annotated[
        bool, typer.Option("--fill-with-labels", help="Also train on the gold labels of examples no run got right.")
    ] = False,
    balance_classes: Annotated[
        bool | None,
        typer.Option(
            "--balance-classes/--no-balance-classes",
            help="Repeat the kept runs of the rarer answers (outputs with a fixed set of choices) until each is about as frequent as the most common, over proportionally fewer epochs. Default: the task's, else off.",
        ),
    ] = None,
    strip_demos: Annotated[
        bool | None,
        typer.Option(
            "--strip-demos/--keep-demos",
            help="Train on (and serve) prompts without the few-shot demos. Default: the task's, else keep them.",
        ),
    ] = None,
    top_layers: Annotated[
        int | None,
        typer.Option(
            "--top-layers",
            min=1,
            help="LoRA on the last N decoder layers only (the layers below run once per example). Default: the task's, else every layer.",
        ),
    ] = None,
    trainer: Annotated[
        str,
        typer.Option(
            "--trainer",
            help="What trains the adapter: local (cotune's loop, in this process) or trl (TRL's SFTTrainer through accelerate; pip install 'cotune[trl]').",
        ),
    ] = "local",
    processes: Annotated[
        int,
        typer.Option(
            "--processes",
            help="With --trainer trl: data-parallel training processes (one per GPU; CPU processes without CUDA); --batch-size is per process.",
        ),
    ] = 1,
    param: ParamOpt = None,
    eval_split: EvalSplitOpt = "test",
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 8,
    seed: SeedOpt = 0,
    split_seed: SplitSeedOpt = 0,
    force: ForceOpt = False,
    no_cache: NoCacheOpt = False,
) -> None:
    """Fine-tune a LoRA adapter on the program's own successful traces (bootstrap fine-tune)."""
    from cotune.cli.optimize_cmds import run_finetune

    lora = {k: v for k, v in {"r": lora_r, "alpha": lora_alpha, "top_layers": top_layers}.items() if v is not None}
    training = {
        k: v for k, v in {"epochs": epochs, "learning_rate": lr, "batch_size": batch_size}.items() if v is not None
    }
    run_finetune(
        task=task,
        model=model,
        out_dir=out_dir,
        lora=lora,
        training=training,
        traces=traces,
        threshold=threshold,
        data_dir=data_dir,
        threads=threads,
        seed=seed,
        cache=not no_cache,
        evaluate_on=eval_split or None,
        console=console,
        out=out,
        rollouts=rollouts,
        rollout_temperature=rollout_temperature,
        stop_at_first_pass=stop_at_first_pass,
        fill_with_labels=fill_with_labels,
        balance_classes=balance_classes,
        keep_demos=None if strip_demos is None else not strip_demos,
        split_seed=split_seed,
        force=force,
        params=parse_params(param, "--param"),
        base_url=base_url,
        base_model=base_model,
        trainer=trainer,
        processes=processes,
    )
