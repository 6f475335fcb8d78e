"""Table 1: the paper's strategies and the two controls (Π→Π, Θ→Θ) × seeds on one task, and the wall time.

    .venv/bin/python benchmarks/table1.py                 # Iris: 8 strategies × 3 seeds (benchmarks/configs/iris.yaml)
    .venv/bin/python benchmarks/table1.py --config benchmarks/configs/gsm8k-typed.yaml --data-dir ../shared/data/gsm8k \\
        --run-dir runs/table1-gsm8k               # hours: Ctrl-C (or a kill) and the same command again resumes
    .venv/bin/python benchmarks/table1.py --config benchmarks/configs/hotpotqa.yaml --data-dir ../shared/data/hotpotqa \\
        --run-dir runs/table1-hotpotqa

A run is a `cotune run` directory: with ``--run-dir`` it is kept, and the same command later resumes it where it
stopped (finished nodes are not redone) and adds that sitting's wall time; its request cache lives in the run
directory, fresh at the first sitting. Stop a sitting with Ctrl-C or ``kill -TERM`` (``kill -INT`` works for a job
started in the background too): its time is recorded at once and the finished nodes are written as a partial
table; a second signal exits without waiting for model calls in flight. Without ``--run-dir`` the run goes to a temporary folder.

Writes benchmarks/results/table1-<task>.json: the table (mean ± std per strategy on test and dev; for a task with
several metrics, each of them on test, e.g. HotPotQA's EM, F1 and retrieval recall of the gold titles), the best
program's selection, the coverage of each Θ step's kept runs, the wall time of every sitting, the commit and
the machine (CPU model, bf16/AVX flags), and the Table 1 issue's targets checked.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

from bench import RESULTS, commit, write_results

HERE = Path(__file__).resolve().parent
ALTERNATING = ("p-w", "w-p", "p-w-p")
CONTROLS = ("p-p", "w-w")
# The best alternating order must reach this (the targets): Iris an absolute accuracy, GSM8K zero-shot
# plus 12 points, HotPotQA twice the zero-shot EM.
BEST_TARGETS = {
    "iris": ("at least 95%", lambda zero: 0.95),
    "gsm8k": ("zero-shot + 12 points", lambda zero: zero + 0.12),
    "hotpotqa": ("2 × zero-shot", lambda zero: 2 * zero),
}


def targets(task: str, table: dict[str, dict]) -> dict[str, bool | None]:
    """The Table 1 issue's targets on this task's table (None: a strategy it needs did not finish)."""

    def mean(name: str, split: str = "test") -> float | None:
        return table[name][f"{split}_mean"] if name in table else None

    alternating = [mean(s) for s in ALTERNATING if s in table]
    best_alt = max(alternating) if alternating else None
    singles = [mean(s) for s in ("p", "w")]
    controls = [mean(s) for s in CONTROLS]
    out: dict[str, bool | None] = {}
    out["best_alternating_at_least_max_p_w"] = (
        None if best_alt is None or None in singles else best_alt >= max(singles)  # type: ignore[type-var]
    )
    out["best_alternating_at_least_max_p_w_pp_ww"] = (
        None if best_alt is None or None in singles + controls else best_alt >= max(singles + controls)  # type: ignore[type-var]
    )
    zero = mean("zero-shot")
    if task in BEST_TARGETS and best_alt is not None and zero is not None:
        words, threshold = BEST_TARGETS[task]
        out[f"best_alternating_{words.replace(' ', '_')}"] = best_alt >= threshold(zero)
    out["prompt_step_not_below_zero_shot_on_dev"] = (
        None if "p" not in table or zero is None else mean("p", "dev") >= mean("zero-shot", "dev")
    )
    return out


def extra_metrics(run_path: Path, nodes: list[dict], task) -> dict[str, dict[str, float]]:
    """Each of the task's metrics on test, mean over seeds per strategy, re-scored from the saved rows."""
    metrics = getattr(task, "metrics", None) or {}
    if len(metrics) < 2:
        return {}
    from cotune.program.prediction import Prediction

    per: dict[str, dict[str, list[float]]] = {}
    for node in nodes:
        rows = json.loads((run_path / Path(node["program"]).parent / "eval-test.json").read_text())["rows"]
        for name, metric in metrics.items():
            scores = [metric(r["labels"], Prediction(r["prediction"])) if r["prediction"] else 0.0 for r in rows]
            per.setdefault(node["strategy"], {}).setdefault(name, []).append(statistics.fmean(scores))
    return {s: {m: statistics.fmean(v) for m, v in ms.items()} for s, ms in per.items()}


