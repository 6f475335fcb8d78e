"""`cotune` commands. Each is a typed function; library errors become one red line and exit code 2."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand

from cotune.cli import report_cmds as rc
from cotune.cli.cache_cmds import cache_app
from cotune.cli.interrupt import SigInt, interrupted
from cotune.errors import CotuneError
from cotune.experiment import advisor as adv
from cotune.experiment.config import DEFAULT_STRATEGIES
from cotune.optimize.registry import optimizer_names

app = typer.Typer(
    name="cotune",
    help="Optimize the prompts and the weights of LM programs, together.",
    epilog=(
        "Conventions, the same in every command: "
        "-o/--out is where the result goes: a file where a command writes one (eval, optimize), a folder where it "
        "writes several (finetune: the adapter and the program; report). "
        "Hyperparameters: -P NAME=VALUE sets any of the optimizer's (dotted for nested ones: -P lora.r=8, "
        "-P bootstrap.max_labeled_demos=2); named flags such as --lr are shortcuts for the common ones, and -P wins. "
        "cotune run takes a YAML config (-c) and --set KEY=VALUE for any of its fields (--set prompt.params.k=5, "
        "--set weights.lora.epochs=3). "
        "--seeds N means seeds 0..N-1; in YAML, seeds is that count or a list of seeds. "
        "--threads is how many examples run at once (num_threads in the Python API). "
        "Run `cotune COMMAND --help` for a command's options."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(cache_app, name="cache")


def _wide(console: Console) -> Console:
    """Without a terminal (a log file, CI, nohup) rich assumes 80 columns and cuts table headings; use 160
    unless $COLUMNS says otherwise."""
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160
    return console


console = _wide(Console(stderr=True))
out = _wide(Console())

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Registry name (see `cotune models`), local folder, .gguf file or hub id.")]
TaskOpt = Annotated[str, typer.Option("--task", "-t", help="Built-in task (see `cotune tasks`).")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Folder with the task's data files (gsm8k, hotpotqa).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the request cache.")]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=1, help="Parallel examples; a local model batches them.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the optimizer (demos, rollouts, training); the split is --split-seed.")]
SplitSeedOpt = Annotated[int, typer.Option("--split-seed", help="Seed of the train/dev/test split (saved with the program).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite earlier outputs at --out.")]
EvalSplitOpt = Annotated[str | None, typer.Option("--eval-split", help="Evaluate the result on this split afterwards ('' to skip).")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-P", help="Optimizer hyperparameter NAME=VALUE (repeatable; dotted for nested ones), e.g. -P num_candidates=6, -P bootstrap.max_labeled_demos=2, -P lora.r=8.")]


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug events.")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command("eval")
def eval_cmd(
    task: TaskOpt = "iris",
    model: Annotated[str | None, typer.Option("--model", "-m", help="Registry name (see `cotune models`), local folder, .gguf file or hub id. Default: the saved program's model, else smollm2-135m.")] = None,
    split: Annotated[str, typer.Option(help="Which split to evaluate.")] = "test",
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N examples.")] = None,
    program: Annotated[Path | None, typer.Option("--program", "-p", help="A saved program JSON to evaluate (its model and adapter are used unless --model is given).")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", "-o", help="Write the result (summary + rows + traces) as JSON.")] = None,
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 8,
    split_seed: Annotated[int | None, typer.Option("--split-seed", help="Seed of the train/dev/test split. Default: the one the saved program was optimized on, else 0.")] = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """Evaluate a task's program (or a saved one) on a split and print its accuracy and cost."""
    from cotune.cli.commands import run_eval

    run_eval(
        task=task, model=model, split=split, limit=limit, program_path=program, out_path=out_path,
        data_dir=data_dir, threads=threads, split_seed=split_seed, cache=not no_cache,
        console=console, out=out,
    )


