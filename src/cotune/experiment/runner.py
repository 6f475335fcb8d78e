"""The experiment runner: strategies × seeds on one task and model, resumable, sharing common prefixes.

Strategies that share a prefix share its work: for one seed, Π is computed once for Π, Π→Θ and Π→Θ→Π,
and Θ once for Θ and Θ→Π. The steps are run by `cotune.optimize.better_together.BetterTogether.run_tree`
(one tree per seed); this module adds the run directory through `StepHooks`: every node (a strategy
prefix) is optimized from its parent, saved, and evaluated on dev and test before it is marked finished,
finished nodes are reloaded on resume, and a failed node ends its branch only. With ``config.ray`` each node
runs as a Ray task (`cotune.experiment.ray_grid`), which this module hands `run_node` — the same
`Runner.run_seed` for one node — and `build_task_and_lm`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from cotune.errors import ConfigError, InfrastructureError, TrainingError, is_infrastructure_error
from cotune.evaluate.compare import paired_gain
from cotune.evaluate.evaluate import evaluate
from cotune.events import Event, EventSink, Progress, emit
from cotune.experiment.config import ExperimentConfig
from cotune.experiment.data_check import check_data
from cotune.experiment.node_record import NodeRecord
from cotune.experiment.program_files import bind_saved, copy_program, read_program_state, save_program
from cotune.experiment.ray_grid import check_ray_inputs, run_on_ray
from cotune.experiment.results import summarize
from cotune.experiment.rundir import RunDir
from cotune.optimize.base import Optimizer
from cotune.optimize.better_together import BetterTogether, StepHooks, StepResult
from cotune.optimize.strategy import StepKind, Steps, StrategyTree, last_kind, parse_strategies, strategy_name
from cotune.program.program import Program, program_for_state

# A prompt step that kept its start saves the candidate it hands to a following weight step here
HANDOFF_FILE = "handoff-program.json"
# (the step's kind, seed, node directory) -> a built optimizer
OptimizerFactory = Callable[[StepKind, int, Path], Optimizer]


class Runner:
    """Runs an `ExperimentConfig` into a `RunDir`.

    Args:
        config: what to run.
        lm, task: inject a model or task (tests use FakeLM); by default loaded from the config.
        optimizer_factory: builds the Π/Θ optimizer for a node; by default from ``config.prompt``/``config.weights``.
        events: a sink for progress and step events (also logged to the run's events.jsonl).
    """

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        lm: Any = None,
        task: Any = None,
        optimizer_factory: OptimizerFactory | None = None,
        events: EventSink | None = None,
    ):
        self.config = config.validate()
        self.lm = lm
        self.task = task
        self.optimizer_factory = optimizer_factory
        self.user_events = events
        if self.config.ray:  # the nodes run as Ray tasks that build their own task and LM (ray_grid.py)
            check_ray_inputs(lm=lm, task=task)

    # -- entry points --------------------------------------------------------------------------------
    def start(self) -> RunDir:
        cfg = self.config
        run = RunDir.create(cfg.out_dir, cfg.name or RunDir.default_name(cfg.task, cfg.model), cfg.to_dict())
        self.run(run)
        return run

    @classmethod
    def resume(cls, path: str | Path, **kwargs: Any) -> tuple[Runner, RunDir]:
        run = RunDir.open(path)
        runner = cls(ExperimentConfig.from_dict(run.config()), **kwargs)
        runner.run(run)
        return runner, run

    def run(self, run: RunDir) -> dict[str, Any]:
        """Run every unfinished node into ``run``, holding its lock (a second process gets `RunInUseError`)."""
        with run.lock():
            return self._run(run)

    def _run(self, run: RunDir) -> dict[str, Any]:
        cfg = self.config

        def events(e: Event) -> None:
            if e.name != "progress.advance":
                run.log(e)
            if self.user_events is not None:
                self.user_events(e)

        task = self.task or task_from_config(cfg)
        if not cfg.ray:  # Ray workers load their own
            self.task = task
        check_data(run, task, cfg.task)  # a resume on other data than the run started with stops here
        strategies = parse_strategies(cfg.strategies)
        tree = StrategyTree(strategies)

        emit(events, "run.start", run_dir=str(run.path), task=cfg.task, model=cfg.model, nodes=len(tree) * len(cfg.seeds),
             node_kinds=[_kind(p) for p in tree] * len(cfg.seeds))  # fmt: skip
        failures: list[dict[str, Any]] = []
        with Progress(events, "experiment", total=len(tree) * len(cfg.seeds)) as bar:
            if cfg.ray:  # every node a Ray task, seeds and branches in parallel; the same run_seed inside

                def failed(seed: int, steps: Steps, error: Exception | None) -> None:
                    _NodeHooks(self, run, None, None, seed, None, failures, bar, events).failed(steps, error)

                run_on_ray(
                    cfg,
                    run,
                    tree,
                    failures,
                    bar,
                    events,
                    build=build_task_and_lm,
                    run_node=partial(run_node, self.optimizer_factory),
                    failed=failed,
                )
            else:
                for seed in cfg.seeds:
                    self.run_seed(run, seed, strategies, failures, bar, events)
        results = {
            "config": cfg.to_dict(),
            "run_dir": str(run.path),
            "strategies": [strategy_name(s) for s in strategies],
            "nodes": run.nodes(),
            "failures": failures,
        }
        results["table"] = summarize(results["nodes"], results["strategies"])
        results["best"] = self._save_best(run, results)
        run.write_results(results)
        emit(events, "run.done", run_dir=str(run.path))
        return results

    @staticmethod
    def _save_best(run: RunDir, results: dict[str, Any]) -> dict[str, Any] | None:
        """Copy the best program to ``best-program.json``, chosen on dev (choosing on test would overfit it)."""
        finals = [n for n in results["nodes"] if n["strategy"] in results["strategies"]] or results["nodes"]
        if not finals:  # every step failed: no program to recommend
            return None
        best = max(finals, key=lambda n: (n["dev"]["score"], -len(n["steps"])))
        # As random search and BetterTogether decide: the best node replaces its seed's zero-shot program
        # only when it beats it on dev by more than one standard error of the paired differences.
        start = next((n for n in results["nodes"] if n["seed"] == best["seed"] and not n["steps"]), None)
        selection = None
        if start is not None and best is not start:
            comparison = paired_gain(_dev_scores(run, best), _dev_scores(run, start))
            selection = comparison.to_dict() | {"best_by_dev": best["strategy"]}
            best = best if comparison.significant else start
        path = copy_program(run.path / best["program"], run.path / "best-program.json")
        return {
            "strategy": best["strategy"],
            "seed": best["seed"],
            "dev": best["dev"]["score"],
            "test": best["test"]["score"],
            "program": path.name,
            "selection": selection,
        }

    @staticmethod
    def _finished(run: RunDir, seed: int, name: str, events: EventSink) -> NodeRecord | None:
        """The node's record, or None to (re)do it; a corrupt record is set aside and the step redone."""
        try:
            data = run.finished(seed, name)
            return None if data is None else NodeRecord.from_json(data)
        except ConfigError as e:
            run.forget(seed, name)
            emit(events, "node.corrupt", seed=seed, strategy=name, error=str(e))
            return None

    def run_seed(self, run: RunDir, seed: int, strategies: list[Steps], failures: list[dict[str, Any]],
                 bar: Any, events: EventSink, only: Steps | None = None) -> dict[Steps, StepResult]:  # fmt: skip
        """One seed's strategy tree into ``run``; ``only``: just that node, its ancestors (finished by
        then) read back from ``run`` — how a Ray task runs one node. Returns `BetterTogether.run_tree`'s steps."""
        cfg = self.config
        self.task = task = self.task or task_from_config(cfg)
        self.lm = lm = self.lm or lm_from_config(cfg)
        base = task.program().bind(lm)
        if cfg.max_tokens:
            for p in base.predictors():
                p.config["max_tokens"] = cfg.max_tokens
        factory = self.optimizer_factory or default_optimizer_factory(cfg, task.metric)
        # ct.BetterTogether runs the steps; this runner adds the run directory around them.
        driver = BetterTogether(task.metric, inner_val_ratio=cfg.inner_val_ratio, num_threads=cfg.threads)
        hooks = _NodeHooks(self, run, task, lm, seed, factory, failures, bar, events, only=only)
        return driver.run_tree(base, strategies if only is None else [only], trainset=task.train, events=events,
                               hooks=hooks)  # fmt: skip


def task_from_config(cfg: ExperimentConfig) -> Any:
    """The config's task, split as it says."""
    from cotune.tasks import load_task

    sizes = {k: v for k, v in (("train", cfg.train_size), ("dev", cfg.dev_size), ("test", cfg.test_size)) if v}
    return load_task(cfg.task, data_dir=cfg.data_dir, seed=cfg.split_seed, **sizes)


def lm_from_config(cfg: ExperimentConfig) -> Any:
    """The config's model, on its request cache."""
    from cotune.lm.registry import load

    return load(cfg.model, cache=cfg.cache, dtype=cfg.dtype)


def build_task_and_lm(cfg: ExperimentConfig) -> tuple[Any, Any]:
    """What a Ray worker builds from the config before it runs nodes (`cotune.experiment.ray_grid`)."""
    return task_from_config(cfg), lm_from_config(cfg)


def run_node(
    factory: OptimizerFactory | None,
    cfg: ExperimentConfig,
    task: Any,
    lm: Any,
    run: RunDir,
    seed: int,
    steps: Steps,
    failures: list[dict[str, Any]],
    bar: Any,
    events: EventSink,
) -> bool:
    """One node of one seed, its ancestors finished in ``run``, as `Runner.run_seed` runs it (how a Ray
    worker runs its node); True if it finished."""
    runner = Runner(cfg, lm=lm, task=task, optimizer_factory=factory)
    return steps in runner.run_seed(run, seed, [steps], failures, bar, events, only=steps)


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


def default_optimizer_factory(cfg: ExperimentConfig, metric: Any) -> OptimizerFactory:
    """The config's Π and Θ optimizers from the registry, seeded per run seed; Θ writes its adapter in the node."""
    from cotune.optimize.registry import build_optimizer

    def factory(kind: StepKind | str, seed: int, node: Path) -> Optimizer:
        kind = StepKind.parse(kind)
        step = {StepKind.PROMPT: cfg.prompt, StepKind.WEIGHTS: cfg.weights}[kind]
        params = step.optimizer_params() | {"num_threads": cfg.threads, "seed": seed}
        if kind is StepKind.WEIGHTS:
            params |= {"lora": {"seed": seed, **params.get("lora", {})}, "output_dir": str(node)}
        return build_optimizer(step.optimizer, metric, **params)

    return factory


class _NodeHooks(StepHooks):
    """One seed's steps as run-directory nodes: finished nodes are reloaded, not redone; each new node gets
    its folder, its optimizer from the factory, a saved program and dev/test evaluations; a training or
    infrastructure failure ends that node's branch and the run goes on (a resumed run tries it again)."""

    def __init__(self, runner: Runner, run: RunDir, task: Any, lm: Any, seed: int, factory: OptimizerFactory | None,
                 failures: list[dict[str, Any]], bar: Any, events: EventSink,
                 only: Steps | None = None) -> None:  # fmt: skip
        self.runner, self.run, self.task, self.lm, self.seed = runner, run, task, lm, seed
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
        record = self.runner._finished(self.run, self.seed, name, self.events)
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
        cfg, run, seed, name, program = self.runner.config, self.run, self.seed, step.strategy, step.program
        node = run.node_dir(seed, name)
        train = step.info.get("train_result_")
        train_seconds = float(train.get("seconds", 0.0)) if isinstance(train, dict) else 0.0
        for saved, filename in ((program, "program.json"), (step.handoff, HANDOFF_FILE)):
            if saved is not None:
                save_program(saved, node / filename, task=cfg.task, strategy=name, seed=seed,
                             split_seed=cfg.split_seed, split_sizes=split_sizes(self.task))  # fmt: skip
        evals = {}
        for split in ("dev", "test"):
            result = evaluate(program, self.task.split(split), self.task.metric, num_threads=cfg.threads,
                              events=self.events, description=f"seed {seed} {name} {split}")  # fmt: skip
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
            self.failures.append({"seed": self.seed, "strategy": name, "kind": "skipped",
                                  "error": f"skipped: {strategy_name(steps[:-1])} failed"})  # fmt: skip
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


def _dev_scores(run: RunDir, node: dict[str, Any]) -> list[float]:
    """A finished node's per-example dev scores, in dev order (from its saved evaluation)."""
    data = json.loads((run.node_dir(node["seed"], node["strategy"]) / "eval-dev.json").read_text())
    return [row["score"] for row in sorted(data["rows"], key=lambda row: row["index"])]


def _kind(steps: Steps) -> str:
    """What a node costs like: its own step's letter, or "eval" for zero-shot (evaluations only)."""
    kind = last_kind(steps)
    return kind.value if kind else "eval"
