"""Output paths are checked before any work: a command that makes hundreds of LM calls or trains an adapter
must not fail at the end because its ``--out`` cannot be written.

A file output must not be a folder, a folder output must not be a file, the nearest folder that exists on
the way there must be a folder this process may write in, and what is already there is replaced only where
the command's overwrite rule says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cotune.cli.provenance import refuse_overwrite
from cotune.errors import ConfigError


def check_out_file(path: Path, *, force: bool | None = None, flag: str = "--out") -> None:
    """``path`` can be written as a file. ``force``: None replaces an existing file (a result that nothing
    points at); False refuses to (`refuse_overwrite`); True replaces it.

    Raises:
        ConfigError: naming the path, what is wrong with it and what to do.
    """
    if path.is_dir():
        raise ConfigError(
            f"{flag} {path} is a folder, and {flag} takes a file here; give a file path such as {path / 'result.json'}"
        )
    _check_folder(path.parent, path, flag)
    if force is not None:
        refuse_overwrite([path], force, flag)


def check_out_dir(path: Path, *, force: bool | None = None, contents: Sequence[str] = (), flag: str = "--out") -> None:
    """``path`` can be written as a folder; ``contents`` are the entries the command writes in it, refused
    when they exist unless ``force`` (None: replaced).

    Raises:
        ConfigError: naming the path, what is wrong with it and what to do.
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file, and {flag} takes a folder here; give a folder path")
    _check_folder(path, path, flag)
    if force is not None:
        refuse_overwrite([path / name for name in contents], force, flag)


def _check_folder(folder: Path, target: Path, flag: str) -> None:
    """The nearest existing folder on the way to ``folder`` is a folder that this process may write in."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {target} cannot be written: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {target} cannot be written: no permission to write in {existing}")
