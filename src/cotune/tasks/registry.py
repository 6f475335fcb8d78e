"""The built-in tasks by name: `load_task`, `task_names`, `list_tasks`.

Each name maps to a module exposing ``INFO`` (a `TaskInfo`) and ``load(*, data_dir, seed, **sizes)``.
Modules are imported on use, so ``import cotune.tasks`` stays cheap. To add a task, write its module and
add one line to ``BUILTIN``. A family (``INFO.family = True``, e.g. BIG-Bench Hard) is loaded as
``"family:subtask"``; its ``load`` receives ``subtask=`` (``None`` for the bare family name) and rejects
unknown subtasks itself. Your own task needs no registration: build a `Task` directly.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

from cotune.errors import UnknownChoiceError
from cotune.tasks.base import Task, TaskInfo

# name -> module. A fixed table, not a mutable registry: there is no global state to reset.
BUILTIN: dict[str, str] = {
    "bbh": "cotune.tasks.bbh",
    "gsm8k": "cotune.tasks.gsm8k",
    "hotpotqa": "cotune.tasks.hotpotqa",
    "iris": "cotune.tasks.iris",
}

FAMILY_SEPARATOR = ":"


def task_names() -> list[str]:
    """The registered task names, sorted (a family appears once, under its own name)."""
    return sorted(BUILTIN)


def _module(name: str) -> ModuleType:
    base = name.split(FAMILY_SEPARATOR, 1)[0]
    if base not in BUILTIN:
        raise UnknownChoiceError("task", name, task_names())
    module = importlib.import_module(BUILTIN[base])
    if base != name and not module.INFO.family:
        raise UnknownChoiceError("task", name, task_names())
    return module


def task_info(name: str) -> TaskInfo:
    """The static facts of a task (no data is read).

    Raises:
        UnknownChoiceError: an unknown name.
    """
    return _module(name).INFO


def load_task(name: str, *, data_dir: str | os.PathLike[str] | None = None, seed: int = 0, **sizes: int | None) -> Task:
    """Load a built-in task with its splits, program and metrics.

    Args:
        name: a name from `task_names` (or ``"family:subtask"`` for a family).
        data_dir: the folder with the task's files, or its parent; default ``$COTUNE_DATA_DIR/<name>``.
            Iris needs none. ``"hf:<hub name>"`` reads the hub where the task supports it (online only).
        seed: shuffles the examples before the splits are cut.
        sizes: ``train=``, ``dev=``, ``test=`` to override the default split sizes (see `list_tasks`).

    Raises:
        UnknownChoiceError: an unknown task name or split-size name.
        ConfigError: no data folder for a task that needs one; sizes larger than the data.
        DataError: a missing or malformed data file (naming the file and line).

    Example:
        >>> task = load_task("iris", train=15, dev=35)
        >>> len(task.train), len(task.dev), len(task.test)
        (15, 35, 50)
    """
    module = _module(name)
    if module.INFO.family:
        subtask = name.split(FAMILY_SEPARATOR, 1)[1] if FAMILY_SEPARATOR in name else None
        return module.load(subtask=subtask, data_dir=data_dir, seed=seed, **sizes)
    return module.load(data_dir=data_dir, seed=seed, **sizes)


def list_tasks() -> list[dict[str, Any]]:
    """One row per registered task for ``cotune tasks``: name, description, default split sizes, fields,
    metrics, whether a data folder is needed and where the data comes from. Reads no data."""
    return [task_info(name).to_dict() for name in task_names()]
