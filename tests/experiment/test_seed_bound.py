"""The number of seeds is bounded like every other size: `--seeds 100000000` is one clear error at once,
not a list of a hundred million seeds growing to gigabytes before anything runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cotune.errors import ConfigError
from cotune.experiment.config import MAX_SEEDS, ExperimentConfig


def test_a_huge_seed_count_is_refused_naming_the_value_and_the_bound():
    with pytest.raises(ConfigError, match=rf"seeds: at most {MAX_SEEDS} seeds, got 100000000"):
        ExperimentConfig.from_dict({"seeds": 100_000_000})


def test_a_seed_list_longer_than_the_bound_is_refused():
    with pytest.raises(ConfigError, match=rf"seeds: at most {MAX_SEEDS} seeds, got {MAX_SEEDS + 1}"):
        ExperimentConfig.from_dict({"seeds": list(range(MAX_SEEDS + 1))})
    assert len(ExperimentConfig.from_dict({"seeds": MAX_SEEDS}).seeds) == MAX_SEEDS


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS caps the child's memory on Linux")
def test_cotune_run_with_a_huge_seed_count_fails_at_once():
    # the child may use 1 GiB: before the bound it built the list and died of MemoryError (or grew to 12 GB)
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
            "from cotune.cli import main; main()")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code, "run", "--seeds", "100000000"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"seeds: at most {MAX_SEEDS} seeds, got 100000000" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_run_passes_the_seed_count_and_its_other_options_to_the_config(monkeypatch):
    from typer.testing import CliRunner

    import cotune.cli.commands as commands
    from cotune.cli import app

    seen = {}
    monkeypatch.setattr(commands, "run_experiment", lambda **kw: seen.update(kw["overrides"]))
    result = CliRunner().invoke(app, ["run", "--seeds", "3", "--no-cache"])
    assert result.exit_code == 0, result.output
    assert seen == {"seeds": 3, "cache": False}
    assert commands.experiment_config(None, seen).seeds == [0, 1, 2]
