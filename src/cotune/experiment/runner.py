"""The experiment runner: strategies × seeds on one task and model, resumable, sharing common prefixes.

Strategies that share a prefix share its work: for one seed, Π is computed once for Π, Π→Θ and Π→Θ→Π,
and Θ once for Θ and Θ→Π. The steps are run by `cotune.optimize.better_together.BetterTogether.run_tree`
(one tree per seed); the run directory comes in through their hooks (`cotune.experiment.node_hooks`): every
node (a strategy prefix) is optimized from its parent, saved, and evaluated on dev and test before it is
marked finished, finished nodes are reloaded on resume, and a failed node ends its branch only. With ``config.ray`` each node
runs as a Ray task (`cotune.experiment.ray_grid`), which this module hands `run_node` — the same
`Runner.run_seed` for one node — and `build_task_and_lm`.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from cotune.evaluate.compare import paired_gain
from cotune.events import Event, EventSink, Progress, emit
from cotune.experiment.config import ExperimentConfig
from cotune.experiment.data_check import check_data
from cotune.experiment.node_hooks import NodeHooks, OptimizerFactory
from cotune.experiment.ray_grid import check_ray_inputs, run_on_ray
from cotune.experiment.results import summarize
from cotune.experiment.rundir import RunDir
from cotune.optimize.base import Optimizer
from cotune.optimize.better_together import BetterTogether, StepResult
from cotune.optimize.strategy import StepKind, Steps, StrategyTree, last_kind, parse_strategies, strategy_name
from cotune.program.saved import copy_program


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
        runner = cls(ExperimentConfig.saved(run.config()), **kwargs)
        runner.run(run)
        return runner, run

    def run(self, run: RunDir) -> dict[str, Any]:
        """Run every unfinished node into ``run``, holding its lock (a second process gets `RunInUseError`)."""
        with run.lock():
            return self._run(run)

    def check(self) -> Any:
        """The config's task, loaded, and each step's optimizer checked against its program
        (`Optimizer.check_program`): a setting the program cannot take fails before the model loads (call this
        first) or any node runs, not after the nodes before that step. Returns the task."""
        cfg = self.config
        task = self.task or task_from_config(cfg)
        if not cfg.ray:  # Ray workers load their own
            self.task = task
        factory = self.optimizer_factory or default_optimizer_factory(cfg, task.metric)
        program = task.program()
        kinds = {kind for steps in parse_strategies(cfg.strategies) for kind in steps}
        for kind in sorted(kinds, key=lambda k: k.value):
            factory(kind, cfg.seeds[0], Path(cfg.out_dir)).check_program(program)
        return task

    def _run(self, run: RunDir) -> dict[str, Any]:
        cfg = self.config

        def events(e: Event) -> None:
            if e.name != "progress.advance":
                run.log(e)
            if self.user_events is not None:
                self.user_events(e)

        task = self.check()
        check_data(run, task, cfg.task)  # a resume on other data than the run started with stops here
        strategies = parse_strategies(cfg.strategies)
        tree = StrategyTree(strategies)

        emit(
            events,
            "run.start",
            run_dir=str(run.path),
            task=cfg.task,
            model=cfg.model,
            nodes=len(tree) * len(cfg.seeds),
            node_kinds=[_kind(p) for p in tree] * len(cfg.seeds),
        )
        failures: list[dict[str, Any]] = []
        with Progress(events, "experiment", total=len(tree) * len(cfg.seeds)) as bar:
            if cfg.ray:  # every node a Ray task, seeds and branches in parallel; the same run_seed inside

                def failed(seed: int, steps: Steps, error: Exception | None) -> None:
                    NodeHooks(cfg, run, None, None, seed, None, failures, bar, events).failed(steps, error)

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

    def run_seed(
        self,
        run: RunDir,
        seed: int,
        strategies: list[Steps],
        failures: list[dict[str, Any]],
        bar: Any,
        events: EventSink,
        only: Steps | None = None,
    ) -> dict[Steps, StepResult]:
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
        hooks = NodeHooks(cfg, run, task, lm, seed, factory, failures, bar, events, only=only)
        return driver.run_tree(
            base, strategies if only is None else [only], trainset=task.train, events=events, hooks=hooks
        )


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


def default_optimizer_factory(cfg: ExperimentConfig, metric: Any) -> OptimizerFactory:
    """The config's Π and Θ optimizers from the registry, seeded per run seed; Θ writes its adapter in the node."""
    from cotune.optimize.registry import build_optimizer

    def factory(kind: StepKind | str, seed: int, node: Path) -> Optimizer:
        kind = StepKind.parse(kind)
        step = {StepKind.PROMPT: cfg.prompt, StepKind.WEIGHTS: cfg.weights}[kind]
        params = step.optimizer_params() | {"num_threads": cfg.threads, "seed": seed}
        if kind is StepKind.WEIGHTS:
            params["output_dir"] = str(node)  # the training seed is ``seed`` (BootstrapFinetune sets it)
        return build_optimizer(step.optimizer, metric, **params)

    return factory


def _dev_scores(run: RunDir, node: dict[str, Any]) -> list[float]:
    """A finished node's per-example dev scores, in dev order (from its saved evaluation)."""
    data = json.loads((run.node_dir(node["seed"], node["strategy"]) / "eval-dev.json").read_text())
    return [row["score"] for row in sorted(data["rows"], key=lambda row: row["index"])]


def _kind(steps: Steps) -> str:
    """What a node costs like: its own step's letter, or "eval" for zero-shot (evaluations only)."""
    kind = last_kind(steps)
    return kind.value if kind else "eval"
