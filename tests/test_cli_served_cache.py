"""`cotune eval --program` for a program bound to an OpenAI-compatible server: ``--no-cache`` reaches that
server's client, and the output says how many answers came from the request cache."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

import cotune.cli.commands as commands
from cotune.lm import FakeLM
from cotune.lm.remote.openai_compat import OpenAICompatible
from cotune.serve.server import start_server
from cotune.tasks import load_task


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A FakeLM behind cotune's server, a program file bound to it, and a private request cache."""
    monkeypatch.setenv("COTUNE_REQUEST_CACHE", str(tmp_path / "requests.sqlite"))
    fake = FakeLM(lambda m: '{"species": "setosa"}', name="/models/B")
    with start_server(fake, model_name="local-model") as server:
        program = load_task("iris").program().bind(OpenAICompatible("local-model", base_url=server.url, cache=False))
        yield fake, program.save(tmp_path / "program.json")


def eval_cli(program, *, cache: bool) -> str:
    buf = io.StringIO()
    console, out = Console(file=buf, width=200), Console(file=buf, width=200)
    commands.run_eval(
        task="iris",
        model=None,
        split="test",
        limit=2,
        program_path=program,
        out_path=None,
        data_dir=None,
        threads=1,
        cache=cache,
        console=console,
        out=out,
    )
    return " ".join(buf.getvalue().replace("│", " ").split())


@pytest.mark.filterwarnings("ignore:server at .* rejected structured outputs")  # a FakeLM has no grammar
def test_no_cache_reaches_a_program_bound_to_a_server(served):
    fake, program = served
    first = eval_cli(program, cache=True)
    assert len(fake.calls) == 2 and "LM calls 2 (0 from cache)" in first
    again = eval_cli(program, cache=True)
    assert len(fake.calls) == 2 and "LM calls 2 (2 from cache)" in again
    assert "served weights /models/B" in again  # what the cache answers for
    assert "2 of 2 answers came from the request cache" in again and "--no-cache" in again
    fresh = eval_cli(program, cache=False)
    assert len(fake.calls) == 4, "--no-cache must ask the server again"
    assert "LM calls 2 (0 from cache)" in fresh and "came from the request cache" not in fresh
