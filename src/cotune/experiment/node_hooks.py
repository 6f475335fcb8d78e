"""A seed's steps as run-directory nodes (`NodeHooks`, the `StepHooks` the runner gives
`BetterTogether.run_tree`): a finished node is read back, not redone; a new node gets its folder, its optimizer,
a saved program and dev/test evaluations before it is marked finished; a training or infrastructure failure ends
that node's branch only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cotune.errors import ConfigError, InfrastructureError, TrainingError, is_infrastructure_error
from cotune.evaluate.evaluate import evaluate
from cotune.events import EventSink, emit
from cotune.experiment.config import ExperimentConfig
from cotune.experiment.node_record import NodeRecord
from cotune.experiment.rundir import RunDir
from cotune.optimize.base import Optimizer
from cotune.optimize.better_together import StepHooks, StepResult
from cotune.optimize.strategy import StepKind, Steps, strategy_name
from cotune.program.program import Program, program_for_state
from cotune.program.saved import bind_saved, read_program_state, save_program

# A prompt step that kept its start saves the candidate it hands to a following weight step here
HANDOFF_FILE = "handoff-program.json"
# (the step's kind, seed, node directory) -> a built optimizer
OptimizerFactory = Callable[[StepKind, int, Path], Optimizer]


def finished_record(run: RunDir, seed: int, name: str, events: EventSink) -> NodeRecord | None:
    """The node's record, or None to (re)do it; a corrupt record is set aside and the step redone."""
    try:
        data = run.finished(seed, name)
        return None if data is None else NodeRecord.from_json(data)
    except ConfigError as e:
        run.forget(seed, name)
        emit(events, "node.corrupt", seed=seed, strategy=name, error=str(e))
        return None


def split_sizes(task: Any) -> dict[str, int]:
    """The sizes of the task's splits, saved with programs so `cotune eval` can rebuild the same split."""
    return {name: len(getattr(task, name)) for name in ("train", "dev", "test") if hasattr(task, name)}


def failure_kind(error: BaseException) -> str | None:
    """The kind of a failure that ends one node and not the run, "training" or "infrastructure"; else None."""
    if isinstance(error, TrainingError):
        return "training"
    if isinstance(error, InfrastructureError) or is_infrastructure_error(error):
        return "infrastructure"
    return None