class _RunCommand(TyperCommand):
    """`cotune run`: ``--ray`` takes an optional ADDRESS; alone (last, or before another option) it means a
    local Ray cluster."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        args = list(args)
        for i in reversed(range(len(args))):
            if args[i] == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
                args.insert(i + 1, "local")
        return super().parse_args(ctx, args)


@app.command("run", cls=_RunCommand)
def run_cmd(
    task: Annotated[str | None, typer.Option("--task", "-t", help="Built-in task (see `cotune tasks`). Default: iris.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model (see `cotune models`). Default: smollm2-135m.")] = None,
    strategies: Annotated[str | None, typer.Option(help=f"Comma-separated strategies of p (prompt) and w (weights) steps; default: {', '.join(DEFAULT_STRATEGIES)} (p-p and w-w: the same step twice, the controls for alternating).")] = None,
    seeds: Annotated[int | None, typer.Option(min=1, help="Number of seeds (0..N-1); the paper's protocol is 3.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="A YAML experiment config; options given here override it.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Finish an interrupted run directory; finished steps are not redone.")] = None,
    out_dir: Annotated[Path | None, typer.Option(help="Parent folder of run directories. Default: runs.")] = None,
    name: Annotated[str | None, typer.Option(help="Run directory name. Default: DATE-TASK-MODEL.")] = None,
    data_dir: DataDirOpt = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Parallel examples. Default: 64.")] = None,
    no_cache: NoCacheOpt = False,
    settings: Annotated[list[str] | None, typer.Option("--set", help="Any config field as KEY=VALUE, dotted for nested ones (repeatable), e.g. --set prompt.optimizer=knn --set prompt.params.k=5 --set weights.lora.epochs=3.")] = None,
    ray: Annotated[str | None, typer.Option("--ray", metavar="[ADDRESS]", help="Run the nodes as Ray tasks (seeds and branches in parallel; pip install 'cotune[ray]'): alone, on a local Ray cluster sized to this machine; 'auto' or ray://HOST:10001 to use a running cluster (its nodes must share this filesystem). Also with --resume.")] = None,
) -> None:
    """Run strategies × seeds (zero-shot, Π, Θ, Π→Θ→Π, ...) and print the Table-1-style comparison."""
    from cotune.cli.commands import run_experiment

    overrides = {
        "task": task, "model": model, "out_dir": str(out_dir) if out_dir else None, "name": name,
        "data_dir": str(data_dir) if data_dir else None, "threads": threads,
        "strategies": strategies.split(",") if strategies else None,
        "seeds": seeds, "cache": False if no_cache else None,  # seeds: a count, bounded before it becomes a list
    }
    overrides = {k: v for k, v in overrides.items() if v is not None} | _params(settings, "--set")
    run_experiment(config_path=config, resume=resume, overrides=overrides, ray=ray,
                   console=console, out=out)


@app.command("optimize")
def optimize_cmd(
    task: TaskOpt = "iris",
    optimizer: Annotated[str, typer.Option("--optimizer", "-O", help=f"One of {', '.join(optimizer_names())}.")] = "bfrs",
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model (see `cotune models`). Default: smollm2-135m.")] = None,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Where to save the optimized program (JSON).")] = Path("program.json"),
    param: ParamOpt = None,
    eval_split: EvalSplitOpt = "test",
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 8,
    seed: SeedOpt = 0,
    split_seed: SplitSeedOpt = 0,
    force: ForceOpt = False,
    no_cache: NoCacheOpt = False,
    optimizer_model: Annotated[str | None, typer.Option("--optimizer-model", help="GPO: the model that writes the instructions (-P optimizer_lm=NAME), e.g. qwen2.5-coder-1.5b. Default: the task model.")] = None,
) -> None:
    """Optimize a task program's prompts (demos or instructions); trains on train, selects on dev."""
    from cotune.cli.optimize_cmds import run_optimize

    run_optimize(task=task, optimizer=optimizer, model=model, out_path=out_path, params=_params(param, "--param"),
                 data_dir=data_dir, threads=threads, seed=seed, cache=not no_cache, evaluate_on=eval_split or None,
                 console=console, out=out, split_seed=split_seed, force=force, optimizer_model=optimizer_model)


