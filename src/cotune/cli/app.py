"""The `cotune` command: its commands (each a typed function in the module of its group) and its entry point,
where library errors become one red line and exit code 2."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Annotated

import typer
from rich.markup import escape

from cotune.cli import experiment_cli, optimize_cli, serve_cli
from cotune.cli.cache_cmds import cache_app
from cotune.cli.interrupt import SigInt, interrupted
from cotune.cli.options import console
from cotune.errors import CotuneError

app = typer.Typer(
    name="cotune",
    help="Optimize the prompts and the weights of LM programs, together.",
    epilog=(
        "Conventions, the same in every command: "
        "-o/--out is where the result goes: a file where a command writes one (eval, optimize), a folder where it "
        "writes several (finetune: the adapter and the program; report). "
        "Hyperparameters: -P NAME=VALUE sets any of the optimizer's (dotted for nested ones: -P lora.r=8, "
        "-P training.epochs=3, -P bootstrap.max_labeled_demos=2); named flags such as --lr are shortcuts for the common ones, and -P wins. "
        "cotune run takes a YAML config (-c) and --set KEY=VALUE for any of its fields (--set prompt.params.k=5, "
        "--set weights.training.epochs=3). "
        "--seeds N means seeds 0..N-1; in YAML, seeds is that count or a list of seeds. "
        "--threads is how many examples run at once (num_threads in the Python API). "
        "Run `cotune COMMAND --help` for a command's options."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug events.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


app.command("eval")(experiment_cli.eval_cmd)
app.command("run", cls=experiment_cli.RunCommand)(experiment_cli.run_cmd)
app.command("optimize")(optimize_cli.optimize_cmd)
app.command("finetune")(optimize_cli.finetune_cmd)
app.command("report")(experiment_cli.report_cmd)
app.command("advise")(experiment_cli.advise_cmd)
app.command("serve")(serve_cli.serve_cmd)
app.command("models")(serve_cli.models_cmd)
app.command("tasks")(serve_cli.tasks_cmd)
app.add_typer(cache_app, name="cache")


def _warning_display(python_default):
    """cotune's own warnings (an old config spelling) as one line, as errors are; others as Python shows them."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if f"{os.sep}cotune{os.sep}" in filename:
            console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
        else:
            python_default(message, category, filename, lineno, file, line)

    return show


def main() -> None:
    # The CLI shows its own progress; silence the libraries' download/loading bars and advisories.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    sigint = SigInt().install()
    try:
        with warnings.catch_warnings():  # restores the default display when the command ends
            warnings.showwarning = _warning_display(warnings.showwarning)
            app(standalone_mode=True)
    except CotuneError as e:
        console.print(
            f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True
        )  # a path in it stays whole
        raise SystemExit(2) from None
    except OSError as e:  # a file that cannot be read or written: say which, without a traceback
        where = f": {e.filename}" if e.filename else ""  # a write on a full disk names no file
        console.print(
            f"[bold red]error:[/] {escape(str(e.strerror or e))}{escape(where)}", highlight=False, soft_wrap=True
        )
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        interrupted(console)
    except SystemExit as e:
        if sigint.received and e.code == 130:  # typer turns the KeyboardInterrupt into this exit
            interrupted(console)
        raise
    finally:
        sigint.uninstall()
