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
