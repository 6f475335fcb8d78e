"""`cotune cache show | verify | clear`: the persistent request cache, looked at and repaired."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cotune.errors import CacheError

PathOpt = Annotated[
    Path | None,
    typer.Option("--path", help="The cache file. Default: $COTUNE_REQUEST_CACHE, else <cache dir>/requests.sqlite."),
]

cache_app = typer.Typer(help="Show, verify or clear the request cache.", no_args_is_help=True)


def _path(path: Path | None) -> Path:
    from cotune.lm.cache import default_cache_path

    return path or default_cache_path()


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in (path, path.with_name(path.name + "-wal")) if f.exists())


@cache_app.command("show")
def show(path: PathOpt = None) -> None:
    """Where the cache is, how many answers it holds and how big it is."""
    from cotune.lm.cache import RequestCache

    out = Console()
    file = _path(path)
    if not file.exists():
        out.print(f"request cache: {file} (none yet)")
        return
    out.print(f"request cache: {file}\nanswers: {len(RequestCache(file))}\nsize: {_size(file) / 1e6:.1f} MB")


@cache_app.command("verify")
def verify(path: PathOpt = None) -> None:
    """Check the cache file's integrity; exit code 1 when it is damaged."""
    from cotune.lm.cache import RequestCache

    out = Console()
    file = _path(path)
    if not file.exists():
        out.print(f"request cache: {file} (none yet)")
        return
    problems = RequestCache(file).verify()
    if problems:
        raise CacheError(f"request cache {file} is damaged: {'; '.join(problems[:5])}; `cotune cache clear` removes it")
    out.print(f"request cache {file}: ok")


@cache_app.command("clear")
def clear(path: PathOpt = None) -> None:
    """Delete the cache (also a damaged one); later runs ask the model again."""
    from cotune.lm.cache import RequestCache

    file = _path(path)
    removed = RequestCache.remove(file)
    Console().print(f"removed {', '.join(map(str, removed))}" if removed else f"request cache: {file} (none to remove)")
