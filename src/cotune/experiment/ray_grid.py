"""Experiment grids on Ray: every node of every seed's strategy tree runs as a Ray task.

`Runner` hands its nodes here when the config sets ``ray`` (``cotune run --ray [ADDRESS]``). This process,
the driver, holds the run lock and submits each node once its parent has finished, so the seeds run in
parallel and so do a seed's branches (Π and Θ after zero-shot), as `StrategyTree.children` lists them. A task
builds the task and LM from the config in its worker (the LM is not shipped; the request cache on disk is
shared) and runs its one node with the `NodeRunner` that `Runner` hands in — `Runner.run_seed`, i.e.
`BetterTogether.run_tree` with the same hooks as a run without Ray — writing into the same run directory,
which every Ray node must see (a shared filesystem). The driver collects the outcomes;
the table, ``results.json`` and the best program are then made by `Runner` as always, and a run that was
killed resumes the same way, with or without Ray. A worker that dies mid-node is an infrastructure failure
of that node (its branch waits for a resume); any other error stops the run, as it would without Ray.

Resources: on a cluster with GPUs a Θ node takes a whole GPU and a zero-shot or Π node a quarter of one
(its LM runs there too); without GPUs each node takes a seed's share of the CPUs.

Example (``pip install 'cotune[ray]'``)::

    cotune run --task iris --seeds 3 --ray                     # a local Ray cluster sized to this machine
    cotune run --task iris --seeds 3 --ray auto                # the cluster `ray start --head` made here
    cotune run --task iris --seeds 3 --ray ray://HEAD:10001    # a remote cluster (same filesystem)
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from cotune.errors import ConfigError, CotuneError, InfrastructureError
from cotune.events import Event, EventSink
from cotune.experiment.config import ExperimentConfig
from cotune.experiment.rundir import RunDir
from cotune.optimize.strategy import StepKind, Steps, StrategyTree, last_kind, strategy_name

INSTALL = "pip install 'cotune[ray]'"
# Share of one GPU a node takes, by its own step (None: zero-shot): training wants a whole one.
GPU_SHARE = {StepKind.WEIGHTS: 1.0, StepKind.PROMPT: 0.25, None: 0.25}

# In a worker: builds the task and LM from the config (once per worker and config).
Builder = Callable[[ExperimentConfig], tuple[Any, Any]]
# In a worker: (config, task, lm, run, seed, steps, failures, bar, events) -> True if the node finished; its
# ancestors are finished in the run. It reports to ``failures``, ``bar`` and ``events`` as a run without Ray.
NodeRunner = Callable[[ExperimentConfig, Any, Any, RunDir, int, Steps, list[dict[str, Any]], Any, EventSink], bool]
# On the driver: (seed, steps, error) records a node that failed (error) or was skipped (None).
FailureRecorder = Callable[[int, Steps, Exception | None], None]
# The config fields a worker builds its task and LM from: a worker keeps them for its next node.
_BUILD_FIELDS = ("task", "data_dir", "split_seed", "train_size", "dev_size", "test_size", "model", "cache")


def require_ray() -> Any:
    """The ``ray`` module, or a `ConfigError` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            f"running on Ray (--ray, config field `ray`) needs Ray, which is not installed: {INSTALL}"
        ) from None
    return ray


def check_ray_inputs(*, lm: Any, task: Any) -> None:
    """Fail before any work: Ray must be installed, and the workers build the task and LM from the config."""
    require_ray()
    if lm is not None or task is not None:
        raise ConfigError(
            "with `ray` set the workers build the task and LM from the config: don't pass lm= or task= "
            "(or set ray to null)"
        )


