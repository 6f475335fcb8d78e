"""The CLI's error paths: bad input names the value and the choices, exits non-zero, no traceback."""

import subprocess
import sys

import pytest


def cotune(*args):
    return subprocess.run(
        [sys.executable, "-c", "from cotune.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "--task", "irs"], "unknown task 'irs'; choose one of:"),
        (["eval", "--task", "iris", "--split", "tset", "--model", "nonexistent-model"], "unknown split 'tset'"),
        (["eval", "--model", "nonexistent-model", "--limit", "1"], "unknown model 'nonexistent-model'"),
        (["optimize", "--optimizer", "bfrz"], "unknown optimizer 'bfrz'; choose one of: bfrs"),
        (["run", "--strategies", "p-x"], "unknown step 'x'"),
        (["run", "--resume", "/nonexistent/run"], "not a run directory"),
        (
            ["run", "--set", "dtype=int4"],
            "dtype: unknown dtype 'int4'; choose one of: auto, bfloat16, float16, float32",
        ),
        (["run", "--set", "prompt.num_candidates=0"], "prompt.num_candidates must be >= 1, got 0"),
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
    # one vocabulary, said once: where results go, hyperparameters, seeds, threads
    text = " ".join(result.stdout.replace("│", " ").split())
    for convention in ("-o/--out is where the result goes", "-P NAME=VALUE", "--set KEY=VALUE", "--seeds N means seeds 0..N-1",
                       "--threads is how many examples run at once"):  # fmt: skip
        assert convention in text, text


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


def test_plain_progress_time_left_weighs_each_node_by_its_kind(monkeypatch):
    import io

    from rich.console import Console

    from cotune.cli import render
    from cotune.events import Event

    clock = [0.0]
    monkeypatch.setattr(render.time, "monotonic", lambda: clock[0])
    buf = io.StringIO()
    sink = render.RichEvents(Console(file=buf, force_terminal=False, width=200))
    sink(Event("run.start", {"nodes": 5, "node_kinds": ["eval", "p", "w", "eval", "w"]}))

    def node(strategy, seconds, seed=0):
        sink(Event("node.start", {"seed": seed, "strategy": strategy}))
        clock[0] += seconds
        sink(Event("node.done", {"seed": seed, "strategy": strategy, "dev": 0.5, "test": 0.5}))
        return buf.getvalue().splitlines()[-1]

    assert "time left known after the first Π (p), Θ (w) step" in node("zero-shot", 10)
    assert "time left known after the first Θ (w) step" in node("p", 40)
    assert "[3/5 nodes, about 1m50s left]" in node("w", 100)  # one zero-shot (10 s) and one Θ node (100 s) left
    assert "[4/5 nodes, about 1m40s left]" in node("zero-shot", 10, seed=1)


def test_plain_output_says_how_far_a_long_phase_got_once_a_minute(monkeypatch):
    import io

    from rich.console import Console

    from cotune.cli import render
    from cotune.events import Event

    clock = [0.0]
    monkeypatch.setattr(render.time, "monotonic", lambda: clock[0])
    buf = io.StringIO()
    sink = render.RichEvents(Console(file=buf, force_terminal=False, width=200))
    sink(Event("progress.start", {"id": 1, "description": "finetune", "total": 63}))
    sink(Event("progress.start", {"id": 2, "description": "seed 0 p dev", "total": 50}))
    for step in range(1, 64):
        clock[0] += 20.0  # a 20 s training step
        sink(Event("progress.advance", {"id": 1, "done": step, "total": 63, "advance": 1, "loss": 0.5, "lr": 1.5e-4}))
    sink(Event("progress.advance", {"id": 2, "done": 50, "total": 50, "advance": 1}))  # after 21 min: one line
    sink(Event("progress.end", {"id": 1, "done": 63, "total": 63}))
    sink(Event("progress.end", {"id": 2, "done": 50, "total": 50}))
    lines = buf.getvalue().splitlines()
    training = [line for line in lines if line.startswith("  finetune:")]
    assert training[0] == "  finetune: 3/63  loss=0.500  lr=1.50e-04  (1m00s)" and len(training) == 21  # every third
    assert training[-1] == "  finetune: 63/63  loss=0.500  lr=1.50e-04  (21m00s)"
    assert [line for line in lines if line.startswith("  seed 0 p dev:")] == ["  seed 0 p dev: 50/50  (21m00s)"]
    sink(Event("progress.start", {"id": 3, "description": "quick", "total": 2}))
    sink(Event("progress.advance", {"id": 3, "done": 2, "total": 2, "advance": 2}))
    sink(Event("progress.end", {"id": 3, "done": 2, "total": 2}))
    assert "  quick:" not in buf.getvalue()  # a phase within its first minute prints no progress line


def test_an_old_config_spelling_is_one_warning_line_a_user_sees():
    """A training setting written under ``lora`` (before LoRAConfig and TrainingConfig were split) still loads;
    the CLI says its new spelling as one line, not as Python's two-line warning with a source path."""
    result = cotune("run", "--task", "iris", "--set", "weights.lora.epochs=3", "--set", "threads=0")
    assert result.returncode == 2
    assert "warning: lora.epochs is a training setting: write training.epochs" in result.stderr + result.stdout
    assert "FutureWarning" not in result.stderr and "split_lora_settings" not in result.stderr
