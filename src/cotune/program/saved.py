"""A saved program on disk, in one place: its JSON state, its LM binding, and adapter folders recorded relative
to the file, so a program file and the run folder around it stay valid when they move.

`Program.save` and `Program.load` use it, and so do run directories (the runner, `cotune eval`): `save_program`
writes atomically with relative adapter paths, `read_program_state` reads a file back checked field by field
(`cotune.program.saved_check`) with its adapter paths made usable from the working directory, `bind_saved`
binds a program as it was bound (one adapter for all predictors, or one per predictor), and `copy_program`
copies a file to another folder with its adapter paths rewritten. Functions take any object with
``dump_state()``/``named_predictors()``: this module is below `cotune.program.program`, which uses it.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> state = {"predictors": {}, "lm": {"backend": "hf", "model": "m", "adapter": str(folder / "w" / "adapter")}}
    >>> relocate(state, folder / "w")["lm"]["adapter"]
    'adapter'
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotune.errors import ConfigError
from cotune.files import write_json_atomic
from cotune.lm.registry import relative_adapter, resolve_adapter, spec_adapter_is_folder
from cotune.program.saved_check import check_state

if TYPE_CHECKING:
    from cotune.lm.base import LM


def read_state(path: str | Path) -> dict[str, Any]:
    """The state saved at ``path``, checked field by field (see `cotune.program.saved_check`).

    Raises:
        ConfigError: no file, not UTF-8, not JSON, or a bad field (named), or a newer format_version.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no saved program at {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); cotune writes program "
            "files in UTF-8: re-save it as UTF-8"
        ) from None
    try:
        state = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not a saved program (invalid JSON: {e.msg}, line {e.lineno})") from None
    if not isinstance(state, dict) or "predictors" not in state:
        raise ConfigError(f"{path} is not a saved cotune program (no 'predictors' key)")
    return check_state(state, path)


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


def save_program(program: Any, path: str | Path, **metadata: Any) -> Path:
    """``program``'s state and ``metadata`` at ``path``, atomically, its adapter paths relative to the file's folder
    (`Program.save`)."""
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


def bind_saved(program: Any, state: dict[str, Any], lm: LM) -> Any:
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
