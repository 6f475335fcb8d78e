"""The experiment runner: strategies × seeds on one task and model, resumable, sharing common prefixes.

Strategies that share a prefix share its work: for one seed, Π is computed once for Π, Π→Θ and Π→Θ→Π,
and Θ once for Θ and Θ→Π. Every node (a strategy prefix) is optimized from its parent, saved, and
evaluated on dev and test before it is marked finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cotune.errors import ConfigError, InfrastructureError, TrainingError, is_infrastructure_error
from cotune.evaluate.evaluate import evaluate
from cotune.events import Event, EventSink, Progress, emit
from cotune.experiment.config import ExperimentConfig
from cotune.experiment.program_files import bind_saved, copy_program, read_program_state, save_program
from cotune.experiment.results import summarize
from cotune.experiment.rundir import RunDir
from cotune.lm.registry import relative_adapter
from cotune.optimize.base import Optimizer
from cotune.optimize.better_together import split_for_step
from cotune.optimize.strategy import parse_strategies, strategy_name
from cotune.program.program import Program, program_for_state

# (kind "p"/"w", seed, node directory) -> a built optimizer
OptimizerFactory = Callable[[str, int, Path], Optimizer]


def node_prefixes(strategies: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Every prefix of every strategy, each once, parents before children.

    Example:
        >>> [strategy_name(p) for p in node_prefixes([(), ("p",), ("p", "w", "p"), ("w", "p")])]
        ['zero-shot', 'p', 'w', 'p-w', 'w-p', 'p-w-p']
    """
    seen: list[tuple[str, ...]] = [()]
    for s in strategies:
        for i in range(1, len(s) + 1):
            if s[:i] not in seen:
                seen.append(s[:i])
    return sorted(seen, key=len)  # stable: keeps first-appearance order within a length


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

        task = self.task or self._load_task()
        lm = self.lm or self._load_lm()
        base = task.program().bind(lm)
        if cfg.max_tokens:
            for p in base.predictors():
                p.config["max_tokens"] = cfg.max_tokens
        factory = self.optimizer_factory or default_optimizer_factory(cfg, task.metric)
        strategies = parse_strategies(cfg.strategies)
        prefixes = node_prefixes(strategies)

        emit(events, "run.start", run_dir=str(run.path), task=cfg.task, model=cfg.model, nodes=len(prefixes) * len(cfg.seeds))
        failures: list[dict[str, Any]] = []
        with Progress(events, "experiment", total=len(prefixes) * len(cfg.seeds)) as bar:
            for seed in cfg.seeds:
                programs: dict[tuple[str, ...], Program] = {}
                records: dict[tuple[str, ...], dict[str, Any]] = {}
                for prefix in prefixes:
                    name = strategy_name(prefix)
                    if prefix and prefix[:-1] not in records:  # its parent failed: nothing to build on
                        failures.append({"seed": seed, "strategy": name, "kind": "skipped",
                                         "error": f"skipped: {strategy_name(prefix[:-1])} failed"})
                        bar.advance(seed=seed, strategy=name, failed=True)
                        continue
                    record = self._finished(run, seed, name, events)
                    if record is not None:
                        programs[prefix] = self._reload(run, seed, name, task, lm)
                        emit(events, "node.skipped", seed=seed, strategy=name, reason="finished earlier")
                    else:
                        parent = programs.get(prefix[:-1], base) if prefix else base
                        try:
                            programs[prefix], record = self._run_node(
                                run, task, parent, records.get(prefix[:-1]), prefix, seed, factory, events
                            )
                        except Exception as e:
                            # No trace passed the metric (training), or the LM or machine failed
                            # (infrastructure: never a score): this strategy has no result for this seed, the
                            # others go on; a resumed run tries the step again.
                            kind = failure_kind(e)
                            if kind is None:
                                raise
                            failures.append({"seed": seed, "strategy": name, "kind": kind, "error": str(e)})
                            emit(events, "node.failed", seed=seed, strategy=name, kind=kind, error=str(e))
                            bar.advance(seed=seed, strategy=name, failed=True)
                            continue
                        run.finish(seed, name, record)
                        # logged only once node.json is on disk: a node.done in the log is a finished node
                        emit(events, "node.done", seed=seed, strategy=name, dev=record["dev"]["score"],
                             test=record["test"]["score"])
                    records[prefix] = record
                    bar.advance(seed=seed, strategy=name, test=record["test"]["score"])
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

    # -- one node ------------------------------------------------------------------------------------
    def _run_node(self, run, task, parent, parent_record, prefix, seed, factory, events):
        cfg, name = self.config, strategy_name(prefix)
        node = run.node_dir(seed, name)
        node.mkdir(parents=True, exist_ok=True)
        emit(events, "node.start", seed=seed, strategy=name)
        info: dict[str, Any] = {}
        t0 = time.perf_counter()
        if prefix:
            kind = prefix[-1]
            optimizer = factory(kind, seed, node)
            train, val = split_for_step(optimizer, task.train, cfg.inner_val_ratio)
            program = optimizer.compile(parent, trainset=train, valset=val, events=events)
            info = learned_attributes(optimizer)
        else:
            kind, program = "", parent.deepcopy()
        optimize_seconds = time.perf_counter() - t0
        train_seconds = float(info.get("train_result_", {}).get("seconds", 0.0) if isinstance(info.get("train_result_"), dict) else 0.0)
        save_program(program, node / "program.json", task=cfg.task, strategy=name, seed=seed,
                     split_seed=cfg.split_seed, split_sizes=split_sizes(task))

        evals = {}
        for split in ("dev", "test"):
            result = evaluate(program, task.split(split), task.metric, num_threads=cfg.threads, events=events,
                              description=f"seed {seed} {name} {split}")
            result.save(node / f"eval-{split}.json")
            evals[split] = result.summary()
        lm = program.lm
        prev = parent_record or {}
        record = {
            "seed": seed,
            "strategy": name,
            "steps": list(prefix),
            "kind": kind,
            "parent": strategy_name(prefix[:-1]) if prefix else None,
            "dev": evals["dev"],
            "test": evals["test"],
            "optimize_seconds": optimize_seconds,
            "train_seconds": train_seconds,
            "cumulative_optimize_seconds": prev.get("cumulative_optimize_seconds", 0.0) + optimize_seconds,
            "cumulative_train_seconds": prev.get("cumulative_train_seconds", 0.0) + train_seconds,
            "adapter": relative_adapter(getattr(lm, "adapter", None), run.path) if lm.backend != "openai" else lm.adapter,
            "program": str((node / "program.json").relative_to(run.path)),
            "info": info,
        }
        return program, record

    @staticmethod
    def _save_best(run: RunDir, results: dict[str, Any]) -> dict[str, Any] | None:
        """Copy the best program to ``best-program.json``, chosen on dev (choosing on test would overfit it)."""
        finals = [n for n in results["nodes"] if n["strategy"] in results["strategies"]] or results["nodes"]
        if not finals:  # every step failed: no program to recommend
            return None
        best = max(finals, key=lambda n: (n["dev"]["score"], -len(n["steps"])))
        path = copy_program(run.path / best["program"], run.path / "best-program.json")
        return {"strategy": best["strategy"], "seed": best["seed"], "dev": best["dev"]["score"],
                "test": best["test"]["score"], "program": path.name}

    @staticmethod
    def _finished(run: RunDir, seed: int, name: str, events: EventSink) -> dict[str, Any] | None:
        """The node's record, or None to (re)do it; a corrupt record is set aside and the step redone."""
        try:
            return run.finished(seed, name)
        except ConfigError as e:
            run.forget(seed, name)
            emit(events, "node.corrupt", seed=seed, strategy=name, error=str(e))
            return None

    def _reload(self, run: RunDir, seed: int, name: str, task: Any, lm: Any) -> Program:
        state = read_program_state(run.node_dir(seed, name) / "program.json")
        return bind_saved(program_for_state(task.program(), state).load_state(state), state, lm)

    def _load_task(self):
        from cotune.tasks import load_task

        cfg = self.config
        sizes = {k: v for k, v in (("train", cfg.train_size), ("dev", cfg.dev_size), ("test", cfg.test_size)) if v}
        return load_task(cfg.task, data_dir=cfg.data_dir, seed=cfg.split_seed, **sizes)

    def _load_lm(self):
        from cotune.lm.registry import load

        return load(self.config.model, cache=self.config.cache)


