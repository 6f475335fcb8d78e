"""`cotune serve`, `cotune models` and `cotune tasks`: serve a model over an OpenAI-compatible API, and list the
models and tasks cotune knows by name."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.table import Table

from cotune.cli.options import ModelOpt, NoCacheOpt, console, out


def serve_cmd(
    model: ModelOpt = "smollm2-135m",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one.")] = 8000,
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback (e.g. 0.0.0.0) needs --api-key.")
    ] = "127.0.0.1",
    name: Annotated[str | None, typer.Option("--name", help="Model name clients send. Default: --model.")] = None,
    adapter: Annotated[
        list[str] | None, typer.Option("--adapter", help="NAME=PATH, repeatable: serve a LoRA adapter as model NAME.")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="COTUNE_SERVER_API_KEY",
            show_envvar=True,
            help="Key every request must send as 'Authorization: Bearer KEY'.",
        ),
    ] = None,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-origin", help="A web origin (https://app.example) whose pages may call the server; repeatable."
        ),
    ] = None,
    runtime_lora: Annotated[
        bool,
        typer.Option(
            "--runtime-lora",
            help="Also answer vLLM's POST /v1/load_lora_adapter and /v1/unload_lora_adapter: clients may load adapter folders from this machine's disk while it serves.",
        ),
    ] = False,
    no_cache: NoCacheOpt = False,
) -> None:
    """Serve a model over an OpenAI-compatible API (POST /v1/chat/completions, GET /v1/models, GET /health;
    with --runtime-lora also vLLM's POST /v1/load_lora_adapter and /v1/unload_lora_adapter)."""
    from cotune.cli.commands import load_model
    from cotune.errors import ConfigError
    from cotune.serve.policy import ServerPolicy
    from cotune.serve.server import serve

    adapters = {}
    for item in adapter or []:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            raise ConfigError(f"`--adapter` wants NAME=PATH, got {item!r}")
        adapters[key] = path
    ServerPolicy.create(host, api_key=api_key or "")  # refuses a network address without a key, before the model loads
    lm = load_model(model, cache=not no_cache, console=console)

    def events(e) -> None:
        if e.name == "server.start":
            bind, url = e.fields.get("bind", ""), e.fields.get("url")
            if bind.startswith(("0.0.0.0:", "[::]:")):
                where = f"every address of this machine ({bind}; from here: {url})"
            else:
                where = url if bind.startswith(("127.", "[::1]")) else f"http://{bind}/v1"
            auth = "API key required" if e.fields.get("api_key") else "no API key"
            console.print(
                f"serving {', '.join(e.fields.get('models', [name or model]))} at {where}, {auth}  (Ctrl-C stops)"
            )
        elif e.name == "server.request" and logging.getLogger("cotune").isEnabledFor(logging.DEBUG):
            console.print(f"{e.fields}")

    serve(
        lm,
        host,
        port,
        model_name=name or model,
        adapters=adapters,
        events=events,
        api_key=api_key or None,
        allowed_origins=allow_origin or (),
        runtime_lora=runtime_lora,
    )


def models_cmd() -> None:
    """List the models cotune knows by name and whether they are installed."""
    from cotune.lm.registry import list_models

    table = Table(title="models")
    for col in ("name", "installed", "converted", "source", "description"):
        table.add_column(col, overflow="fold")
    for row in list_models():
        table.add_row(
            row["name"],
            _yes(row.get("installed")),
            _yes(row.get("converted")),
            str(row.get("source", "")),
            row.get("description", ""),
        )
    out.print(table)
    for row in list_models():
        if not row.get("installed") and not row.get("converted"):
            out.print(f"{row['name']}: {row['install']}", soft_wrap=True, highlight=False)  # one line to copy
    out.print("Also accepted: a local Hugging Face folder, a .gguf file, or a hub id (online only).")


def tasks_cmd() -> None:
    """List the built-in tasks, their splits and the data they need."""
    from cotune.tasks import list_tasks

    table = Table(title="tasks")
    for col in ("name", "description", "splits", "data"):
        table.add_column(col, overflow="fold")
    for row in list_tasks():
        table.add_row(row["name"], row.get("description", ""), str(row.get("splits", "")), row.get("data", ""))
    out.print(table)


def _yes(flag: object) -> str:
    return "[green]yes[/]" if flag else "[dim]no[/]"
