"""Θ on Iris trained with length-grouped batches vs random batches, over training seeds, on one trace set.

    .venv/bin/python benchmarks/theta_batches.py                   # seeds 1-6, both ways (~12 min on 2 cores)
    .venv/bin/python benchmarks/theta_batches.py --traces runs/<run>/seed-0/w/traces.jsonl --seeds 1,2

One set of Θ traces for Iris seed 0 (the built-in program on SmolLM2-135M, greedy then up to 15 runs at
temperature 2 until one passes, request cache off; or ``--traces`` from a run), then the same LoRA recipe as
Iris's run defaults (r32/α64 on the top 8 layers, 10 epochs at lr 3e-3, batch 4) trained once per seed (the seed
draws the adapter's initialization and the batch order) with ``group_by_length`` on and off, each adapter scored
on the 50 test flowers. With the species' names of different lengths, length-grouped batches of a set smaller
than the sorting window hold one species each. Reported per run: test accuracy, the predicted species, the
mean loss of the last epoch and training seconds; per way: mean accuracy and how many runs answered one or two
species only. Writes ``benchmarks/results/theta_batches.json``.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import RESULTS, arguments, write_results


def main() -> None:
    ap = arguments(__doc__, RESULTS / "theta_batches.json")
    ap.add_argument("--traces", type=Path, default=None, help="a Θ step's traces.jsonl (default: collect them)")
    ap.add_argument("--seeds", default="1,2,3,4,5,6", help="training seeds, comma-separated")
    ap.add_argument("--threads", type=int, default=64)
    args = ap.parse_args()
    started = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]

    import cotune as ct
    from cotune.optimize.finetune import BootstrapFinetune
    from cotune.optimize.rollouts import collect_traces
    from cotune.optimize.traces import load_traces, passing, save_traces
    from cotune.tasks import load_task
    from cotune.training.config import LoRAConfig, TrainingConfig

    task = load_task("iris", seed=0)
    lm = ct.lm.load("smollm2-135m", cache=False)
    program = task.program().bind(lm)
    scratch = Path(tempfile.mkdtemp(prefix="theta-batches-"))
    lora = LoRAConfig(r=32, alpha=64, dropout=0.0, top_layers=8)

    def tuner(seed: int, by_length: bool, traces: Path | None, out: Path) -> BootstrapFinetune:
        training = TrainingConfig(epochs=10, batch_size=4, learning_rate=3e-3, group_by_length=by_length)
        return BootstrapFinetune(
            task.metric,
            lora=lora,
            training=training,
            num_rollouts=16,
            rollout_temperature=2.0,
            stop_at_first_pass=True,
            keep_demos=False,
            num_threads=args.threads,
            seed=seed,
            traces=str(traces) if traces else None,
            output_dir=str(out),
        )

    try:
        traces = args.traces
        if traces is None:  # Θ's rollouts for seed 0, as `cotune run --task iris` collects them for its first adapter
            traces = scratch / "traces.jsonl"
            save_traces(
                traces,
                collect_traces(
                    program,
                    task.train,
                    task.metric,
                    num_rollouts=16,
                    temperature=2.0,
                    num_threads=args.threads,
                    seed=0,
                    stop_at_first_pass=True,
                ),
            )
        kept = passing(load_traces(traces), None)
        rows: list[dict[str, Any]] = []
        for seed in seeds:
            for by_length in (True, False):
                t = tuner(seed, by_length, traces, scratch / f"{seed}-{by_length}")
                tuned = t.compile(program, trainset=task.train)
                result = ct.evaluate(tuned, task.test, task.metric, num_threads=args.threads)
                predicted = Counter(str((r.prediction or {}).get("species")) for r in result.rows)
                rows.append(
                    {
                        "seed": seed,
                        "group_by_length": by_length,
                        "test": result.score,
                        "predicted": dict(predicted),
                        "final_loss": round(t.train_result_.final_loss, 4),
                        "train_seconds": round(t.train_result_.seconds, 1),
                    }
                )
                print(
                    f"seed {seed} by_length={by_length!s:5}  test {result.score:.2f}  "
                    f"loss {rows[-1]['final_loss']:.3f}  {dict(predicted)}",
                    flush=True,
                )
    finally:
        lm.close()
        shutil.rmtree(scratch, ignore_errors=True)
    summary = {}
    for by_length in (True, False):
        mine = [r for r in rows if r["group_by_length"] is by_length]
        summary["grouped" if by_length else "random"] = {
            "mean_test": round(statistics.mean(r["test"] for r in mine), 3),
            "tests": [r["test"] for r in mine],
            "fewer_than_three_species": sum(len(r["predicted"]) < 3 for r in mine),
        }
    print(summary, flush=True)
    write_results(
        args.out,
        {
            "benchmark": "theta_batches",
            "model": "smollm2-135m",
            "task": "iris seed 0, 50 test flowers",
            "recipe": {"lora": "r32/alpha64, top 8 layers", "epochs": 10, "learning_rate": 3e-3, "batch_size": 4},
            "traces": str(args.traces) if args.traces else "collected: seed 0, 16 rollouts at temperature 2",
            "passing_traces": len(kept),
            "passing_by_species": dict(Counter(str((t.prediction or {}).get("species")) for t in kept)),
            "seeds": seeds,
            "runs": rows,
            "summary": summary,
        },
        started=started,
    )


if __name__ == "__main__":
    main()
