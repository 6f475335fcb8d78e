"""The CLI's error paths: bad input names the value and the choices, exits non-zero, no traceback."""

import subprocess
import sys

import pytest


def cotune(*args):
    return subprocess.run([sys.executable, "-c", "from cotune.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "--task", "irs"], "unknown task 'irs'; choose one of:"),
        (["eval", "--task", "iris", "--split", "tset", "--model", "nonexistent-model"], "unknown split 'tset'"),
        (["eval", "--model", "nonexistent-model", "--limit", "1"], "unknown model 'nonexistent-model'"),
        (["optimize", "--optimizer", "bfrz"], "unknown optimizer 'bfrz'; choose one of: bfrs"),
        (["run", "--strategies", "p-x"], "unknown step 'x'"),
        (["run", "--resume", "/nonexistent/run"], "not a run directory"),
        (["serve", "--adapter", "no-equals-sign"], "NAME=PATH"),
        (["serve", "--host", "0.0.0.0"], "binding '0.0.0.0' exposes the model to the network, so it needs an API key"),
    ],
)
def test_bad_input_is_one_clear_line(args, message):
    result = cotune(*args)
    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_the_commands():
    result = cotune("--help")
    assert result.returncode == 0
    for command in ("run", "eval", "optimize", "finetune", "report", "advise", "serve", "models", "tasks"):
        assert command in result.stdout


def test_tasks_lists_builtin_tasks():
    result = cotune("tasks")
    assert result.returncode == 0
    for name in ("iris", "gsm8k", "hotpotqa"):
        assert name in result.stdout


def test_plain_progress_lines_without_a_terminal():
    import io

    from rich.console import Console

    from cotune.cli.render import RichEvents
    from cotune.events import Event

    buf = io.StringIO()
    sink = RichEvents(Console(file=buf, force_terminal=False, width=200))
    sink(Event("run.start", {"nodes": 2}))
    sink(Event("node.done", {"seed": 0, "strategy": "p", "dev": 0.5, "test": 0.25}))
    sink(Event("node.failed", {"seed": 0, "strategy": "w", "kind": "infrastructure", "error": "server down"}))
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("seed 0 p: dev 50.0%  test 25.0%") and "[1/2 nodes, about" in lines[0]
    assert lines[1].startswith("seed 0 w: FAILED (infrastructure): server down") and "[2/2 nodes]" in lines[1]
