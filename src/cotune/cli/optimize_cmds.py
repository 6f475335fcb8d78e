"""The work behind `cotune optimize` and `cotune finetune`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cotune.cli.commands import DEFAULT_MODEL, load_model
from cotune.cli.out_paths import check_out_dir, check_out_file
from cotune.cli.provenance import split_metadata
from cotune.cli.render import RichEvents, evaluation_table
from cotune.evaluate import evaluate
from cotune.program.saved import save_program


def _task(task: str, data_dir: Path | None, split_seed: int):
    """The task split by ``split_seed`` (never by the optimizer's seed)."""
    from cotune.tasks import load_task

    return load_task(task, data_dir=data_dir, seed=split_seed)


def _bind(the_task: Any, model: str | None, cache: bool, console: Console, base_url: str | None = None):
    """The task's program on the model (loaded after the optimizer is built and checked): local, or the model
    named ``model`` on the server at ``base_url``."""
    if base_url:
        from cotune.lm.remote.openai_compat import OpenAICompatible

        return the_task.program().bind(OpenAICompatible(model or DEFAULT_MODEL, base_url=base_url, cache=cache))
    return the_task.program().bind(load_model(model or DEFAULT_MODEL, cache=cache, console=console))


def run_optimize(
    *,
    task: str,
    optimizer: str,
    model: str | None,
    out_path: Path,
    params: dict[str, Any],
    data_dir: Path | None,
    threads: int,
    seed: int,
    cache: bool,
    evaluate_on: str | None,
    console: Console,
    out: Console,
    split_seed: int = 0,
    force: bool = False,
    optimizer_model: str | None = None,
) -> None:
    """``optimizer_model`` (``--optimizer-model``) is ``-P optimizer_lm=NAME`` by another name; ``-P`` wins."""
    import inspect

    from cotune.errors import ConfigError
    from cotune.optimize.registry import build_optimizer, optimizer_class

    cls = optimizer_class(optimizer)  # an unknown name fails first
    if optimizer_model is not None:
        if "optimizer_lm" not in inspect.signature(cls.__init__).parameters:
            raise ConfigError(
                f"`--optimizer-model` is for an optimizer that has an optimizer LM (gpo), not {optimizer!r}"
            )
        params = {"optimizer_lm": optimizer_model, **params}
    check_out_file(out_path, force=force)  # before any LM call: the path, its folder, the overwrite rule
    the_task = _task(task, data_dir, split_seed)
    opt = build_optimizer(optimizer, the_task.metric, num_threads=threads, seed=seed, **params)  # before the model
    opt.check_program(the_task.program())
    evalset = the_task.split(evaluate_on) if evaluate_on else []  # an unknown split fails before the model loads
    program = _bind(the_task, model, cache, console)
    say_how_long(opt, program, the_task.train, evalset, evaluate_on, threads, console)
    events = RichEvents(console)
    try:
        console.print(f"[bold]{optimizer}[/] on {task}: train {len(the_task.train)}, valset dev {len(the_task.dev)}")
        best = opt.compile(program, trainset=the_task.train, valset=the_task.dev, events=events)
        summary = None
        if evaluate_on:
            result = evaluate(
                best,
                evalset,
                the_task.metric,
                num_threads=threads,
                events=events,
                description=f"{task}/{evaluate_on}",
            )
            summary = result.summary()
    finally:
        events.close()
    table = candidates_table(opt)
    if table is not None:
        out.print(table)
    save_program(
        best,
        out_path,
        task=task,
        optimizer=optimizer,
        params={k: str(v) for k, v in params.items()},
        seed=seed,
        **split_metadata(the_task, split_seed),
    )
    if summary is not None:
        out.print(
            evaluation_table(f"{optimizer} program on {evaluate_on}", summary, {"task": task, "model": best.lm.model})
        )
    out.print(f"saved {out_path}  (evaluate it: cotune eval --program {out_path})")


def say_how_long(
    opt: Any, program: Any, trainset: Any, evalset: Any, evaluate_on: str | None, threads: int, console: Console
) -> None:
    """For MedPrompt, whose defaults run for long on a CPU: how long it will take here, and what shortens it."""
    from cotune.optimize.medprompt import MedPrompt

    if not isinstance(opt, MedPrompt):
        return
    from cotune.optimize.work_estimate import measure_medprompt

    with console.status("timing two batches of runs, to say how long this will take ..."):
        work = measure_medprompt(opt, program, trainset, evalset, num_threads=threads)
    if work is None:  # the request cache answered: a repeated command, fast anyway
        return
    console.print(estimate_line(work, evaluate_on), highlight=False, soft_wrap=True)  # one line in a log, too


def estimate_line(work: Any, evaluate_on: str | None) -> str:
    """``medprompt: about 39 min on this machine (...). Shorter: -P m=3 (about 24 min), ...``"""
    parts = []
    for p in work.phases:
        where = f" on {evaluate_on}" if p.name == "ensemble" else ""
        parts.append(f"{p.name}{where}: {p.runs} runs x {p.seconds_per_run:.1f} s")
    shorter = [f"{setting} (about {duration(seconds)})" for setting, seconds in work.shorter]
    ensemble = sum(p.seconds for p in work.phases if p.name == "ensemble")
    if ensemble:
        shorter.append(f"--eval-split '' (about {duration(work.seconds - ensemble)}, no {evaluate_on} score)")
    line = f"medprompt: about {duration(work.seconds)} on this machine ({'; '.join(parts)})."
    return line + (f" Shorter: {', '.join(shorter)}." if shorter else "")


def duration(seconds: float) -> str:
    """``40 s``, ``12 min``, ``2.1 hours``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} hours"


def candidates_table(opt: Any) -> Table | None:
    """Random-search candidates or GPO trajectories, whichever the optimizer learned."""
    if getattr(opt, "trials_", None):
        table = Table(title="candidates (scored on the valset)", title_justify="left")
        for col in ("#", "kind", "demos", "score"):
            table.add_column(col)
        best = getattr(opt, "best_index_", None)
        for i, t in enumerate(opt.trials_):
            demos = t.get("demos") or t.get("demo_counts") or ""
            mark = " ← best" if i == best else ""
            table.add_row(str(i), str(t.get("kind", "")), str(demos), f"{t.get('score', float('nan')):.1%}{mark}")
        return table
    if getattr(opt, "trajectory_", None):
        table = Table(title="GPO trajectory (validation mini-batch)", title_justify="left")
        for col in ("predictor", "step", "budget", "edits", "score", "instruction"):
            table.add_column(col, overflow="fold")
        for name, steps in opt.trajectory_.items():
            for s in steps:
                table.add_row(
                    name,
                    str(s.get("step")),
                    str(s.get("budget", "")),
                    str(s.get("edit_distance", "")),
                    f"{s.get('score', float('nan')):.1%}",
                    str(s.get("instruction", ""))[:120],
                )
        return table
    return None


def run_finetune(
    *,
    task: str,
    model: str | None,
    out_dir: Path,
    lora: dict[str, Any],
    training: dict[str, Any] | None = None,
    traces: Path | None,
    threshold: float | None,
    data_dir: Path | None,
    threads: int,
    seed: int,
    cache: bool,
    evaluate_on: str | None,
    console: Console,
    out: Console,
    rollouts: int | None = None,
    fill_with_labels: bool = False,
    balance_classes: bool | None = None,
    keep_demos: bool | None = None,
    split_seed: int = 0,
    force: bool = False,
    rollout_temperature: float | None = None,
    stop_at_first_pass: bool | None = None,
    params: dict[str, Any] | None = None,
    base_url: str | None = None,
    base_model: str | None = None,
    trainer: str = "local",
    processes: int = 1,
) -> None:
    """``params`` (``-P``) reach any `BootstrapFinetune` hyperparameter and win over the named options; what
    neither sets (None) comes from the task's measured run defaults (``weights``), then the optimizer's own.
    ``trainer`` and ``processes`` choose what trains the adapter (`cotune.training.trainer.build_trainer`)."""
    from cotune.errors import ConfigError
    from cotune.optimize.finetune import MULTITASK_ADAPTER
    from cotune.optimize.registry import build_optimizer, merge, upgrade_params
    from cotune.training.trainer import build_trainer

    built = build_trainer(trainer, processes=processes)  # an unknown name, a bad count or a missing trl: now
    check_out_dir(out_dir, force=force, contents=["program.json", "adapter"])  # before any trace or training
    if base_model and not base_url:
        raise ConfigError("`--base-model` is for a program on a server: give the server with `--base-url URL`")
    the_task = _task(task, data_dir, split_seed)
    from cotune.tasks import task_info

    # The named options are aliases of BootstrapFinetune's hyperparameters: over the task's measured run defaults,
    # under -P; what none of them sets keeps the optimizer's own default.
    aliases = {
        "num_rollouts": rollouts,
        "rollout_temperature": rollout_temperature,
        "stop_at_first_pass": stop_at_first_pass,
        "keep_demos": keep_demos,
        "metric_threshold": threshold,
        "fill_with_labels": fill_with_labels or None,  # a flag: absent is not "off"
        "balance_classes": balance_classes,
        "lora": lora or None,
        "training": training or None,
    }
    this_run = {
        "output_dir": str(out_dir),
        "traces": str(traces) if traces else None,
        "num_threads": threads,
        "seed": seed,
        "base_model": base_model,
    }
    named = merge(upgrade_params("finetune", dict(task_info(task).run_defaults.get("weights", {}))), this_run)
    named = merge(named, upgrade_params("finetune", {k: v for k, v in aliases.items() if v is not None}))
    if (trainer, processes) != ("local", 1):
        named["trainer"] = built
    opt = build_optimizer("finetune", the_task.metric, **merge(named, upgrade_params("finetune", params or {})))
    opt.check_program(the_task.program())
    program = _bind(the_task, model, cache, console, base_url)  # hyperparameters checked before the model loads
    events = RichEvents(console)
    try:
        tuned = opt.compile(program, trainset=the_task.train, events=events)
        summary = None
        if evaluate_on:
            summary = evaluate(
                tuned,
                the_task.split(evaluate_on),
                the_task.metric,
                num_threads=threads,
                events=events,
                description=f"{task}/{evaluate_on}",
            ).summary()
    finally:
        events.close()
    result = opt.train_result_
    labeled = f", {opt.n_labeled_} examples from labels" if fill_with_labels else ""
    out.print(
        f"adapter: {opt.adapter_path_}  ({opt.n_passed_} of {opt.n_traces_} runs passed{labeled}; "
        f"calls per predictor: {opt.passed_by_predictor_})"
    )
    if opt.coverage_:
        out.print(f"kept traces cover {coverage_line(opt.coverage_)}")
    if opt.balance_:
        repeats = ", ".join(f"{c} {n} ×{opt.balance_['repeats'][c]}" for c, n in opt.balance_["counts"].items())
        epochs = ", ".join(f"{e}" if g == MULTITASK_ADAPTER else f"{g} {e}" for g, e in opt.balance_["epochs"].items())
        out.print(f"balanced the kept runs: {repeats} (epochs: {epochs})")
    out.print(
        f"training: {getattr(result, 'steps', '?')} steps, final loss {getattr(result, 'final_loss', float('nan')):.4f}, "
        f"{getattr(result, 'seconds', 0.0):.0f} s"
    )
    program_path = out_dir / "program.json"
    save_program(
        tuned, program_path, task=task, optimizer="finetune", seed=seed, **split_metadata(the_task, split_seed)
    )
    if summary is not None:
        out.print(
            evaluation_table(
                f"fine-tuned program on {evaluate_on}", summary, {"task": task, "adapter": str(opt.adapter_path_)}
            )
        )
    out.print(f"saved {program_path}  (evaluate it: cotune eval --program {program_path})")


def coverage_line(coverage: dict[str, Any]) -> str:
    """``38/50 training examples; species: setosa 16/16, versicolor 14/17, virginica 8/17``."""
    ex = coverage["examples"]
    parts = [f"{ex['covered']}/{ex['total']} training examples"]
    for name, classes in coverage.get("by_class", {}).items():
        cells = ", ".join(f"{c} {v['covered']}/{v['total']}" for c, v in classes.items())
        parts.append(f"{name}: {cells}")
    return "; ".join(parts)
