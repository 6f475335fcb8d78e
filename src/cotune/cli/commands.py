"""The work behind CLI commands, kept apart from option parsing so it reads top to bottom."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from cotune.cli.render import RichEvents, evaluation_table, rows_table
from cotune.evaluate import evaluate
from cotune.program.program import read_state

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
    seed: int,
    cache: bool,
    console: Console,
    out: Console,
) -> None:
    from cotune.tasks import load_task

    saved = read_state(program_path) if program_path else None
    if saved is not None:
        meta = saved.get("metadata", {})
        task = meta.get("task", task)
    the_task = load_task(task, data_dir=data_dir, seed=seed)
    dataset = the_task.split(split)
    if limit is not None:
        dataset = dataset[:limit]

    program = the_task.program()
    adapter = None
    if saved is not None:
        program.load_state(saved)
        saved_lm = saved.get("lm") or {}
        if model is None and saved_lm.get("backend") == "hf":
            model, adapter = saved_lm.get("model"), saved_lm.get("adapter")
        elif model is None and saved_lm:
            from cotune.lm.registry import from_spec

            program.bind(from_spec(saved_lm))
    if program.lm is None:
        program.bind(load_model(model or DEFAULT_MODEL, cache=cache, console=console, adapter=adapter))
    lm = program.lm

    events = RichEvents(console)
    try:
        result = evaluate(program, dataset, the_task.metric, num_threads=threads, events=events,
                          description=f"{task}/{split}")
    finally:
        events.close()

    out.print(rows_table(result.rows))
    context = {"task": task, "split": f"{split} ({len(dataset)} examples)", "model": lm.model}
    if lm.adapter:
        context["adapter"] = lm.adapter
    if program_path:
        context["program"] = str(program_path)
    out.print(evaluation_table("evaluation", result.summary(), context))
    if out_path is not None:
        result.save(out_path)
        out.print(f"wrote {out_path}")
