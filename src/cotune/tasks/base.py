"""`Task`: the data splits, the program and the metric of one benchmark, plus helpers task modules share.

A task module (``iris.py``, ``gsm8k.py``, ...) exposes two things:

- ``INFO``: a `TaskInfo` with the facts known without reading any data (for ``cotune tasks``);
- ``load(*, data_dir=None, seed=0, **sizes) -> Task``.

A family of tasks (e.g. BIG-Bench Hard) sets ``TaskInfo.family = True`` and its ``load`` also takes
``subtask=``; users name one member as ``"family:subtask"``. See `cotune.tasks.registry`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotune.data.dataset import Dataset
from cotune.errors import ConfigError, DataError, UnknownChoiceError
from cotune.evaluate.metrics import Metric
from cotune.program.program import Program

SPLITS = ("train", "dev", "test")
DATA_DIR_ENV = "COTUNE_DATA_DIR"
HF_PREFIX = "hf:"


@dataclass(frozen=True)
class TaskInfo:
    """What a task is, known without loading its data.

    Attributes:
        name: the registry name (``cotune run --task NAME``).
        description: one line for listings.
        inputs / outputs: the example fields the program reads / the metric scores.
        sizes: default split sizes (``train``, ``dev``, ``test``).
        metric: the key of the main metric in `Task.metrics`; ``metrics`` lists all their keys.
        needs_data_dir: whether files must be given (``--data-dir`` or ``$COTUNE_DATA_DIR/<name>``).
        source: where the data comes from (files to provide, or the package holding it), for humans.
        hf_name: a Hugging Face hub name usable as ``data_dir="hf:<name>"`` by users who are online.
        family: a family of tasks addressed as ``"name:subtask"``.
        run_defaults: experiment settings measured for this task (`cotune run`, `ExperimentConfig.from_dict`),
            nested like the config; any field a config file or option sets wins over them.
    """

    name: str
    description: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    sizes: Mapping[str, int]
    metric: str
    metrics: tuple[str, ...] = ()
    needs_data_dir: bool = False
    source: str = ""
    hf_name: str | None = None
    family: bool = False
    run_defaults: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Fields plus two display strings for listings: ``splits`` ("50 train / 50 dev / 50 test") and
        ``data`` (what the user must provide)."""
        if not self.needs_data_dir:
            data = f"built in ({self.source})"
        else:
            data = f"--data-dir: {self.source}" + (f"; or {HF_PREFIX}{self.hf_name}" if self.hf_name else "")
        return {
            "name": self.name,
            "splits": " / ".join(f"{self.sizes[s]} {s}" for s in SPLITS if s in self.sizes),
            "data": data,
            "description": self.description,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "sizes": dict(self.sizes),
            "metric": self.metric,
            "metrics": list(self.metrics or (self.metric,)),
            "needs_data_dir": self.needs_data_dir,
            "source": self.source,
            "hf_name": self.hf_name,
            "family": self.family,
            "run_defaults": dict(self.run_defaults),
        }


@dataclass
class Task:
    """A benchmark: train/dev/test datasets (inputs marked), a program factory and metrics.

    Attributes:
        metric: the main metric ``(example, prediction) -> float``; a prediction may lack fields.
        metrics: every metric by short name (the main one included), e.g. ``{"em", "f1", "recall"}``.
        make_program: builds a fresh, unbound program; call `program`.
        about: the static `TaskInfo` of the registered task this was loaded from.
        retriever: the task's search tool, if it has one (HotPotQA), shared by every program copy.

    Example:
        >>> from cotune.data import Dataset, Example
        >>> from cotune.program import Predict, Program
        >>> class Echo(Program):
        ...     def __init__(self):
        ...         self.answer = Predict("question -> answer")
        ...     def forward(self, question):
        ...         return self.answer(question=question)
        >>> ds = Dataset([Example(question="q", answer="a").with_inputs("question")])
        >>> em = lambda ex, pred: float(pred.get("answer") == ex["answer"])
        >>> task = Task("echo", "a toy task", ds, ds, ds, em, Echo)
        >>> len(task.split("dev")), [n for n, _ in task.program().named_predictors()]
        (1, ['answer'])
    """

    name: str
    description: str
    train: Dataset
    dev: Dataset
    test: Dataset
    metric: Metric
    make_program: Callable[[], Program]
    metrics: dict[str, Metric] = field(default_factory=dict)
    about: TaskInfo | None = None
    data_dir: Path | str | None = None
    seed: int = 0
    retriever: Any = None

    def program(self) -> Program:
        """A fresh program for this task, not bound to any LM."""
        return self.make_program()

    def split(self, name: str) -> Dataset:
        """The ``train``, ``dev`` or ``test`` dataset.

        Raises:
            UnknownChoiceError: another name.
        """
        if name not in SPLITS:
            raise UnknownChoiceError("split", name, SPLITS)
        return getattr(self, name)

    def info(self) -> dict[str, Any]:
        """A row for ``cotune tasks`` / reports: the static facts plus the actual split sizes."""
        base = self.about.to_dict() if self.about is not None else {"name": self.name, "description": self.description}
        first = next((ex for ex in self.train or self.test), None)
        sizes = {s: len(self.split(s)) for s in SPLITS}
        return base | {
            "name": self.name,
            "description": self.description,
            "sizes": sizes,
            "splits": " / ".join(f"{n} {s}" for s, n in sizes.items()),
            "metrics": list(self.metrics) or [getattr(self.metric, "__name__", "metric")],
            "data_dir": None if self.data_dir is None else str(self.data_dir),
            "seed": self.seed,
            "fields": sorted(first) if first is not None else [],
        }

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(self.split(s))}" for s in SPLITS)
        return f"Task({self.name!r}, {sizes})"