class NodeHooks(StepHooks):
    """One seed's steps as run-directory nodes: finished nodes are reloaded, not redone; each new node gets
    its folder, its optimizer from the factory, a saved program and dev/test evaluations; a training or
    infrastructure failure ends that node's branch and the run goes on (a resumed run tries it again)."""

    def __init__(
        self,
        config: ExperimentConfig,
        run: RunDir,
        task: Any,
        lm: Any,
        seed: int,
        factory: OptimizerFactory | None,
        failures: list[dict[str, Any]],
        bar: Any,
        events: EventSink,
        only: Steps | None = None,
    ) -> None:
        self.config, self.run, self.task, self.lm, self.seed = config, run, task, lm, seed
        self.factory, self.failures, self.bar, self.events = factory, failures, bar, events
        self.only = only
        self.records: dict[Steps, NodeRecord] = {}

    def restore(self, steps: Steps) -> Program | None:
        name = strategy_name(steps)
        if self.only is not None and steps != self.only:  # an ancestor of the one node to run: done already
            data = self.run.finished(self.seed, name)
            if data is None:
                raise ConfigError(f"seed {self.seed} {name} is not finished; {strategy_name(self.only)} builds on it")
            return self._load(steps, NodeRecord.from_json(data))
        record = finished_record(self.run, self.seed, name, self.events)
        if record is None:
            return None
        program = self._load(steps, record)
        emit(self.events, "node.skipped", seed=self.seed, strategy=name, reason="finished earlier")
        self.bar.advance(seed=self.seed, strategy=name, test=record.test["score"])
        return program

    def _load(self, steps: Steps, record: NodeRecord) -> Program:
        """A finished node's saved program, bound to this process's LM (and its adapter)."""
        self.records[steps] = record
        return self._read(self.run.node_dir(self.seed, strategy_name(steps)) / "program.json")

    def _read(self, path: Path) -> Program:
        state = read_program_state(path)
        return bind_saved(program_for_state(self.task.program(), state).load_state(state), state, self.lm)

    def restore_handoff(self, steps: Steps) -> Program | None:
        path = self.run.node_dir(self.seed, strategy_name(steps)) / HANDOFF_FILE
        return self._read(path) if path.is_file() else None

    def start(self, steps: Steps) -> None:
        self.run.node_dir(self.seed, strategy_name(steps)).mkdir(parents=True, exist_ok=True)
        emit(self.events, "node.start", seed=self.seed, strategy=strategy_name(steps))

    def optimizer(self, kind: StepKind, steps: Steps) -> Optimizer:
        return self.factory(kind, self.seed, self.run.node_dir(self.seed, strategy_name(steps)))

    def finished(self, step: StepResult) -> None:
        cfg, run, seed, name, program = self.config, self.run, self.seed, step.strategy, step.program
        node = run.node_dir(seed, name)
        train = step.info.get("train_result_")
        train_seconds = float(train.get("seconds", 0.0)) if isinstance(train, dict) else 0.0
        for saved, filename in ((program, "program.json"), (step.handoff, HANDOFF_FILE)):
            if saved is not None:
                save_program(
                    saved,
                    node / filename,
                    task=cfg.task,
                    strategy=name,
                    seed=seed,
                    split_seed=cfg.split_seed,
                    split_sizes=split_sizes(self.task),
                )
        evals = {}
        for split in ("dev", "test"):
            result = evaluate(
                program,
                self.task.split(split),
                self.task.metric,
                num_threads=cfg.threads,
                events=self.events,
                description=f"seed {seed} {name} {split}",
            )
            result.save(node / f"eval-{split}.json")
            evals[split] = result.summary()
        lm = program.predictors()[0].lm
        prev = self.records.get(step.steps[:-1]) if step.steps else None
        record = NodeRecord(
            seed=seed,
            strategy=name,
            steps=step.steps,
            dev=evals["dev"],
            test=evals["test"],
            step_seconds=step.seconds,
            step_train_seconds=train_seconds,
            cumulative_seconds=(prev.cumulative_seconds if prev else 0.0) + step.seconds,
            cumulative_train_seconds=(prev.cumulative_train_seconds if prev else 0.0) + train_seconds,
            adapter=lm.adapter_ref(run.path),
            program=str((node / "program.json").relative_to(run.path)),
            handoff=HANDOFF_FILE if step.handoff is not None else None,
            info=step.info,
        )
        run.finish(seed, name, record.to_json())
        # logged only once node.json is on disk: a node.done in the log is a finished node
        emit(self.events, "node.done", seed=seed, strategy=name, dev=record.dev["score"], test=record.test["score"])
        self.records[step.steps] = record
        self.bar.advance(seed=seed, strategy=name, test=record.test["score"])

    def failed(self, steps: Steps, error: Exception | None) -> bool:
        name = strategy_name(steps)
        if error is None:  # its parent failed: nothing to build on
            self.failures.append(
                {
                    "seed": self.seed,
                    "strategy": name,
                    "kind": "skipped",
                    "error": f"skipped: {strategy_name(steps[:-1])} failed",
                }
            )
            self.bar.advance(seed=self.seed, strategy=name, failed=True)
            return True
        # No trace passed the metric (training), or the LM or machine failed (infrastructure: never a
        # score): this strategy has no result for this seed, the others go on; a resumed run tries again.
        kind = failure_kind(error)
        if kind is None:
            return False
        self.failures.append({"seed": self.seed, "strategy": name, "kind": kind, "error": str(error)})
        emit(self.events, "node.failed", seed=self.seed, strategy=name, kind=kind, error=str(error))
        self.bar.advance(seed=self.seed, strategy=name, failed=True)
        return True
