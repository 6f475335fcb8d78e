"""The data a run was started on, recorded so that a resume on other data is refused.

A run's finished steps were scored on its train/dev/test examples. If a data file changes between the
start and a resume (edited, regenerated, a different ``$COTUNE_DATA_DIR``), the resumed steps would be
scored on other examples and the table would mix two datasets without a word. ``data.json`` in the run
directory holds a SHA-256 of each split's examples (and of the retrieval corpus, where the task has one),
as the runner loaded them; a resume compares them first.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cotune.errors import ConfigError
from cotune.experiment.rundir import RunDir, read_json, write_json

DATA_FILE = "data.json"
SPLITS = ("train", "dev", "test")


def fingerprint(task: Any) -> dict[str, dict[str, Any]]:
    """``{part: {"examples": n, "sha256": hex}}`` for each split, plus ``corpus`` for a task whose
    retriever holds passages."""
    parts: dict[str, list[Any]] = {s: [_plain(ex) for ex in getattr(task, s)] for s in SPLITS if hasattr(task, s)}
    retriever = getattr(task, "retriever", None)
    if isinstance(getattr(retriever, "texts", None), list):
        parts["corpus"] = [list(p) for p in zip(getattr(retriever, "titles", []), retriever.texts, strict=False)]
    return {name: {"examples": len(rows), "sha256": _sha256(rows)} for name, rows in parts.items()}


def check_data(run: RunDir, task: Any, task_name: str) -> None:
    """Record the task's data in a new run (or one from before this record); refuse a resume whose data
    differs from what the run started with.

    Raises:
        ConfigError: naming the parts that changed, their example counts and the ways on.
    """
    path = run.path / DATA_FILE
    now = fingerprint(task)
    if not path.is_file():
        write_json(path, {"task": task_name, "splits": now})
        return
    then = read_json(path, "delete it to accept the current data as the run's").get("splits", {})
    changed = [name for name in sorted(set(then) | set(now)) if then.get(name) != now.get(name)]
    if changed:
        detail = "; ".join(_change(name, then.get(name), now.get(name)) for name in changed)
        raise ConfigError(
            f"the data of task {task_name!r} changed since this run started: {detail}. Its finished steps were "
            f"scored on the old data, so resuming would mix two datasets: restore the data, or start a new run "
            f"(or delete {Path(path)} to accept the current data as the run's)"
        )


def _plain(example: Any) -> Any:
    return example.to_dict() if hasattr(example, "to_dict") else dict(example)


def _sha256(rows: list[Any]) -> str:
    blob = json.dumps(rows, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _change(name: str, then: dict[str, Any] | None, now: dict[str, Any] | None) -> str:
    """``test: 50 examples then, 50 now, other contents``."""
    n_then, n_now = ((p or {}).get("examples", 0) for p in (then, now))
    return f"{name}: {n_then} examples then, {n_now} now" + (", other contents" if n_then == n_now else "")