def split_sizes(task: Any) -> dict[str, int]:
    """The sizes of the task's splits, saved with programs so `cotune eval` can rebuild the same split."""
    return {name: len(getattr(task, name)) for name in ("train", "dev", "test") if hasattr(task, name)}


def failure_kind(error: BaseException) -> str | None:
    """"training" or "infrastructure" for a failure that ends one node and not the run; None otherwise."""
    if isinstance(error, TrainingError):
        return "training"
    if isinstance(error, InfrastructureError) or is_infrastructure_error(error):
        return "infrastructure"
    return None


def default_optimizer_factory(cfg: ExperimentConfig, metric: Any) -> OptimizerFactory:
    """The config's Π and Θ optimizers from the registry, seeded per run seed; Θ writes its adapter in the node."""
    from cotune.optimize.registry import build_optimizer

    def factory(kind: str, seed: int, node: Path) -> Optimizer:
        if kind not in ("p", "w"):
            raise ConfigError(f"unknown step kind {kind!r}; valid: p, w")
        step = cfg.prompt if kind == "p" else cfg.weights
        params = step.optimizer_params() | {"num_threads": cfg.threads, "seed": seed}
        if kind == "w":
            params |= {"lora": {"seed": seed, **params.get("lora", {})}, "output_dir": str(node)}
        return build_optimizer(step.optimizer, metric, **params)

    return factory


def learned_attributes(optimizer: Optimizer, max_chars: int = 200_000) -> dict[str, Any]:
    """The optimizer's ``name_`` attributes that serialize to JSON (programs and huge values left out)."""
    out: dict[str, Any] = {}
    for key, value in vars(optimizer).items():
        if not key.endswith("_") or key.startswith("_") or isinstance(value, Program):
            continue
        try:
            text = json.dumps(value, default=_jsonable)
        except (TypeError, ValueError):
            continue
        if len(text) <= max_chars:
            out[key] = json.loads(text)
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Program):
        return None
    for attr in ("to_dict", "summary"):
        if hasattr(obj, attr) and callable(getattr(obj, attr)):
            return getattr(obj, attr)()
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)
