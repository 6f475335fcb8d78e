"""`cotune optimize -O gpo --optimizer-model NAME` (or ``-P optimizer_lm=NAME``): the named model writes the
instructions, a bad name fails before any model loads, and the saved parameters keep the name."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from rich.console import Console

import cotune.cli.optimize_cmds as optimize_cmds
from cotune.errors import ConfigError, UnknownChoiceError
from cotune.lm import FakeLM, registry

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
        name="fake-optimizer", description="", parameters="1B", modules=("cotune",), install="pip install fake",
        gguf=lambda dirs, scratch: scratch, source="test",
    )  # fmt: skip
    monkeypatch.setitem(registry.MODELS, "fake-optimizer", source)
    monkeypatch.setattr(registry, "load", load)
    monkeypatch.setattr(optimize_cmds, "load_model", load_model)
    return loaded


def optimize(tmp_path, optimizer="gpo", params=None, **kw):
    out = io.StringIO()
    path = tmp_path / "program.json"
    gpo = {"num_steps": 1, "candidates_per_step": 1, "retrieval": "none", "minibatch_size": 4, "num_confirm": 1}
    optimize_cmds.run_optimize(
        task="iris", optimizer=optimizer, model="task-model", out_path=path,
        params=(gpo if optimizer == "gpo" else {}) | (params or {}), data_dir=None, threads=1, seed=0, cache=False,
        evaluate_on=None, console=Console(file=io.StringIO()), out=Console(file=out, width=300), **kw,
    )  # fmt: skip
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
        [sys.executable, "-c", "from cotune.cli import main; main()", "optimize", "-O", "gpo", "--optimizer-model",
         "qwen-1.5b", "--out", str(tmp_path / "p.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert "unknown model 'qwen-1.5b'; choose one of: qwen2.5-coder-0.5b, qwen2.5-coder-1.5b" in message, message
    assert "Traceback" not in message
