"""Run directories: config, event log, and one folder per finished step. Every write is atomic, and a
step counts as finished only once its ``node.json`` exists, so a run killed at any moment (even
``kill -9``) resumes without losing or redoing a finished step.

    runs/2026-11-21-iris-smollm2-135m/
      config.json          the ExperimentConfig
      events.jsonl         what happened, one JSON event per line
      results.json         every finished node, for reports
      data.json            a fingerprint of the task's data, checked on resume (experiment/data_check.py)
      seed-0/p/            program.json, eval-dev.json, eval-test.json, node.json
      seed-0/p-w/          ... plus adapter/ and traces.jsonl
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cotune.errors import ConfigError
from cotune.events import Event
from cotune.experiment.run_lock import RunLock
from cotune.files import write_json_atomic

write_json = write_json_atomic  # a reader (or a resumed run) sees the old file or the new one, never half


def read_json(path: Path, fix: str = "delete it to have the step redone, or restore it from a backup") -> Any:
    """Read a run file; a corrupt or unreadable one is a `ConfigError` that names it and says ``fix``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is corrupt ({type(e).__name__}: {e}); {fix}") from None


class RunDir:
    """One experiment's folder."""

    CONFIG, EVENTS, RESULTS, NODE = "config.json", "events.jsonl", "results.json", "node.json"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._log_lock = threading.Lock()
        self._lock = RunLock(self.path)

    @classmethod
    def create(cls, parent: str | Path, name: str, config: dict[str, Any]) -> RunDir:
        """A new run directory ``parent/name`` (``-2``, ``-3``… appended if taken).

        The name is claimed by ``mkdir`` itself, so two processes starting at once get two folders.
        """
        parent = Path(parent)
        parent.mkdir(parents=True, exist_ok=True)
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
        path, n = parent / base, 1
        while True:
            try:
                path.mkdir()
                break
            except FileExistsError:
                n += 1
                path = parent / f"{base}-{n}"
        run = cls(path)
        write_json(path / cls.CONFIG, config)
        return run

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunDir]:
        """Hold the run directory for this process (re-entrant); another process gets `RunInUseError`."""
        with self._lock:
            yield self

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not (run.path / cls.CONFIG).is_file():
            raise ConfigError(
                f"{run.path} is not a run directory (no {cls.CONFIG}); pass the folder `cotune run` created"
            )
        return run

    @staticmethod
    def default_name(task: str, model: str) -> str:
        return f"{dt.date.today().isoformat()}-{task}-{Path(model).name}"

    def config(self) -> dict[str, Any]:
        config = read_json(
            self.path / self.CONFIG, "it holds the run's settings: restore it from a backup, or start a new run"
        )
        if not isinstance(config, dict):
            raise ConfigError(f"{self.path / self.CONFIG} is corrupt (not a JSON object); restore it from a backup")
        return config

    # -- events --------------------------------------------------------------------------------------
    def log(self, event: Event) -> None:
        line = json.dumps({"time": event.time, "event": event.name, **event.fields}, default=str)
        with self._log_lock, (self.path / self.EVENTS).open("a") as f:
            f.write(line + "\n")

    def events(self) -> list[dict[str, Any]]:
        path = self.path / self.EVENTS
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
        return out

    # -- nodes ---------------------------------------------------------------------------------------
    def node_dir(self, seed: int, strategy: str) -> Path:
        return self.path / f"seed-{seed}" / strategy

    def finished(self, seed: int, strategy: str) -> dict[str, Any] | None:
        path = self.node_dir(seed, strategy) / self.NODE
        return read_json(path) if path.is_file() else None

    def forget(self, seed: int, strategy: str) -> None:
        """Mark a step unfinished (its node.json moved aside), so a resumed run redoes it."""
        path = self.node_dir(seed, strategy) / self.NODE
        if path.is_file():
            path.replace(path.with_name(f"{self.NODE}.corrupt"))

    def finish(self, seed: int, strategy: str, record: dict[str, Any]) -> None:
        write_json(self.node_dir(seed, strategy) / self.NODE, record)

    def nodes(self) -> list[dict[str, Any]]:
        """Finished nodes ordered by seed, then depth (zero-shot, p, w, p-w, ...)."""
        nodes = [read_json(p) for p in self.path.glob(f"seed-*/*/{self.NODE}")]
        return sorted(nodes, key=lambda n: (n["seed"], len(n["steps"]), n["strategy"]))

    def write_results(self, results: dict[str, Any]) -> Path:
        return write_json(self.path / self.RESULTS, results)

    def results(self) -> dict[str, Any]:
        path = self.path / self.RESULTS
        if not path.is_file():
            raise ConfigError(
                f"{self.path} has no {self.RESULTS} yet; run `cotune run --resume {self.path}` to finish it"
            )
        return read_json(path)