@app.command("finetune")
def finetune_cmd(
    task: TaskOpt = "iris",
    model: Annotated[str | None, typer.Option("--model", "-m", help="Base model (see `cotune models`), or with --base-url the served model's name. Default: smollm2-135m.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the adapter and the fine-tuned program.")] = Path("adapters/finetuned"),
    base_url: Annotated[str | None, typer.Option("--base-url", help="Run the program on this OpenAI-compatible server (http://host:8000/v1) and load the adapter into it at runtime (vLLM: --enable-lora, VLLM_ALLOW_RUNTIME_LORA_UPDATING=True).")] = None,
    base_model: Annotated[str | None, typer.Option("--base-model", help="With --base-url: a local copy of the served base model (registry name or folder) to train on.")] = None,
    lora_r: Annotated[int | None, typer.Option("--lora-r", help="LoRA rank.")] = None,
    lora_alpha: Annotated[float | None, typer.Option("--lora-alpha", help="LoRA alpha.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Sequences per step.")] = None,
    traces: Annotated[Path | None, typer.Option(help="Reuse traces saved as JSONL instead of running the teacher.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Keep traces scoring at least this (default: full marks, score >= 1).")] = None,
    rollouts: Annotated[int | None, typer.Option(min=1, help="Runs per training example; runs after the first sample at --rollout-temperature. Default: the task's run defaults (`cotune tasks`), else 1.")] = None,
    rollout_temperature: Annotated[float | None, typer.Option(min=0.0, help="Sampling temperature of the rollouts after the first. Default: the task's, else 0.7.")] = None,
    stop_at_first_pass: Annotated[bool | None, typer.Option("--stop-at-first-pass/--all-rollouts", help="No more rollouts for an example once one passed. Default: the task's, else all rollouts.")] = None,
    fill_with_labels: Annotated[bool, typer.Option("--fill-with-labels", help="Also train on the gold labels of examples no run got right.")] = False,
    strip_demos: Annotated[bool | None, typer.Option("--strip-demos/--keep-demos", help="Train on (and serve) prompts without the few-shot demos. Default: the task's, else keep them.")] = None,
    top_layers: Annotated[int | None, typer.Option("--top-layers", min=1, help="LoRA on the last N decoder layers only (the layers below run once per example). Default: the task's, else every layer.")] = None,
    trainer: Annotated[str, typer.Option("--trainer", help="What trains the adapter: local (cotune's loop, in this process) or trl (TRL's SFTTrainer through accelerate; pip install 'cotune[trl]').")] = "local",
    processes: Annotated[int, typer.Option("--processes", help="With --trainer trl: data-parallel training processes (one per GPU; CPU processes without CUDA); --batch-size is per process.")] = 1,
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

    lora = {k: v for k, v in {"r": lora_r, "alpha": lora_alpha, "epochs": epochs, "learning_rate": lr,
                              "batch_size": batch_size, "top_layers": top_layers}.items() if v is not None}
    run_finetune(task=task, model=model, out_dir=out_dir, lora=lora, traces=traces, threshold=threshold,
                 data_dir=data_dir, threads=threads, seed=seed, cache=not no_cache, evaluate_on=eval_split or None,
                 console=console, out=out, rollouts=rollouts, rollout_temperature=rollout_temperature,
                 stop_at_first_pass=stop_at_first_pass, fill_with_labels=fill_with_labels,
                 keep_demos=None if strip_demos is None else not strip_demos,
                 split_seed=split_seed, force=force, params=_params(param, "--param"), base_url=base_url,
                 base_model=base_model, trainer=trainer, processes=processes)


def _params(items: list[str] | None, flag: str) -> dict:
    """NAME=VALUE pairs; values are read as JSON where they parse (numbers, true/false), else kept as text."""
    import json

    from cotune.errors import ConfigError

    params = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"`{flag}` wants NAME=VALUE, got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


@app.command("report")
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
        run_dirs, out_dir=out_dir, calls_per_day=calls_per_day, price_per_1m_prompt_tokens=price_prompt,
        price_per_1m_completion_tokens=price_completion, price_per_training_hour=price_training_hour,
        horizon_days=horizon_days, finetuned_price_factor=finetuned_price_factor, console=console, out=out,
    )


@app.command("advise")
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
        run_dirs, calls_per_day=calls_per_day, price_per_1m_prompt_tokens=price_prompt,
        price_per_1m_completion_tokens=price_completion, price_per_training_hour=price_training_hour,
        horizon_days=horizon_days, finetuned_price_factor=finetuned_price_factor, as_json=as_json,
        as_markdown=as_markdown, out=out,
    )