def learned(nodes: list[dict], kind: str, **fields: str) -> list[dict]:
    """For every node whose last step is ``kind``: its strategy, seed and the named learned attributes."""
    return [
        {"strategy": n["strategy"], "seed": n["seed"]} | {k: n["info"].get(attr) for k, attr in fields.items()}
        for n in nodes
        if n["steps"] and n["steps"][-1] == kind and n.get("info")
    ]


def sitting(t0: float, resumed: bool, started_at: dict) -> dict:
    """One sitting's record: when it started, how long it ran, and the commit its code came from."""
    seconds = time.perf_counter() - t0
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - seconds))
    return {"started": started, "wall_seconds": seconds, "resumed": resumed, **started_at}


class Stop:
    """SIGINT and SIGTERM stop a sitting: the first records the sitting at once and raises `KeyboardInterrupt`, so
    what finished is written as a partial table; a second exits at once (the sitting is already recorded; a stop
    can wait on model calls in flight, and ``--report-only`` writes the table later).

    Installed for SIGINT too because a job started in the background by a non-interactive shell inherits
    SIGINT ignored, and then a Ctrl-C or ``kill -INT`` would do nothing."""

    def __init__(self, record):
        self.record = record  # writes the sitting's record; called once
        self.recorded = False

    def __call__(self, signum, frame) -> None:
        if self.recorded:
            os._exit(128 + signum)
        else:
            self.finish()
            raise KeyboardInterrupt

    def finish(self) -> None:
        if not self.recorded:
            self.recorded = True
            self.record()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self)


def finished_results(run, cfg) -> dict:
    """The run's results; for a run not finished, a partial table of the nodes finished so far."""
    from cotune.experiment.results import summarize
    from cotune.optimize.strategy import parse_strategies, strategy_name

    nodes = run.nodes()
    names = [strategy_name(s) for s in parse_strategies(cfg.strategies)]
    done = {(n["seed"], n["strategy"]) for n in nodes}
    missing = [f"seed {seed} {name}" for seed in cfg.seeds for name in names if (seed, name) not in done]
    if not missing and (run.path / run.RESULTS).is_file():
        return run.results() | {"complete": True, "missing_nodes": []}
    return {"nodes": nodes, "table": summarize(nodes, names), "complete": False, "missing_nodes": missing}


