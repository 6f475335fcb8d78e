"""`cotune models`: a registered model that is neither installed nor converted comes with its install command."""

from __future__ import annotations

from typer.testing import CliRunner

from cotune.cli.app import app
from cotune.lm import registry


def test_models_gives_the_install_command_of_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("COTUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "120")
    installed = {"smollm2-135m"}
    monkeypatch.setattr(
        registry.ModelSource, "package_dirs", lambda self: [tmp_path] if self.name in installed else None
    )
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"):
        assert f"{name}: {registry.MODELS[name].install}" in lines  # whole, on one line, ready to copy
    assert not any(line.startswith("smollm2-135m: pip") for line in lines)
