"""Iris Table 1 sequential and on a local Ray cluster: the wall time of each and both tables.

    .venv/bin/python -m pip install --constraint constraints.txt -e ".[ray]"
    .venv/bin/python benchmarks/ray_grid.py            # 6 strategies × 3 seeds twice (about an hour on 2 cores)
    .venv/bin/python benchmarks/ray_grid.py --quick    # tiny splits, zero-shot and Π only: a few minutes

Writes benchmarks/results/ray_grid.json (``--quick``: ray_grid_quick.json in the temp folder, not a result).
Each run gets its own fresh request cache, so neither is flattered by the other's requests. The Ray run
(`ray: local`) starts a local cluster sized to this machine, and its wall time includes starting it and each
worker loading the model; its nodes run as Ray tasks, seeds and branches in parallel, one seed's share of
the CPUs each. ``same_scores`` says whether every strategy's dev and test means agree between the two.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench import HERE, RESULTS, arguments, write_results

SCORES = ("test_mean", "test_std", "dev_mean", "dev_std")


def timed_run(data: dict, name: str) -> dict:
    """One run of ``data`` on a fresh request cache: its wall time and table."""
    from cotune.experiment.config import ExperimentConfig
    from cotune.experiment.runner import Runner

    os.environ["COTUNE_REQUEST_CACHE"] = str(Path(tempfile.mkdtemp(prefix=f"cotune-{name}-")) / "requests.sqlite")
    cfg = ExperimentConfig.from_dict(data | {"name": name})
    t0 = time.perf_counter()
    run = Runner(cfg).start()
    wall = time.perf_counter() - t0
    results = run.results()
    print(f"{name}: {wall / 60:.1f} min")
    return {"wall_seconds": wall, "run_dir": str(run.path), "table": results["table"], "failures": results["failures"]}


def main() -> None:
    ap = arguments(
        __doc__,
        None,
        out_help="the results file (default: benchmarks/results/ray_grid.json; "
        "with --quick ray_grid_quick.json in the temp folder)",
    )
    ap.add_argument("--config", type=Path, default=HERE / "configs" / "iris.yaml")
    ap.add_argument("--seeds", type=int, default=None, help="override the config's seeds with 0..N-1")
    ap.add_argument("--ray", default="local", help="the Ray cluster: local (default), auto or an address")
    ap.add_argument("--quick", action="store_true", help="iris on 8/4/4 examples, zero-shot and a bootstrap Π step")
    args = ap.parse_args()
    started = time.perf_counter()

    from cotune.experiment.config import ExperimentConfig

    data = ExperimentConfig.from_yaml(args.config).to_dict()
    if args.seeds:
        data["seeds"] = list(range(args.seeds))
    if args.quick:
        data |= {
            "train_size": 8,
            "dev_size": 4,
            "test_size": 4,
            "strategies": ["zero-shot", "p"],
            "threads": 8,
            "prompt": data["prompt"] | {"optimizer": "bootstrap", "max_bootstrapped_demos": 1, "max_labeled_demos": 1},
        }
    data["out_dir"] = tempfile.mkdtemp(prefix="cotune-ray-grid-runs-")

    sequential = timed_run(data | {"ray": None}, "sequential")
    on_ray = timed_run(data | {"ray": args.ray}, "ray")

    def scores(table: list[dict]) -> dict:
        return {r["strategy"]: {k: r[k] for k in SCORES} for r in table}

    out = {
        "config": data,
        "quick": args.quick,
        "ray": args.ray,
        "sequential": sequential,
        "on_ray": on_ray,
        "speedup": sequential["wall_seconds"] / on_ray["wall_seconds"],
        "same_scores": scores(sequential["table"]) == scores(on_ray["table"]),
    }
    default = Path(tempfile.gettempdir()) / "ray_grid_quick.json" if args.quick else RESULTS / "ray_grid.json"
    path = args.out or default
    write_results(path, out, started=started)
    print(f"{'strategy':<10} {'sequential test':>16} {'ray test':>16}")
    ray_rows = {r["strategy"]: r for r in on_ray["table"]}
    for r in sequential["table"]:
        other = ray_rows.get(r["strategy"], {}).get("test_mean", float("nan"))
        print(f"{r['strategy']:<10} {r['test_mean']:>16.1%} {other:>16.1%}")
    print(
        f"sequential {sequential['wall_seconds'] / 60:.1f} min, Ray {on_ray['wall_seconds'] / 60:.1f} min "
        f"({out['speedup']:.2f}x); same scores: {out['same_scores']}; wrote {path}"
    )


if __name__ == "__main__":
    main()