def open_run(args, cfg_data: dict):
    """(runner, run dir, whether it resumed): a new run, or the one in ``--run-dir`` resumed."""
    from rich.console import Console

    from cotune.cli.render import RichEvents
    from cotune.experiment.config import ExperimentConfig
    from cotune.experiment.rundir import RunDir
    from cotune.experiment.runner import Runner

    # Progress as `cotune run` shows it: bars on a terminal; in a log, a line per node with the time left and,
    # for a phase past its first minute (a Θ step's training, an evaluation), how far it got once a minute.
    progress = RichEvents(Console())
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="cotune-table1-runs-")) / "run"
    resumed = (run_dir / RunDir.CONFIG).is_file()
    if resumed:
        run = RunDir.open(run_dir)
        runner = Runner(ExperimentConfig.saved(run.config()), events=progress)
    else:
        runner = Runner(ExperimentConfig.from_dict(cfg_data | {"out_dir": str(run_dir.parent)}), events=progress)
        run = RunDir.create(run_dir.parent, run_dir.name, runner.config.to_dict())
    if not args.keep_cache:  # fresh at the first sitting, then the run's own across sittings
        os.environ["COTUNE_REQUEST_CACHE"] = str(run.path.resolve() / "requests.sqlite")
    return runner, run, resumed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=HERE / "configs" / "iris.yaml")
    ap.add_argument("--seeds", type=int, default=None, help="override the config's seeds with 0..N-1")
    ap.add_argument("--strategies", default=None, help="override the config's strategies (comma-separated)")
    ap.add_argument("--train-size", type=int, default=None, help="override the config's number of training examples")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--run-dir", default=None, help="keep the run here; the same command again resumes it")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep-cache", action="store_true", help="reuse the user's request cache (timing flattered)")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="write the results from the run directory as it stands, running nothing (an unfinished run: partial)",
    )
    args = ap.parse_args()

    from cotune.experiment.config import ExperimentConfig
    from cotune.tasks import load_task

    data = ExperimentConfig.from_yaml(args.config).to_dict()
    if args.seeds:
        data["seeds"] = list(range(args.seeds))
    if args.strategies:
        data["strategies"] = args.strategies.split(",")
    if args.train_size is not None:
        data["train_size"] = args.train_size
    if args.data_dir:
        data["data_dir"] = str(Path(args.data_dir).resolve())
    runner, run, resumed = open_run(args, data)
    cfg = runner.config
    out_path = args.out or RESULTS / f"table1-{cfg.task}.json"

    sittings_file = run.path / "table1-sittings.json"
    sittings = json.loads(sittings_file.read_text()) if sittings_file.is_file() else []
    t0, started_at = time.perf_counter(), commit()  # the code this sitting runs is the code at its start

    def record() -> None:  # a stopped sitting still counts its time toward the table's
        sittings.append(sitting(t0, resumed, started_at))
        sittings_file.write_text(json.dumps(sittings, indent=2))

    stop = Stop(record)
    try:
        if not args.report_only:
            stop.install()
            runner.run(run)
    except KeyboardInterrupt:  # Ctrl-C or kill: what finished is written as a partial table; the same command resumes
        print("interrupted: writing the nodes finished so far", flush=True)
    finally:
        if not args.report_only:
            stop.finish()
    results = finished_results(run, cfg)
    table = {r["strategy"]: r for r in results["table"]}
    sizes = {k: v for k, v in (("train", cfg.train_size), ("dev", cfg.dev_size), ("test", cfg.test_size)) if v}
    task = load_task(cfg.task, data_dir=cfg.data_dir, seed=cfg.split_seed, **sizes)
    extra = extra_metrics(run.path, results["nodes"], task)
    for name, row in table.items():
        row["test_metrics"] = extra.get(name, {})
    # What each Θ step learned from (its kept runs' coverage, per class) and how each Π step chose.
    coverage = learned(results["nodes"], "w", kept_runs="n_passed_", coverage="coverage_")
    selections = learned(results["nodes"], "p", kept_start="kept_start_", selection="selection_")
    wall = sum(s["wall_seconds"] for s in sittings)
    out = {
        "config": cfg.to_dict(),
        "run_dir": str(run.path),
        "wall_seconds": wall,
        "sittings": sittings,
        "table": list(table.values()),
        "best": results.get("best"),
        "targets": targets(cfg.task, table),
        "prompt_step_selections": selections,
        "theta_coverage": coverage,
        "failures": results.get("failures", []),
        "complete": results["complete"],
        "missing_nodes": results["missing_nodes"],
        # --keep-cache answers repeated requests from an earlier run's cache: the scores are those runs',
        # the wall time is not a fresh run's.
        "request_cache": "kept" if args.keep_cache else "fresh (the run's own, kept across its sittings)",
    }
    write_results(out_path, out | started_at)  # the commit of this sitting's code, not of the tree at its end
    print(f"{'strategy':<10} {'test':>16} {'dev':>16} {'prompt tok':>10}  other metrics")
    for r in table.values():
        others = " ".join(f"{m}={v:.1%}" for m, v in r["test_metrics"].items())
        print(
            f"{r['strategy']:<10} {r['test_mean']:>8.1%} ± {r['test_std']:<5.1%} {r['dev_mean']:>8.1%} ± "
            f"{r['dev_std']:<5.1%} {r['prompt_tokens_per_call']:>10.0f}  {others}"
        )
    state = (
        "complete"
        if out["complete"]
        else f"PARTIAL ({len(out['missing_nodes'])} nodes to go: the same command resumes)"
    )
    print(f"wall time {wall / 60:.1f} min over {len(sittings)} sitting(s), {state}; targets: {out['targets']}")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
