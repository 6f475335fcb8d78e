"""Θ on Iris from the zero-shot program under recipe variants (any Θ setting), over training seeds.

    .venv/bin/python benchmarks/theta_recipe.py        # epochs 10 (the default), 5 and 3; seeds 0-5 (~15 min)
    .venv/bin/python benchmarks/theta_recipe.py --variant "6 epochs: training.epochs=6" \\
        --variant "6 epochs, lr 5e-3: training.epochs=6, training.learning_rate=5e-3" --seeds 0,1,2

The Θ node of `make run` (`cotune run --task iris`, seed 0) as the run builds it: the task's run defaults
(16 constrained runs per flower, the later ones at temperature 2 until one passes; kept runs balanced by
species; LoRA r32/α64 on the top 8 layers, 10 epochs at lr 3e-3, batch 4) through the run's own optimizer
factory, request cache off. Its runs are collected once (training seed 0, exactly the run's node) or read from
``--traces``; then each variant (``weights.`` settings over the defaults, as ``cotune run --set weights.KEY=V``
would give) trains one adapter per training seed on them, scored on the 50 test flowers. Training is most of a
Θ step's time (42-62 s of each 70-90 s Θ node of the Iris table on a 2-core CPU): a recipe with fewer steps
that keeps every seed's accuracy makes `make run` and the Iris table faster. Reported per run: test accuracy,
the predicted species, the last loss, steps and training seconds; per variant: mean accuracy and training
seconds, the runs under 80% and the runs that answered fewer than three species.
Writes ``benchmarks/results/theta_recipe.json``.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from bench import RESULTS, arguments, write_results

DEFAULT_VARIANTS = ("10 epochs: training.epochs=10", "5 epochs: training.epochs=5", "3 epochs: training.epochs=3")


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``"NAME: KEY=VALUE, KEY=VALUE"`` → (name, nested ``weights`` settings); numbers as numbers, the rest as YAML.

    >>> parse_variant("fast: training.epochs=5, training.learning_rate=5e-3")
    ('fast', {'training': {'epochs': 5, 'learning_rate': 0.005}})
    """
    name, sep, body = text.partition(":")
    if not sep or not body.strip():
        raise SystemExit(f"a variant is 'NAME: KEY=VALUE[, KEY=VALUE]', got {text!r}")
    settings: dict[str, Any] = {}
    for item in body.split(","):
        key, eq, value = item.strip().partition("=")
        if not eq:
            raise SystemExit(f"a variant's setting is KEY=VALUE, got {item.strip()!r} in {text!r}")
        *parents, leaf = key.strip().split(".")
        node = settings
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _value(value.strip())
    return name.strip(), settings


def _value(text: str) -> Any:
    """A number as a number (YAML reads ``5e-3`` as text), anything else as YAML reads it."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def main() -> None:
    ap = arguments(__doc__, RESULTS / "theta_recipe.json")
    ap.add_argument("--traces", type=Path, default=None, help="a Θ step's traces.jsonl (default: collect them)")
    ap.add_argument("--seeds", default="0,1,2,3,4,5", help="training seeds, comma-separated")
    ap.add_argument("--variant", action="append", help="'NAME: KEY=VALUE, ...' of weights settings (repeatable)")
    args = ap.parse_args()
    started = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [parse_variant(v) for v in args.variant or DEFAULT_VARIANTS]

    import cotune as ct
    from cotune.experiment.config import ExperimentConfig
    from cotune.experiment.runner import default_optimizer_factory, task_from_config
    from cotune.lm.registry import load
    from cotune.optimize.strategy import StepKind
    from cotune.optimize.traces import load_traces, passing

    def config(weights: dict[str, Any]) -> ExperimentConfig:
        return ExperimentConfig.from_dict({"task": "iris", "model": "smollm2-135m", "cache": False, "weights": weights})

    base = config({})
    task = task_from_config(base)
    lm = load(base.model, cache=False, dtype=base.dtype)
    program = task.program().bind(lm)
    if base.max_tokens:
        for p in program.predictors():
            p.config["max_tokens"] = base.max_tokens
    scratch = Path(tempfile.mkdtemp(prefix="theta-recipe-"))
    traces = args.traces
    rows: list[dict[str, Any]] = []
    try:
        for seed in seeds:
            for name, weights in variants:
                cfg = config(weights)
                tuner = default_optimizer_factory(cfg, task.metric)(StepKind.WEIGHTS, seed, scratch / f"{seed}-{name}")
                tuner.traces = str(traces) if traces else None  # the first run collects them (seed 0: the run's)
                tuned = tuner.compile(program, trainset=task.train)
                traces = traces or Path(tuner.traces_path_)
                result = ct.evaluate(tuned, task.test, task.metric, num_threads=cfg.threads)
                predicted = Counter(str((r.prediction or {}).get("species")) for r in result.rows)
                trained = tuner.train_result_
                rows.append(
                    {
                        "seed": seed,
                        "variant": name,
                        "test": result.score,
                        "predicted": dict(sorted(predicted.items())),
                        "final_loss": round(trained.final_loss, 4),
                        "steps": trained.steps,
                        "examples": trained.n_examples,
                        "train_seconds": round(trained.seconds, 1),
                    }
                )
                print(
                    f"seed {seed} {name:>12}  test {result.score:.2f}  steps {trained.steps}  "
                    f"{trained.seconds:.0f} s  loss {trained.final_loss:.3f}  {dict(predicted)}",
                    flush=True,
                )
        kept = passing(load_traces(traces), None)
    finally:
        lm.close()
        shutil.rmtree(scratch, ignore_errors=True)
    summary = {}
    for name, weights in variants:
        mine = [r for r in rows if r["variant"] == name]
        summary[name] = {
            "weights": weights,
            "recipe": config(weights).weights.optimizer_params(),
            "mean_test": round(statistics.mean(r["test"] for r in mine), 3),
            "tests": [r["test"] for r in mine],
            "mean_train_seconds": round(statistics.mean(r["train_seconds"] for r in mine), 1),
            "steps": sorted({r["steps"] for r in mine}),
            "under_80": sum(r["test"] < 0.8 for r in mine),
            "fewer_than_three_species": sum(len(r["predicted"]) < 3 for r in mine),
        }
        print(f"{name}: {summary[name]}", flush=True)
    write_results(
        args.out,
        {
            "benchmark": "theta_recipe",
            "model": base.model,
            "task": "iris split seed 0, 50 test flowers",
            "traces": str(args.traces) if args.traces else "collected by the seed-0 node, request cache off",
            "passing_traces": len(kept),
            "passing_by_species": dict(Counter(str((t.prediction or {}).get("species")) for t in kept)),
            "seeds": seeds,
            "variants": summary,
            "runs": rows,
        },
        started=started,
    )


if __name__ == "__main__":
    main()
