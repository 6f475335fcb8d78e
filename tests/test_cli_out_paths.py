"""Every output path is checked before any work: a bad ``--out`` fails at once, with no LM call made and
nothing overwritten, instead of after the optimization, the traces or the evaluation."""

from __future__ import annotations

import io
import os

import pytest
from rich.console import Console

import cotune.cli.commands as commands
import cotune.cli.optimize_cmds as optimize_cmds
from cotune.cli.out_paths import check_out_dir, check_out_file
from cotune.errors import ConfigError
from cotune.lm import FakeLM


@pytest.fixture
def lms(monkeypatch):
    """Every model the CLI loads is a FakeLM; the list holds them, to count their calls."""
    loaded = []

    def load_model(model, *, cache, console, adapter=None):
        loaded.append(FakeLM(["Reasoning: small petals.\nSpecies: setosa"], name=model, adapter=adapter))
        return loaded[-1]

    monkeypatch.setattr(commands, "load_model", load_model)
    monkeypatch.setattr(optimize_cmds, "load_model", load_model)
    return loaded


def consoles():
    return Console(file=io.StringIO(), width=200), Console(file=io.StringIO(), width=200)


def calls(lms):
    return sum(len(lm.calls) for lm in lms)


def optimize(out_path, **kw):
    console, out = consoles()
    optimize_cmds.run_optimize(task="iris", optimizer="bootstrap", model="fake", out_path=out_path, params={},
                               data_dir=None, threads=1, seed=0, cache=False, evaluate_on=None,
                               console=console, out=out, **kw)  # fmt: skip


def test_optimize_into_a_path_under_a_file_fails_before_any_lm_call(tmp_path, lms):
    precious = tmp_path / "precious.json"
    precious.write_text("keep me")
    with pytest.raises(ConfigError, match=r"precious.json/x.json cannot be written: .*precious.json is a file"):
        optimize(precious / "x.json")
    assert calls(lms) == 0 and precious.read_text() == "keep me"


def test_optimize_into_a_folder_fails_before_any_lm_call(tmp_path, lms):
    with pytest.raises(ConfigError, match=r"is a folder, and --out takes a file here"):
        optimize(tmp_path)
    assert calls(lms) == 0


def test_finetune_into_a_file_fails_before_collecting_traces(tmp_path, lms):
    target = tmp_path / "adapters.json"
    target.write_text("{}")
    console, out = consoles()
    with pytest.raises(ConfigError, match=r"adapters.json is a file, and --out takes a folder here"):
        optimize_cmds.run_finetune(task="iris", model="fake", out_dir=target, lora={}, traces=None, threshold=None,
                                   data_dir=None, threads=1, seed=0, cache=False, evaluate_on=None,
                                   console=console, out=out)  # fmt: skip
    assert calls(lms) == 0 and target.read_text() == "{}"


def test_eval_into_a_folder_names_the_folder_before_any_lm_call(tmp_path, lms):
    console, out = consoles()
    with pytest.raises(ConfigError, match=rf"--out {tmp_path} is a folder"):
        commands.run_eval(task="iris", model="fake", split="test", limit=3, program_path=None, out_path=tmp_path,
                          data_dir=None, threads=1, cache=False, console=console, out=out)  # fmt: skip
    assert calls(lms) == 0


def test_eval_replaces_an_earlier_result(tmp_path, lms):
    path = tmp_path / "new" / "rows.json"
    check_out_file(path)  # a folder that does not exist yet is made
    path.parent.mkdir()
    path.write_text("{}")
    check_out_file(path)  # eval's results are replaced: nothing points at them


def test_run_into_an_out_dir_that_is_a_file_fails_before_the_model_loads(tmp_path, lms):
    target = tmp_path / "runs"
    target.write_text("")
    console, out = consoles()
    with pytest.raises(ConfigError, match=r"runs is a file, and --out-dir takes a folder"):
        commands.run_experiment(config_path=None, resume=None, overrides={"out_dir": str(target), "threads": 1},
                                console=console, out=out)  # fmt: skip
    assert lms == []


def test_report_into_a_file_fails(tmp_path):
    from cotune.cli.report_cmds import run_report

    target = tmp_path / "report"
    target.write_text("")
    console, out = consoles()
    with pytest.raises(ConfigError, match=r"report is a file, and --out takes a folder"):
        run_report([tmp_path], out_dir=target, console=console, out=out)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_a_folder_without_write_permission_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=rf"no permission to write in {locked}"):
            check_out_file(locked / "sub" / "x.json")
        with pytest.raises(ConfigError, match=rf"no permission to write in {locked}"):
            check_out_dir(locked / "adapters")
    finally:
        locked.chmod(0o700)


def test_existing_outputs_are_refused_without_force(tmp_path):
    (tmp_path / "ft" / "adapter").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"adapter already exists .* pass --force"):
        check_out_dir(tmp_path / "ft", force=False, contents=["program.json", "adapter"])
    check_out_dir(tmp_path / "ft", force=True, contents=["program.json", "adapter"])