# -- helpers shared by task modules -------------------------------------------------------------------


def resolve_sizes(task: str, defaults: Mapping[str, int], given: Mapping[str, int | None]) -> dict[str, int]:
    """Merge user split sizes over the defaults; ``None`` keeps a default.

    Raises:
        UnknownChoiceError: a size for a split that does not exist (e.g. ``val=``).
        ConfigError: a negative or non-integer size.
    """
    sizes = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            raise UnknownChoiceError(f"split size for task {task!r}", key, defaults)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"split size {key}={value!r} for task {task!r} must be an integer >= 0")
        sizes[key] = value
    return sizes


def check_fits(task: str, sizes: Mapping[str, int], available: int, where: str) -> None:
    """Raise `ConfigError` when the requested splits need more examples than ``where`` holds."""
    wanted = sum(sizes.values())
    if wanted > available:
        parts = ", ".join(f"{k}={v}" for k, v in sizes.items())
        raise ConfigError(
            f"task {task!r}: split sizes {parts} need {wanted} examples but {where} has {available}; pass smaller sizes"
        )


def resolve_data_dir(
    task: str,
    data_dir: str | os.PathLike[str] | None,
    marker: str,
    *,
    hf_name: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Path | str:
    """Find a task's data folder: ``data_dir`` → ``$COTUNE_DATA_DIR/<task>`` → error.

    ``data_dir`` may be the task's own folder or its parent (``../shared/data``): a folder holding
    ``marker`` (a file the task needs) is used as is, else its ``<task>`` subfolder if there is one. A string ``"hf:<hub name>"`` is returned as is, for tasks
    that can read the Hugging Face hub.

    Raises:
        ConfigError: no ``data_dir`` and no ``$COTUNE_DATA_DIR``; an ``hf:`` name for a task without one.
        DataError: the folder does not exist.
    """
    env = os.environ if env is None else env
    # os.fspath: the CLI hands over a Path, and Path("hf:openai/gsm8k") keeps the prefix.
    if data_dir is not None and os.fspath(data_dir).startswith(HF_PREFIX):
        data_dir = os.fspath(data_dir)
        if hf_name is None:
            raise ConfigError(f"task {task!r} reads local files only; pass --data-dir PATH, not {data_dir!r}")
        return data_dir
    if data_dir is None:
        root = env.get(DATA_DIR_ENV)
        if not root:
            online = f", or (online) --data-dir {HF_PREFIX}{hf_name}" if hf_name else " (local files only)"
            raise ConfigError(
                f"task {task!r} needs its data files ({marker}, ...): pass --data-dir PATH (data_dir= in Python) "
                f"or set {DATA_DIR_ENV} to a folder holding {task}/{online}"
            )
        path = Path(root) / task
    else:
        path = Path(data_dir)
        if not (path / marker).exists() and (path / task).is_dir():
            path = path / task
    if not path.is_dir():
        raise DataError(f"data folder for task {task!r} does not exist", path=path)
    return path


def field_of(prediction: Mapping[str, Any] | None, name: str) -> str:
    """``prediction[name]`` as text, or "" when the prediction lacks it (or is not a mapping)."""
    if not isinstance(prediction, Mapping) or prediction.get(name) is None:
        return ""
    return str(prediction[name])
