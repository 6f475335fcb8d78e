"""Experiment grids on Ray (`cotune.experiment.ray_grid`): the same run directory, table and resume as a
sequential run. The tests marked integration share one local Ray cluster and run the real SmolLM2-135M."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cotune.cli.app import app
from cotune.errors import ConfigError
from cotune.events import Event, Progress
from cotune.experiment import ray_grid
from cotune.experiment.config import ExperimentConfig, PromptStep
from cotune.experiment.rundir import RunDir
from cotune.experiment.runner import Runner, default_optimizer_factory
from cotune.optimize.strategy import StrategyTree, parse_strategies, strategy_name

# what must match between a Ray run and a sequential one (timings differ)
SAME = ("strategy", "seeds", "test_mean", "test_std", "dev_mean", "dev_std", "format_adherence",
        "prompt_tokens_per_call", "completion_tokens_per_call", "calls_per_example")  # fmt: skip


def tiny(tmp_path, name: str, **fields) -> ExperimentConfig:
    """Iris on 2/2/2 examples, zero-shot and one cheap Π step, two seeds: a real but short grid."""
    return ExperimentConfig(
        task="iris", model="smollm2-135m", strategies=["zero-shot", "p"], seeds=[0, 1], train_size=2, dev_size=2,
        test_size=2, out_dir=str(tmp_path), name=name, threads=4, max_tokens=16, ray="local",
        prompt=PromptStep(optimizer="bootstrap", max_bootstrapped_demos=1, max_labeled_demos=1), **fields,
    )  # fmt: skip


# -- without Ray ---------------------------------------------------------------------------------------


def test_ray_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'cotune\[ray\]'"):
        Runner(tiny(tmp_path, "x"))
    code = "import sys; sys.modules['ray'] = None; from cotune.cli import main; main()"
    args = ["run", "--ray", "--strategies", "zero-shot", "--out-dir", str(tmp_path / "runs")]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "pip install 'cotune[ray]'" in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made


@pytest.mark.parametrize(("args", "ray"), [
    (["--ray"], "local"),
    (["--ray", "--seeds", "2"], "local"),
    (["--ray", "auto"], "auto"),
    (["--ray", "ray://head:10001", "--seeds", "2"], "ray://head:10001"),
    (["--seeds", "2"], None),
])  # fmt: skip
def test_ray_option_takes_an_optional_address(args, ray, monkeypatch):
    seen = {}
    monkeypatch.setattr("cotune.cli.commands.run_experiment", lambda **kw: seen.update(kw))
    result = CliRunner().invoke(app, ["run", *args])
    assert result.exit_code == 0, result.output
    assert seen["ray"] == ray


@pytest.mark.parametrize("value", ["local", "auto", "ray://head:10001", "10.0.0.5:6379", None])
def test_ray_field_accepts_cluster_addresses(value):
    assert ExperimentConfig.from_dict({"ray": value}).ray == value


def test_ray_field_names_the_bad_value_and_the_choices():
    with pytest.raises(ConfigError, match=r"ray: 'lcoal' is not a Ray cluster; valid: local, auto, ray://HOST:PORT"):
        ExperimentConfig.from_dict({"ray": "lcoal"})


def test_ray_runner_refuses_an_injected_lm(tmp_path):
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match="workers build the task and LM from the config"):
        Runner(tiny(tmp_path, "x"), lm=object())


def test_importing_cotune_and_the_grid_does_not_import_ray():
    code = ("import sys, cotune, cotune.experiment.runner, cotune.experiment.ray_grid, cotune.cli.app;"
            "print('ray' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_grid_is_handed_the_runner_and_does_not_import_it():
    tree = ast.parse(Path(ray_grid.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert "cotune.experiment.runner" not in imported


# -- on a local Ray cluster ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cache(tmp_path_factory):
    """One local Ray cluster of 2 CPUs for this module; its workers use the request cache it returns."""
    ray = pytest.importorskip("ray")
    cache = str(tmp_path_factory.mktemp("cache") / "requests.sqlite")
    before = os.environ.get("COTUNE_REQUEST_CACHE")
    os.environ["COTUNE_REQUEST_CACHE"] = cache
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # the workers inherit the environment
    finally:
        if before is None:
            os.environ.pop("COTUNE_REQUEST_CACHE")
        else:
            os.environ["COTUNE_REQUEST_CACHE"] = before
    yield cache
    ray.shutdown()


@pytest.fixture
def ray_cluster(ray_cache, monkeypatch):
    """The module's Ray cluster, with this process on the workers' request cache."""
    monkeypatch.setenv("COTUNE_REQUEST_CACHE", ray_cache)


@pytest.mark.integration
def test_seeds_run_in_parallel_and_give_the_sequential_table(ray_cluster, tmp_path):
    seen = []
    on_ray = Runner(tiny(tmp_path, "ray"), events=seen.append).start()
    results = on_ray.results()
    assert [(n["seed"], n["strategy"]) for n in results["nodes"]] == [
        (0, "zero-shot"),
        (0, "p"),
        (1, "zero-shot"),
        (1, "p"),
    ]
    assert results["failures"] == []

    # the workers' node events reach this process's sink and the run's log
    times = {(e.fields["seed"], e.fields["strategy"], e.name): e.time for e in seen if e.name.startswith("node.")}
    logged = [(e["seed"], e["strategy"], e["event"]) for e in on_ray.events() if e["event"].startswith("node.")]
    assert sorted(logged) == sorted(times) and len(times) == 8
    # the two seeds' first nodes ran at the same time, each in its own worker
    assert times[1, "zero-shot", "node.start"] < times[0, "zero-shot", "node.done"]
    assert times[0, "zero-shot", "node.start"] < times[1, "zero-shot", "node.done"]

    # a sequential run of the same config on the same cache: the same table and programs, from the same
    # requests (every call a cache hit: nothing was asked differently)
    sequential = Runner(dataclasses.replace(tiny(tmp_path, "sequential"), ray=None)).start()
    again = sequential.results()
    assert [{k: r[k] for k in SAME} for r in again["table"]] == [{k: r[k] for k in SAME} for r in results["table"]]
    for node in again["nodes"]:
        usage = node["test"]["usage"]
        assert usage["cache_hits"] == usage["calls"] > 0
        program = (sequential.path / node["program"]).read_text()
        assert json.loads(program) == json.loads((on_ray.path / node["program"]).read_text())
    assert again["best"] == results["best"]


def dies_in_seed_1_prompt(cfg: ExperimentConfig):
    """An optimizer factory whose Ray worker dies (``os._exit``) once seed 1's Π node has started; a closure,
    so Ray ships it by value (the workers can't import this test module)."""

    def factory(kind, seed, node):
        if seed == 1 and kind == "p":
            os._exit(1)
        from cotune.tasks import load_task

        return default_optimizer_factory(cfg, load_task("iris").metric)(kind, seed, node)

    return factory


@pytest.mark.integration
def test_a_worker_killed_mid_node_leaves_the_run_resumable(ray_cluster, tmp_path):
    cfg = tiny(tmp_path, "killed")
    run = Runner(cfg, optimizer_factory=dies_in_seed_1_prompt(cfg)).start()
    results = run.results()
    # the dead worker's node failed (infrastructure: never a score) and the rest of the grid finished
    assert [(f["seed"], f["strategy"], f["kind"]) for f in results["failures"]] == [(1, "p", "infrastructure")]
    assert "died" in results["failures"][0]["error"]
    assert run.node_dir(1, "p").is_dir() and run.finished(1, "p") is None  # started, never finished
    assert {r["strategy"]: r["seeds"] for r in results["table"]} == {"zero-shot": [0, 1], "p": [0]}

    _, again = Runner.resume(run.path)  # on the same Ray cluster: the saved config says ray: local
    done = again.results()
    assert done["failures"] == [] and {r["strategy"]: r["seeds"] for r in done["table"]} == {
        "zero-shot": [0, 1],
        "p": [0, 1],
    }
    skipped = [(e["seed"], e["strategy"]) for e in RunDir.open(run.path).events() if e["event"] == "node.skipped"]
    assert sorted(skipped) == [(0, "p"), (0, "zero-shot"), (1, "zero-shot")]


def fake_node_runner(fails: str):
    """A node runner that reports each node as the runner would and fails the node named ``fails``; a
    closure, so Ray ships it by value."""

    def run_node(cfg, task, lm, run, seed, steps, failures, bar, events):
        name = strategy_name(steps)
        assert (task, lm) == ("task", f"lm for {cfg.model}")  # what the builder made in this worker
        events(Event("node.done", {"seed": seed, "strategy": name}))
        if name == fails:
            failures.append({"seed": seed, "strategy": name, "kind": "training", "error": "no trace passed"})
        bar.advance(seed=seed, strategy=name)
        return name != fails

    return run_node


@pytest.mark.integration
def test_the_grid_runs_the_nodes_with_what_it_is_handed(ray_cluster, tmp_path):
    """No model: the grid walks the tree with the builder and node runner it is given, and a failed node's
    descendants go to the failure recorder, as `BetterTogether.run_tree` skips them."""
    cfg = dataclasses.replace(tiny(tmp_path, "fake"), model="fake-model", strategies=["p-w", "w-p", "w-w"])
    tree = StrategyTree(parse_strategies(cfg.strategies))
    seen, failures, recorded = [], [], []

    def build(c):
        return "task", f"lm for {c.model}"

    def failed(seed, steps, error):
        recorded.append((seed, strategy_name(steps), error))

    with Progress(seen.append, "experiment", total=len(tree) * 2) as bar:
        run = RunDir(tmp_path)
        ray_grid.run_on_ray(
            cfg, run, tree, failures, bar, seen.append, build=build, run_node=fake_node_runner("w"), failed=failed
        )
    done = {(e.fields["seed"], e.fields["strategy"]) for e in seen if e.name == "node.done"}
    assert done == {(seed, s) for seed in (0, 1) for s in ("zero-shot", "p", "w", "p-w")}
    assert failures == [{"seed": s, "strategy": "w", "kind": "training", "error": "no trace passed"} for s in (0, 1)]
    assert sorted(recorded) == [(s, n, None) for s in (0, 1) for n in ("w-p", "w-w")]
    assert sum(e.name == "progress.advance" for e in seen) == 8
