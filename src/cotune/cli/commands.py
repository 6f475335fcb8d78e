"""The work behind CLI commands, kept apart from option parsing so it reads top to bottom."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from cotune.cli.render import RichEvents, evaluation_table, rows_table
from cotune.evaluate import evaluate

DEFAULT_MODEL = "smollm2-135m"


def load_model(model: str, *, cache: bool, console: Console, adapter: str | None = None):
    from cotune.lm.registry import load

    with console.status(f"loading model {model}{' + adapter ' + adapter if adapter else ''} ..."):
        return load(model, cache=cache, adapter=adapter)


def run_eval(
    *,
    task: str,
    model: str | None,
    split: str,
    limit: int | None,
    program_path: Path | None,
    out_path: Path | None,
    data_dir: Path | None,
    threads: int,
    split_seed: int | None = None,
    cache: bool,
    console: Console,
    out: Console,
) -> None:
    from cotune.cli.out_paths import check_out_file
    from cotune.cli.provenance import seen_in_optimization, split_for_eval
    from cotune.program.program import program_for_state
    from cotune.program.saved import bind_saved, read_program_state
    from cotune.tasks import load_task

    if out_path is not None:
        check_out_file(out_path)  # before any LM call; an earlier result there is replaced
    # adapter paths in the file are relative to it: read so, they work from any directory
    saved = read_program_state(program_path) if program_path else None
    if saved is not None:
        meta = saved.get("metadata", {})
        task = meta.get("task", task)
    seed, sizes = split_for_eval(saved, split_seed)
    the_task = load_task(task, data_dir=data_dir, seed=seed, **sizes)
    dataset = the_task.split(split)
    if limit is not None:
        dataset = dataset[:limit]
    seen = seen_in_optimization(saved, dataset, task=task, data_dir=data_dir, split_seed=seed)
    if seen:
        first = (saved or {}).get("metadata", {}).get("split_seed")
        console.print(
            f"[yellow]warning: {seen} of {len(dataset)} {split} examples (split seed {seed}) were in the "
            f"train/dev split this program was optimized on (split seed {first}); its score here is not a "
            f"held-out score. Use --split-seed {first} to test on examples it has not seen.[/]",
            highlight=False,
        )

    program = the_task.program()
    if saved is not None:
        from cotune.lm.registry import spec_runs_here

        program = program_for_state(program, saved)  # the saved class decides: MedPrompt's ensemble is rebuilt
        program.load_state(saved)
        specs = [s for s in (saved.get("lm"), *(saved.get("lms") or {}).values()) if s]
        first = specs[0] if specs else {}
        if model is None and spec_runs_here(first) and not saved.get("lms"):
            program.bind(load_model(first["model"], cache=cache, console=console, adapter=first.get("adapter")))
        elif model is None and spec_runs_here(first):  # one load of the base; each predictor its adapter
            bind_saved(program, saved, load_model(first["model"], cache=cache, console=console))
        elif model is None and first:
            from cotune.lm.registry import from_spec

            lm = from_spec(first, cache=cache)
            # the file chose this server: say so (prompts go there; the API key only if it is the user's)
            console.print(
                f"model {lm.model!r} at {first.get('base_url')} (named in {program_path}; --model overrides)",
                highlight=False,
            )
            if saved.get("lms"):
                bind_saved(program, saved, lm)
            else:
                program.bind(lm)
    if all(p.lm is None for p in program.predictors()):
        program.bind(load_model(model or DEFAULT_MODEL, cache=cache, console=console))
    lm = program.predictors()[0].lm
    adapters = sorted({str(p.lm.adapter) for p in program.predictors() if p.lm.adapter})

    events = RichEvents(console)
    try:
        result = evaluate(
            program, dataset, the_task.metric, num_threads=threads, events=events, description=f"{task}/{split}"
        )
    except KeyboardInterrupt as e:
        partial = getattr(e, "result", None)
        if out_path is not None and partial is not None and partial.n:
            partial.save(out_path)
            console.print(f"interrupted: wrote the {partial.n} finished rows to {out_path}")
        raise
    finally:
        events.close()

    out.print(rows_table(result.rows))
    context = {"task": task, "split": f"{split} ({len(dataset)} examples, split seed {seed})", "model": lm.model}
    if adapters:
        context["adapter"] = ", ".join(adapters)
    served = lm.served_identity() if lm.cache is not None else None
    if served:  # what the server runs under that name: the cache answers only for these weights
        context["served weights"] = served.get("root") or served.get("id")
    if program_path:
        context["program"] = str(program_path)
    out.print(evaluation_table("evaluation", result.summary(), context))
    if result.usage.cache_hits:
        console.print(
            f"{result.usage.cache_hits} of {result.usage.calls} answers came from the request cache (stored "
            "earlier for the same model, prompt and settings); --no-cache asks the model again",
            highlight=False,
        )
    if out_path is not None:
        result.save(out_path)
        out.print(f"wrote {out_path}")


def experiment_config(config_path: Path | None, overrides: dict[str, Any]) -> Any:
    """The YAML config (if any) with ``overrides`` on top; dotted keys (``--set prompt.params.k=5``) reach
    nested fields and are merged into them, not replacing their siblings."""
    from cotune.experiment.config import ExperimentConfig, steps_with_params
    from cotune.optimize.registry import merge, nest

    base = ExperimentConfig.from_yaml(config_path).to_dict() if config_path else {}
    return ExperimentConfig.from_dict(merge(base, steps_with_params(nest(overrides))))


def run_experiment(
    *,
    config_path: Path | None,
    resume: Path | None,
    overrides: dict,
    console: Console,
    out: Console,
    ray: str | None = None,
) -> None:
    """Run (or resume) an experiment and print its table; ``ray``: run the nodes as Ray tasks on that cluster
    ("local", "auto", an address), also when resuming (it overrides the saved config's)."""
    from cotune.cli.out_paths import check_out_dir
    from cotune.cli.render import results_table
    from cotune.errors import ConfigError
    from cotune.experiment.config import ExperimentConfig
    from cotune.experiment.rundir import RunDir
    from cotune.experiment.runner import Runner

    if resume is not None:
        if config_path is not None or overrides:
            raise ConfigError(
                "`--resume` continues a run with its saved config; don't combine it with --config or other options"
            )
        saved = RunDir.open(resume).config()
        cfg = ExperimentConfig.saved(saved | {"ray": ray} if ray else saved)
    else:
        cfg = experiment_config(config_path, overrides | ({"ray": ray} if ray else {}))
        check_out_dir(Path(cfg.out_dir), flag="--out-dir")  # before the model loads

    events = RichEvents(console)
    runner = Runner(cfg, events=events)
    runner.check()  # the task's data, and each step's settings against its program, before the model loads
    console.print(
        f"[bold]cotune run[/] {cfg.task} · {cfg.model} · strategies {', '.join(cfg.strategies)} · seeds {cfg.seeds}"
    )
    if cfg.ray:  # the Ray workers load the model, not this process
        from cotune.experiment.ray_grid import require_ray

        require_ray()
        console.print(
            f"nodes run as Ray tasks ({'a local Ray cluster' if cfg.ray == 'local' else cfg.ray})", highlight=False
        )
        lm = None
    else:
        lm = load_model(cfg.model, cache=cfg.cache, console=console)
    runner.lm = lm  # loaded after the checks: a bad setting costs no model load
    try:
        if resume is not None:
            run = RunDir.open(resume)
            results = runner.run(run)
        else:
            run = RunDir.create(cfg.out_dir, cfg.name or RunDir.default_name(cfg.task, cfg.model), cfg.to_dict())
            console.print(f"run directory: {run.path}  (resume with: cotune run --resume {run.path})")
            results = runner.run(run)
    finally:
        events.close()
    out.print(results_table(results))
    failures = results.get("failures", [])
    for f in failures:
        console.print(f"[yellow]seed {f['seed']} {f['strategy']}: {f['error']}[/]", highlight=False)
    from cotune.report.build import write_report

    md, html = write_report([run.path])
    out.print(f"report: {md}\n        {html}")
    best = results["best"]
    if best is not None:
        path = run.path / best["program"]
        out.print(
            f"best program on dev: {best['strategy']} (seed {best['seed']}, dev {best['dev']:.1%}, "
            f"test {best['test']:.1%}) → {path}"
        )
        out.print(f"use it: cotune eval --program {path}")
    broken = [f for f in failures if f.get("kind") == "infrastructure"]
    if broken:
        from cotune.errors import InfrastructureError

        raise InfrastructureError(
            f"{len(broken)} step(s) failed because the model or machine failed, not the program (first: "
            f"{broken[0]['error']}); nothing was scored for them. Resume when it works again: "
            f"cotune run --resume {run.path}"
        )