def node_resources(kind: StepKind | None, cluster: dict[str, float], n_seeds: int) -> dict[str, Any]:
    """Ray task options for a node whose own step is ``kind`` (None for zero-shot).

    Example:
        >>> node_resources(StepKind.WEIGHTS, {"CPU": 16, "GPU": 2}, 3)
        {'num_cpus': 1, 'num_gpus': 1.0, 'max_calls': 1}
        >>> node_resources(StepKind.PROMPT, {"CPU": 16}, 3)
        {'num_cpus': 5}
    """
    if cluster.get("GPU", 0) >= 1:
        # a fresh worker for each GPU task: torch reads which GPU it may use once, when CUDA starts
        return {"num_cpus": 1, "num_gpus": GPU_SHARE[kind], "max_calls": 1}
    return {"num_cpus": max(1, int(cluster.get("CPU", 1)) // max(n_seeds, 1))}


@contextlib.contextmanager
def connected(address: str) -> Iterator[Any]:
    """Ray, connected to ``address`` ("local": a new cluster sized to this machine) unless this process is
    already connected (then that cluster is used as it is); disconnected afterwards if connected here."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    env = {k: v for k, v in os.environ.items() if k.startswith("COTUNE_")}  # the same request cache and folders
    local = address == "local"
    try:
        ray.init(
            address=None if local else address,
            runtime_env={"env_vars": env} if env else None,
            include_dashboard=False if local else None,
            log_to_driver=False,
        )
    except ConnectionError as e:
        raise InfrastructureError(
            f"can't reach the Ray cluster at {address!r} ({e}); start one (`ray start --head`) "
            "or pass --ray alone for a local one"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def run_on_ray(
    cfg: ExperimentConfig,
    run: RunDir,
    tree: StrategyTree,
    failures: list[dict[str, Any]],
    bar: Any,
    events: EventSink,
    *,
    build: Builder,
    run_node: NodeRunner,
    failed: FailureRecorder,
) -> None:
    """Every seed's nodes of ``tree`` as Ray tasks into ``run``, each submitted once its parent finished, each
    run by ``run_node`` on what ``build`` made in its worker (both must pickle: Ray ships them). ``failures``,
    ``bar`` and ``events`` get what ``run_node`` gives them, in the same order as a run without Ray; a node
    whose worker died, and the descendants of a node that did not finish, go to ``failed``."""
    with connected(cfg.ray) as ray:
        cluster = ray.cluster_resources()
        box = ray.remote(num_cpus=0)(_EventBox).remote()
        node = ray.remote(_run_node)
        config, pending = cfg.to_dict(), {}

        def submit(seed: int, steps: Steps) -> None:
            options = node_resources(last_kind(steps), cluster, len(cfg.seeds))
            name = f"cotune seed {seed} {strategy_name(steps)}"
            ref = node.options(max_retries=0, name=name, **options).remote(
                config, str(run.path), seed, steps, build, run_node, box
            )
            pending[ref] = (seed, steps)

        def drain() -> None:
            for event in ray.get(box.take.remote()):
                events(event)

        for seed in cfg.seeds:
            submit(seed, ())
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                drain()
                for ref in ready:
                    seed, steps = pending.pop(ref)
                    if _collect(ray, ref, bar, failures, lambda error, s=seed, n=steps: failed(s, n, error)):
                        for child in tree.children(steps):
                            submit(seed, child)
                    else:  # as in run_tree: a failed node's descendants are skipped
                        for later in tree.descendants(steps):
                            failed(seed, later, None)
        except BaseException:
            for ref in pending:  # an error that stops the run, or Ctrl-C: stop the other nodes too
                ray.cancel(ref, force=True)
            raise
    position = {strategy_name(steps): tree.position(steps) for steps in tree}
    failures.sort(key=lambda f: (cfg.seeds.index(f["seed"]), position[f["strategy"]]))


def _collect(ray: Any, ref: Any, bar: Any, failures: list[dict[str, Any]], died: Callable[[Exception], None]) -> bool:
    """A node task's outcome passed on to the driver's bar and failures; True if the node is finished."""
    try:
        outcome = ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # the node raised what the runner does not accept: stop
        cause = getattr(e, "cause", None)
        raise cause if isinstance(cause, CotuneError) else e from None
    except (
        ray.exceptions.WorkerCrashedError,
        ray.exceptions.NodeDiedError,
        ray.exceptions.OutOfMemoryError,
        ray.exceptions.LocalRayletDiedError,
    ) as e:
        died(InfrastructureError(f"the Ray worker running it died ({type(e).__name__}: {str(e)[:300]})"))
        return False
    for postfix in outcome["advances"]:
        bar.advance(**postfix)
    failures.extend(outcome["failures"])
    return outcome["finished"]


# -- inside the workers ------------------------------------------------------------------------------

_HELD: dict[str, tuple[Any, Any]] = {}  # this worker's task and LM, kept for its next node


def _run_node(
    config: dict[str, Any], run_path: str, seed: int, steps: Steps, build: Builder, run_node: NodeRunner, box: Any
) -> dict[str, Any]:
    """A Ray task: one node of one seed, on a task and LM built from ``config`` in this worker."""
    import ray

    cfg = ExperimentConfig.saved({**config, "ray": None})  # in here, the node runs in this process
    key = json.dumps([config.get(k) for k in _BUILD_FIELDS] + [ray.get_gpu_ids()], default=str)
    if key not in _HELD:
        _HELD.clear()
        _HELD[key] = build(cfg)
    task, lm = _HELD[key]
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus and "torch" in sys.modules:  # torch's threads to this task's CPUs, not the machine's
        sys.modules["torch"].set_num_threads(max(1, int(cpus)))
    sink, bar, failures = _Forward(box), _Advances(), []
    try:
        finished = run_node(cfg, task, lm, RunDir(run_path), seed, steps, failures, bar, sink)
    finally:
        sink.flush()
    return {"finished": finished, "failures": failures, "advances": bar.calls}


class _EventBox:
    """A Ray actor holding the workers' events until the driver takes them."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def put(self, event: Event) -> None:
        self.events.append(event)

    def take(self) -> list[Event]:
        events, self.events = self.events, []
        return events


class _Forward:
    """A worker's event sink: every event but progress bars (per example, numbered per process) to the
    driver, its fields as they would be logged."""

    def __init__(self, box: Any) -> None:
        self.box, self.last = box, None

    def __call__(self, event: Event) -> None:
        if not event.name.startswith("progress."):
            fields = json.loads(json.dumps(event.fields, default=str))
            self.last = self.box.put.remote(Event(event.name, fields, event.time))

    def flush(self) -> None:
        """Wait until the box holds every event sent (an actor runs one caller's calls in order)."""
        if self.last is not None:
            import ray

            ray.get(self.last)


class _Advances:
    """A worker's stand-in for the driver's experiment bar: its advances go back with the outcome."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def advance(self, n: int = 1, **postfix: Any) -> None:
        self.calls.append(postfix)
