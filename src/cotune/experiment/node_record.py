"""A finished node's record (``node.json`` in its folder, and each of ``results.json``'s ``nodes``), typed.

The JSON keeps the names run directories have always had, so every run directory resumes and reads as
before; in code the two times it holds are named apart: ``step_seconds`` is this node's own step, and
``cumulative_seconds`` the whole path from zero-shot to it (what a strategy costs, as the table shows it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cotune.errors import ConfigError
from cotune.optimize.strategy import StepKind, Steps, last_kind, parse_strategy, strategy_name

# JSON key -> attribute, where they differ: the JSON names are kept for the run directories written so far
_RENAMED = {
    "optimize_seconds": "step_seconds",
    "train_seconds": "step_train_seconds",
    "cumulative_optimize_seconds": "cumulative_seconds",
    "cumulative_train_seconds": "cumulative_train_seconds",
}
_REQUIRED = ("seed", "strategy", "dev", "test")


@dataclass
class NodeRecord:
    """One finished node of one seed.

    Attributes:
        seed, strategy, steps: which node (``strategy`` is ``strategy_name(steps)``).
        dev, test: the evaluation summaries (`EvaluationResult.summary`) of its program.
        step_seconds: this node's step alone, optimization with its training inside.
        step_train_seconds: the training inside this node's step.
        cumulative_seconds, cumulative_train_seconds: the same summed along the path from zero-shot.
        adapter: its LoRA adapter (relative to the run for local backends), if any.
        program: its saved program, relative to the run directory.
        handoff: the file of a prompt step's hand-off to a following weight step, if it made one.
        info: what its optimizer learned (JSON-ready ``name_`` attributes).
        extra: keys this version does not know, written back as they were read.
    """

    seed: int
    strategy: str
    steps: Steps
    dev: dict[str, Any]
    test: dict[str, Any]
    step_seconds: float = 0.0
    step_train_seconds: float = 0.0
    cumulative_seconds: float = 0.0
    cumulative_train_seconds: float = 0.0
    adapter: str | None = None
    program: str = ""
    handoff: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> StepKind | None:
        """Its own step's kind; None for zero-shot."""
        return last_kind(self.steps)

    @property
    def parent(self) -> str | None:
        """The strategy it was optimized from; None for zero-shot."""
        return strategy_name(self.steps[:-1]) if self.steps else None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeRecord:
        """A record as ``node.json`` holds it (``steps`` may be left to the strategy's name); a `ConfigError`
        names what is missing or malformed."""
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ConfigError(f"node record of {data.get('strategy', '?')!r} lacks {', '.join(missing)}")
        try:
            known = {"steps", "kind", "parent", *_REQUIRED, *_RENAMED, "adapter", "program", "handoff", "info"}
            return cls(
                seed=int(data["seed"]),
                strategy=str(data["strategy"]),
                steps=parse_strategy(list(data["steps"]) if "steps" in data else str(data["strategy"])),
                dev=dict(data["dev"]),
                test=dict(data["test"]),
                **{attr: float(data.get(key) or 0.0) for key, attr in _RENAMED.items()},
                adapter=data.get("adapter"),
                program=str(data.get("program", "")),
                handoff=data.get("handoff"),
                info=dict(data.get("info") or {}),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (TypeError, ValueError) as e:
            raise ConfigError(f"node record of {data.get('strategy')!r} is malformed: {e}") from None

    def to_json(self) -> dict[str, Any]:
        """The record as ``node.json`` holds it (the names it has always had)."""
        kind = self.kind
        return {
            "seed": self.seed,
            "strategy": self.strategy,
            "steps": [s.value for s in self.steps],
            "kind": kind.value if kind else "",
            "parent": self.parent,
            "dev": self.dev,
            "test": self.test,
            **{key: getattr(self, attr) for key, attr in _RENAMED.items()},
            "adapter": self.adapter,
            "program": self.program,
            "handoff": self.handoff,
            "info": self.info,
            **self.extra,
        }


def node_records(nodes: Iterable[NodeRecord | Mapping[str, Any]]) -> list[NodeRecord]:
    """``results.json``'s (or `RunDir.nodes`') node dicts as records."""
    return [n if isinstance(n, NodeRecord) else NodeRecord.from_json(n) for n in nodes]
