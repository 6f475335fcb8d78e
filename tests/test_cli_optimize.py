"""`cotune optimize -O gpo --optimizer-model NAME` (or ``-P optimizer_lm=NAME``): the named model writes the
instructions, a bad name fails before any model loads, and the saved parameters keep the name."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest
from rich.console import Console

import cotune.cli.optimize_cmds as optimize_cmds
from cotune.errors import ConfigError, UnknownChoiceError
from cotune.lm import FakeLM, registry
from cotune.optimize.registry import build_optimizer

PROPOSAL = "Read all four measurements, then name the species."


@pytest.fixture
def models(monkeypatch, tmp_path):
    """The task model is a FakeLM naming one species; "fake-optimizer" is a registered model whose load is a
    FakeLM proposing PROPOSAL. Returns the names loaded, task model and optimizer LM alike."""
    monkeypatch.setenv("COTUNE_CACHE_DIR", str(tmp_path / "cache"))
    loaded = []

    def load_model(model, *, cache, console, adapter=None):
        loaded.append(model)
        return FakeLM(["Reasoning: small petals.\nSpecies: setosa"], name=model)

    def load(name, **kwargs):
        loaded.append(name)
        return FakeLM(lambda messages: f"New Instruction: {PROPOSAL}", name=name)

    source = registry.ModelSource(
        name="fake-optimizer",
        description="",
        parameters="1B",
        modules=("cotune",),
        install="pip install fake",
        gguf=lambda dirs, scratch: scratch,
        source="test",
    )
    monkeypatch.setitem(registry.MODELS, "fake-optimizer", source)
    monkeypatch.setattr(registry, "load", load)
    monkeypatch.setattr(optimize_cmds, "load_model", load_model)
    return loaded


def optimize(tmp_path, optimizer="gpo", params=None, **kw):
    out = io.StringIO()
    path = tmp_path / "program.json"
    gpo = {"num_steps": 1, "candidates_per_step": 1, "retrieval": "none", "minibatch_size": 4, "num_confirm": 1}
    optimize_cmds.run_optimize(
        task="iris",
        optimizer=optimizer,
        model="task-model",
        out_path=path,
        params=(gpo if optimizer == "gpo" else {}) | (params or {}),
        data_dir=None,
        threads=1,
        seed=0,
        cache=False,
        evaluate_on=None,
        console=Console(file=io.StringIO()),
        out=Console(file=out, width=300),
        **kw,
    )
    return json.loads(path.read_text()), out.getvalue()


def test_the_optimizer_model_writes_the_instructions_and_is_saved_by_name(tmp_path, models):
    saved, printed = optimize(tmp_path, optimizer_model="fake-optimizer")
    assert models == ["task-model", "fake-optimizer"]  # the task model first, the optimizer LM when compile starts
    assert PROPOSAL in printed  # in the GPO trajectory table
    assert saved["metadata"]["params"]["optimizer_lm"] == "fake-optimizer"


def test_param_optimizer_lm_is_the_same_and_wins_over_the_flag(tmp_path, models):
    saved, _ = optimize(tmp_path, params={"optimizer_lm": "fake-optimizer"}, optimizer_model="qwen2.5-coder-1.5b")
    assert models == ["task-model", "fake-optimizer"]
    assert saved["metadata"]["params"]["optimizer_lm"] == "fake-optimizer"


def test_a_bad_optimizer_model_is_refused_before_any_model_loads(tmp_path, models):
    with pytest.raises(ConfigError, match="`--optimizer-model` is for an optimizer that has an optimizer LM .*'bfrs'"):
        optimize(tmp_path, optimizer="bfrs", optimizer_model="fake-optimizer")
    with pytest.raises(UnknownChoiceError, match="unknown model 'qwen-1.5b'"):
        optimize(tmp_path, optimizer_model="qwen-1.5b")
    assert models == []


def test_a_misspelt_optimizer_model_fails_at_the_command_line_before_any_model_loads(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cotune.cli import main; main()",
            "optimize",
            "-O",
            "gpo",
            "--optimizer-model",
            "qwen-1.5b",
            "--out",
            str(tmp_path / "p.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert "unknown model 'qwen-1.5b'; choose one of: qwen2.5-coder-0.5b, qwen2.5-coder-1.5b" in message, message
    assert "Traceback" not in message


# -- MedPrompt says how long it will take before it starts --------------------------------------------


def test_the_estimate_line_gives_the_total_the_phases_and_what_shortens_it():
    from cotune.optimize.work_estimate import Phase, WorkEstimate

    work = WorkEstimate(
        (Phase("self-generation", 50, 2.0), Phase("ensemble", 750, 3.04)), (("-P m=3", 1450.0), ("-P m=1", 556.0))
    )
    assert optimize_cmds.estimate_line(work, "test") == (
        "medprompt: about 40 min on this machine (self-generation: 50 runs x 2.0 s; ensemble on test: 750 runs x "
        "3.0 s). Shorter: -P m=3 (about 24 min), -P m=1 (about 9 min), --eval-split '' (about 2 min, no test score)."
    )
    alone = WorkEstimate((Phase("self-generation", 50, 1.0),))
    assert optimize_cmds.estimate_line(alone, None) == (
        "medprompt: about 50 s on this machine (self-generation: 50 runs x 1.0 s)."
    )
    assert [optimize_cmds.duration(s) for s in (89, 90, 5399, 5400, 9000)] == [
        "89 s",
        "2 min",
        "90 min",
        "1.5 hours",
        "2.5 hours",
    ]


def test_medprompt_is_timed_on_the_program_and_the_estimate_printed(tmp_path):
    from cotune.optimize.medprompt import MedPrompt
    from cotune.retrieve.embed import TfidfEmbedder
    from cotune.tasks.multiple_choice import MultipleChoiceQA, choice_match, mc_example

    data = [mc_example(f"Question {i}?", ["yes", "no", "maybe"], "yes") for i in range(12)]
    program = MultipleChoiceQA().bind(FakeLM(["Reasoning: r.\nAnswer: (A)"]))
    buffer = io.StringIO()
    opt = MedPrompt(choice_match, embedder=TfidfEmbedder(), m=3)
    narrow = Console(file=buffer, width=80)  # a narrow log: the line stays whole
    optimize_cmds.say_how_long(opt, program, data, data[:4], "dev", 2, narrow)
    assert re.match(
        r"medprompt: about \d+ s on this machine \(self-generation: 12 runs x [\d.]+ s; ensemble on dev: 12 runs x "
        r"[\d.]+ s\)\. Shorter: -P m=1 \(about \d+ s\), --eval-split '' \(about \d+ s, no dev score\)\.$",
        buffer.getvalue().strip(),
    ), buffer.getvalue()
    quiet = io.StringIO()
    bfrs = build_optimizer("bfrs", choice_match)
    optimize_cmds.say_how_long(bfrs, program, data, data, "dev", 2, Console(file=quiet))
    assert quiet.getvalue() == ""  # only MedPrompt's defaults run long enough to need it


def test_optimize_says_how_long_before_compiling_and_evaluating(tmp_path, models, monkeypatch):
    seen = []

    class Stop(Exception):
        pass

    def record(opt, program, trainset, evalset, evaluate_on, threads, console):
        seen.append((type(opt).__name__, len(trainset), len(evalset), evaluate_on, threads))
        raise Stop

    monkeypatch.setattr(optimize_cmds, "say_how_long", record)
    with pytest.raises(Stop):
        optimize_cmds.run_optimize(
            task="iris",
            optimizer="knn",
            model="task-model",
            out_path=tmp_path / "p.json",
            params={},
            data_dir=None,
            threads=3,
            seed=0,
            cache=False,
            evaluate_on="test",
            console=Console(file=io.StringIO()),
            out=Console(file=io.StringIO()),
        )
    assert seen == [("KNNFewShot", 50, 50, "test", 3)] and models == ["task-model"]
