"""What the `cotune` commands share: the two consoles, the common options, and NAME=VALUE parsing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cotune.errors import ConfigError


def _wide(console: Console) -> Console:
    """Without a terminal (a log file, CI, nohup) rich assumes 80 columns and cuts table headings; use 160
    unless $COLUMNS says otherwise."""
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160
    return console


console = _wide(Console(stderr=True))  # progress, messages and errors
out = _wide(Console())  # results: tables, paths written

ModelOpt = Annotated[
    str,
    typer.Option("--model", "-m", help="Registry name (see `cotune models`), local folder, .gguf file or hub id."),
]
TaskOpt = Annotated[str, typer.Option("--task", "-t", help="Built-in task (see `cotune tasks`).")]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Folder with the task's data files (gsm8k, hotpotqa).")
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the request cache.")]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=1, help="Parallel examples; a local model batches them.")]
SeedOpt = Annotated[
    int,
    typer.Option("--seed", help="Seed of the optimizer (demos, rollouts, training); the split is --split-seed."),
]
SplitSeedOpt = Annotated[
    int, typer.Option("--split-seed", help="Seed of the train/dev/test split (saved with the program).")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite earlier outputs at --out.")]
EvalSplitOpt = Annotated[
    str | None, typer.Option("--eval-split", help="Evaluate the result on this split afterwards ('' to skip).")
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-P",
        help="Optimizer hyperparameter NAME=VALUE (repeatable; dotted for nested ones), e.g. -P num_candidates=6, "
        "-P bootstrap.max_labeled_demos=2, -P lora.r=8, -P training.epochs=3.",
    ),
]


def parse_params(items: list[str] | None, flag: str) -> dict:
    """NAME=VALUE pairs; values are read as JSON where they parse (numbers, true/false), else kept as text."""
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
