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
from typing import TYPE_CHECKING, Any

from cotune.files import write_json_atomic
from cotune.lm.registry import relative_adapter, resolve_adapter, spec_adapter_is_folder
from cotune.program.program import Program, read_state

if TYPE_CHECKING:
    from cotune.lm.base import LM


def _path_specs(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The LM specs in ``state`` (the shared ``lm`` and each predictor's in ``lms``) whose adapter is a path."""
    specs = [state.get("lm"), *(state.get("lms") or {}).values()]
    return [s for s in specs if isinstance(s, dict) and spec_adapter_is_folder(s)]


def _map_adapters(state: dict[str, Any], change: Any) -> dict[str, Any]:
    """A copy of ``state`` with ``change`` applied to every adapter path (``state`` itself when there is none)."""
    if not _path_specs(state):
        return state
    new = copy.deepcopy(state)
    for spec in _path_specs(new):
        spec["adapter"] = change(spec["adapter"])
    return new


def relocate(state: dict[str, Any], to_dir: str | Path, from_dir: str | Path | None = None) -> dict[str, Any]:
    """A copy of ``state`` whose adapter paths are relative to ``to_dir`` (read relative to ``from_dir``,
    or to the working directory, when they are relative now)."""

    def change(adapter: str) -> str:
        return relative_adapter(resolve_adapter(adapter, from_dir) if from_dir is not None else adapter, to_dir)

    return _map_adapters(state, change)


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
    return _map_adapters(read_state(path), lambda adapter: resolve_adapter(adapter, path.parent))


def bind_saved(program: Program, state: dict[str, Any], lm: LM) -> Program:
    """Bind ``program`` as ``state`` was bound, on ``lm``'s weights: each predictor gets its saved adapter
    (``lms``), or all get the shared one (``lm``), or ``lm`` itself when none was saved."""
    per_predictor = state.get("lms") or {}
    shared = (state.get("lm") or {}).get("adapter")
    lms: dict[str | None, LM] = {None: lm}  # one LM per adapter: predictors on the same adapter share it
    for name, predictor in program.named_predictors():
        adapter = (per_predictor.get(name) or {}).get("adapter") if per_predictor else shared
        if adapter not in lms:
            lms[adapter] = lm.with_adapter(adapter)
        predictor.bind(lms[adapter])
    return program