@app.command("serve")
def serve_cmd(
    model: ModelOpt = "smollm2-135m",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback (e.g. 0.0.0.0) needs --api-key.")] = "127.0.0.1",
    name: Annotated[str | None, typer.Option("--name", help="Model name clients send. Default: --model.")] = None,
    adapter: Annotated[list[str] | None, typer.Option("--adapter", help="NAME=PATH, repeatable: serve a LoRA adapter as model NAME.")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="COTUNE_SERVER_API_KEY", show_envvar=True, help="Key every request must send as 'Authorization: Bearer KEY'.")] = None,
    allow_origin: Annotated[list[str] | None, typer.Option("--allow-origin", help="A web origin (https://app.example) whose pages may call the server; repeatable.")] = None,
    runtime_lora: Annotated[bool, typer.Option("--runtime-lora", help="Also answer vLLM's POST /v1/load_lora_adapter and /v1/unload_lora_adapter: clients may load adapter folders from this machine's disk while it serves.")] = False,
    no_cache: NoCacheOpt = False,
) -> None:
    """Serve a model over an OpenAI-compatible API (POST /v1/chat/completions, GET /v1/models, GET /health;
    with --runtime-lora also vLLM's POST /v1/load_lora_adapter and /v1/unload_lora_adapter)."""
    from cotune.cli.commands import load_model
    from cotune.errors import ConfigError
    from cotune.lm.server import serve
    from cotune.lm.server_policy import ServerPolicy

    adapters = {}
    for item in adapter or []:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            raise ConfigError(f"`--adapter` wants NAME=PATH, got {item!r}")
        adapters[key] = path
    ServerPolicy.create(host, api_key=api_key or "")  # refuses a network address without a key, before the model loads
    lm = load_model(model, cache=not no_cache, console=console)

    def events(e) -> None:
        if e.name == "server.start":
            bind, url = e.fields.get("bind", ""), e.fields.get("url")
            if bind.startswith(("0.0.0.0:", "[::]:")):
                where = f"every address of this machine ({bind}; from here: {url})"
            else:
                where = url if bind.startswith(("127.", "[::1]")) else f"http://{bind}/v1"
            auth = "API key required" if e.fields.get("api_key") else "no API key"
            console.print(f"serving {', '.join(e.fields.get('models', [name or model]))} at {where}, {auth}  (Ctrl-C stops)")
        elif e.name == "server.request" and logging.getLogger("cotune").isEnabledFor(logging.DEBUG):
            console.print(f"{e.fields}")

    serve(lm, host, port, model_name=name or model, adapters=adapters, events=events, api_key=api_key or None,
          allowed_origins=allow_origin or (), runtime_lora=runtime_lora)


@app.command("models")
def models_cmd() -> None:
    """List the models cotune knows by name and whether they are installed."""
    from cotune.lm.registry import list_models

    table = Table(title="models")
    for col in ("name", "installed", "converted", "source", "description"):
        table.add_column(col, overflow="fold")
    for row in list_models():
        table.add_row(
            row["name"], _yes(row.get("installed")), _yes(row.get("converted")), str(row.get("source", "")), row.get("description", "")
        )
    out.print(table)
    for row in list_models():
        if not row.get("installed") and not row.get("converted"):
            out.print(f"{row['name']}: {row['install']}", soft_wrap=True, highlight=False)  # one line to copy
    out.print("Also accepted: a local Hugging Face folder, a .gguf file, or a hub id (online only).")


@app.command("tasks")
def tasks_cmd() -> None:
    """List the built-in tasks, their splits and the data they need."""
    from cotune.tasks import list_tasks

    table = Table(title="tasks")
    for col in ("name", "description", "splits", "data"):
        table.add_column(col, overflow="fold")
    for row in list_tasks():
        table.add_row(row["name"], row.get("description", ""), str(row.get("splits", "")), row.get("data", ""))
    out.print(table)


def _yes(flag: object) -> str:
    return "[green]yes[/]" if flag else "[dim]no[/]"


def main() -> None:
    # The CLI shows its own progress; silence the libraries' download/loading bars and advisories.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    sigint = SigInt().install()
    try:
        app(standalone_mode=True)
    except CotuneError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # a path in it stays whole
        raise SystemExit(2) from None
    except OSError as e:  # a file that cannot be read or written: say which, without a traceback
        where = f": {e.filename}" if e.filename else ""  # a write on a full disk names no file
        console.print(f"[bold red]error:[/] {escape(str(e.strerror or e))}{escape(where)}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        interrupted(console)
    except SystemExit as e:
        if sigint.received and e.code == 130:  # typer turns the KeyboardInterrupt into this exit
            interrupted(console)
        raise
