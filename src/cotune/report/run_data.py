"""Finished run directories as the advisor and the report read them: ``results.json`` plus a label."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotune.errors import ConfigError
from cotune.experiment.rundir import RunDir


@dataclass
class RunData:
    """One finished run directory's ``results.json`` and its display label (task, plus model or folder
    name when needed to tell runs apart)."""

    path: Path
    results: dict[str, Any]
    label: str = ""

    @property
    def config(self) -> dict[str, Any]:
        return self.results.get("config", {})

    @property
    def task(self) -> str:
        return str(self.config.get("task", "?"))

    @property
    def model(self) -> str:
        return Path(str(self.config.get("model", "?"))).name

    @property
    def nodes(self) -> list[dict[str, Any]]:
        return self.results.get("nodes", [])

    @property
    def strategies(self) -> list[str]:
        return self.results.get("strategies") or list(dict.fromkeys(n["strategy"] for n in self.nodes))


def load_runs(run_dirs: str | Path | RunDir | Iterable[str | Path | RunDir]) -> list[RunData]:
    """Read ``results.json`` of each run directory and label the runs so that every label is unique.

    Raises:
        ConfigError: no run directory given, or one is not a (finished) run directory.
    """
    if isinstance(run_dirs, str | Path | RunDir):
        run_dirs = [run_dirs]
    runs = []
    for d in run_dirs:
        run = d if isinstance(d, RunDir) else RunDir.open(d)
        runs.append(RunData(run.path, run.results()))
    if not runs:
        raise ConfigError("no run directory given; pass one or more folders written by `cotune run`")
    several_models = len({r.model for r in runs}) > 1
    for r in runs:
        r.label = f"{r.task} · {r.model}" if several_models else r.task
    labels = [r.label for r in runs]
    for r in runs:
        if labels.count(r.label) > 1:  # same task and model twice: tell them apart by folder
            r.label = f"{r.label} ({r.path.name})"
    return runs
