"""`cotune eval`, `cotune run`, `cotune report` and `cotune advise`: evaluate a program, run strategies × seeds,
and turn run directories into a report and a prompt-or-fine-tune answer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand

from cotune.cli import report_cmds as rc
from cotune.cli.options import DataDirOpt, NoCacheOpt, TaskOpt, ThreadsOpt, console, out, parse_params
from cotune.experiment.config import DEFAULT_STRATEGIES
from cotune.report import advisor as adv


def eval_cmd(
    task: TaskOpt = "iris",
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Registry name (see `cotune models`), local folder, .gguf file or hub id. Default: the saved program's model, else smollm2-135m.",
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Which split to evaluate.")] = "test",
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N examples.")] = None,
    program: Annotated[
        Path | None,
        typer.Option(
            "--program",
            "-p",
            help="A saved program JSON to evaluate (its model and adapter are used unless --model is given).",
        ),
    ] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the result (summary + rows + traces) as JSON.")
    ] = None,
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 8,
    split_seed: Annotated[
        int | None,
        typer.Option(
            "--split-seed",
            help="Seed of the train/dev/test split. Default: the one the saved program was optimized on, else 0.",
        ),
    ] = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """Evaluate a task's program (or a saved one) on a split and print its accuracy and cost."""
    from cotune.cli.commands import run_eval

    run_eval(
        task=task,
        model=model,
        split=split,
        limit=limit,
        program_path=program,
        out_path=out_path,
        data_dir=data_dir,
        threads=threads,
        split_seed=split_seed,
        cache=not no_cache,
        console=console,
        out=out,
    )


class RunCommand(TyperCommand):
    """`cotune run`: ``--ray`` takes an optional ADDRESS; alone (last, or before another option) it means a
    local Ray cluster."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        args = list(args)
        for i in reversed(range(len(args))):
            if args[i] == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
                args.insert(i + 1, "local")
        return super().parse_args(ctx, args)


def run_cmd(
    task: Annotated[
        str | None, typer.Option("--task", "-t", help="Built-in task (see `cotune tasks`). Default: iris.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model (see `cotune models`). Default: smollm2-135m.")
    ] = None,
    strategies: Annotated[
        str | None,
        typer.Option(
            help=f"Comma-separated strategies of p (prompt) and w (weights) steps; default: {', '.join(DEFAULT_STRATEGIES)} (p-p and w-w: the same step twice, the controls for alternating)."
        ),
    ] = None,
    seeds: Annotated[
        int | None, typer.Option(min=1, help="Number of seeds (0..N-1); the paper's protocol is 3.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="A YAML experiment config; options given here override it.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Finish an interrupted run directory; finished steps are not redone.")
    ] = None,
    out_dir: Annotated[Path | None, typer.Option(help="Parent folder of run directories. Default: runs.")] = None,
    name: Annotated[str | None, typer.Option(help="Run directory name. Default: DATE-TASK-MODEL.")] = None,
    data_dir: DataDirOpt = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Parallel examples. Default: 64.")] = None,
    no_cache: NoCacheOpt = False,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Any config field as KEY=VALUE, dotted for nested ones (repeatable), e.g. --set prompt.optimizer=knn --set prompt.params.k=5 --set weights.training.epochs=3.",
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="[ADDRESS]",
            help="Run the nodes as Ray tasks (seeds and branches in parallel; pip install 'cotune[ray]'): alone, on a local Ray cluster sized to this machine; 'auto' or ray://HOST:10001 to use a running cluster (its nodes must share this filesystem). Also with --resume.",
        ),
    ] = None,
) -> None:
    """Run strategies × seeds (zero-shot, Π, Θ, Π→Θ→Π, ...) and print the Table-1-style comparison."""
    from cotune.cli.commands import run_experiment

    overrides = {
        "task": task,
        "model": model,
        "out_dir": str(out_dir) if out_dir else None,
        "name": name,
        "data_dir": str(data_dir) if data_dir else None,
        "threads": threads,
        "strategies": strategies.split(",") if strategies else None,
        "seeds": seeds,
        "cache": False if no_cache else None,  # seeds: a count, bounded before it becomes a list
    }
    overrides = {k: v for k, v in overrides.items() if v is not None} | parse_params(settings, "--set")
    run_experiment(config_path=config, resume=resume, overrides=overrides, ray=ray, console=console, out=out)


def report_cmd(
    run_dirs: rc.RunDirsArg,
    out_dir: rc.OutDirOpt = None,
    calls_per_day: rc.CallsPerDayOpt = adv.DEFAULT_CALLS_PER_DAY,
    price_prompt: rc.PromptPriceOpt = adv.DEFAULT_PRICE_PER_1M_PROMPT_TOKENS,
    price_completion: rc.CompletionPriceOpt = adv.DEFAULT_PRICE_PER_1M_COMPLETION_TOKENS,
    price_training_hour: rc.TrainingPriceOpt = adv.DEFAULT_PRICE_PER_TRAINING_HOUR,
    horizon_days: rc.HorizonOpt = adv.DEFAULT_HORIZON_DAYS,
    finetuned_price_factor: rc.FinetunedFactorOpt = 1.0,
) -> None:
    """Write a Markdown + HTML report (Table 1, score by step, accuracy vs tokens, prompts, costs) for run directories."""
    rc.run_report(
        run_dirs,
        out_dir=out_dir,
        calls_per_day=calls_per_day,
        price_per_1m_prompt_tokens=price_prompt,
        price_per_1m_completion_tokens=price_completion,
        price_per_training_hour=price_training_hour,
        horizon_days=horizon_days,
        finetuned_price_factor=finetuned_price_factor,
        console=console,
        out=out,
    )


def advise_cmd(
    run_dirs: rc.RunDirsArg,
    calls_per_day: rc.CallsPerDayOpt = adv.DEFAULT_CALLS_PER_DAY,
    price_prompt: rc.PromptPriceOpt = adv.DEFAULT_PRICE_PER_1M_PROMPT_TOKENS,
    price_completion: rc.CompletionPriceOpt = adv.DEFAULT_PRICE_PER_1M_COMPLETION_TOKENS,
    price_training_hour: rc.TrainingPriceOpt = adv.DEFAULT_PRICE_PER_TRAINING_HOUR,
    horizon_days: rc.HorizonOpt = adv.DEFAULT_HORIZON_DAYS,
    finetuned_price_factor: rc.FinetunedFactorOpt = 1.0,
    as_json: rc.JsonOpt = False,
    as_markdown: rc.MarkdownOpt = False,
) -> None:
    """Prompt or fine-tune? Accuracy, tokens, latency, training time, cost per day and break-even volume."""
    rc.run_advise(
        run_dirs,
        calls_per_day=calls_per_day,
        price_per_1m_prompt_tokens=price_prompt,
        price_per_1m_completion_tokens=price_completion,
        price_per_training_hour=price_training_hour,
        horizon_days=horizon_days,
        finetuned_price_factor=finetuned_price_factor,
        as_json=as_json,
        as_markdown=as_markdown,
        out=out,
    )
