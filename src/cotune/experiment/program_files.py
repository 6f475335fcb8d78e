"""Program files that stay valid when their folder moves: adapter paths are saved relative to the file.

`Program.save` records the adapter path as the LM holds it (often relative to the working directory,
``runs/run/seed-0/w/adapter``), which breaks as soon as the run folder moves or a command runs from
elsewhere. Run directories and CLI outputs save programs with `save_program` instead (atomically), and
read them back with `read_program_state`, which turns the relative path into a usable one.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> state = {"predictors": {}, "lm": {"backend": "hf", "model": "m", "adapter": str(folder / "w" / "adapter")}}
    >>> relocate(state, folder / "w")["lm"]["adapter"]
    'adapter'
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from cotune.files import write_json_atomic
from cotune.lm.registry import relative_adapter, resolve_adapter
from cotune.program.program import Program, read_state

# Backends whose adapter is a folder on this machine; an "openai" adapter is a name the server knows.
_PATH_ADAPTERS = ("hf", "fake")


def _has_path_adapter(state: dict[str, Any]) -> bool:
    lm = state.get("lm") or {}
    return bool(lm.get("adapter")) and lm.get("backend") in _PATH_ADAPTERS


def relocate(state: dict[str, Any], to_dir: str | Path, from_dir: str | Path | None = None) -> dict[str, Any]:
    """A copy of ``state`` whose adapter path is relative to ``to_dir`` (read relative to ``from_dir``,
    or to the working directory, when it is relative now)."""
    if not _has_path_adapter(state):
        return state
    new = copy.deepcopy(state)
    absolute = resolve_adapter(new["lm"]["adapter"], from_dir) if from_dir is not None else new["lm"]["adapter"]
    new["lm"]["adapter"] = relative_adapter(absolute, to_dir)
    return new


def save_program(program: Program, path: str | Path, **metadata: Any) -> Path:
    """Like `Program.save`, but atomic and with the adapter path relative to the file's folder."""
    path = Path(path)
    state = program.dump_state() | {"metadata": metadata}
    return write_json_atomic(path, relocate(state, path.parent))


def copy_program(source: str | Path, target: str | Path) -> Path:
    """Copy a saved program file to another folder, its relative adapter path rewritten to still point
    at the same adapter; atomic."""
    source, target = Path(source), Path(target)
    state = read_state(source)
    return write_json_atomic(target, relocate(state, target.parent, from_dir=source.parent))


def read_program_state(path: str | Path) -> dict[str, Any]:
    """A saved program's state, its adapter path made usable from the current directory."""
    path = Path(path)
    state = read_state(path)
    if _has_path_adapter(state):
        state = copy.deepcopy(state)
        state["lm"]["adapter"] = resolve_adapter(state["lm"]["adapter"], path.parent)
    return state
