"""Θ alone on Iris: the model's own constrained samples → LoRA → test accuracy (one seed, no gold labels).

    .venv/bin/python benchmarks/theta_iris.py --seed 0 --rollouts 16 --epochs 10 --lr 3e-3 --top-layers 8

Runs the built-in Iris program (a constrained choice of three species) zero-shot on the test split, then
`BootstrapFinetune` with ``--rollouts`` runs per training flower (greedy, then sampled at temperature 2 until
one passes), LoRA r32/α64 on the kept runs only (on the top ``--top-layers`` layers; 0: every layer), and the
tuned program on the test split. Appends a row to benchmarks/results/theta_iris.json (with the commit and CPU
it came from): coverage of the kept runs per class, test accuracy, predicted-class counts and seconds per phase.
"""

from __future__ import annotations

import json
import time
from collections import Counter

from bench import RESULTS, arguments, commit, cpu_model, write_results


def main() -> None:
    ap = arguments(__doc__, RESULTS / "theta_iris.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rollouts", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--top-layers", type=int, default=8, help="LoRA on the top N layers (0: every layer)")
    ap.add_argument("--threads", type=int, default=64)
    args = ap.parse_args()
    started = time.perf_counter()

    import cotune as ct
    from cotune.optimize.finetune import BootstrapFinetune
    from cotune.tasks import load_task
    from cotune.training.config import LoRAConfig, TrainingConfig

    task = load_task("iris", seed=args.seed)
    program = task.program().bind(ct.lm.load("smollm2-135m"))

    def predicted(result) -> dict[str, int]:
        return dict(Counter(str((r.prediction or {}).get("species")) for r in result.rows))

    t0 = time.perf_counter()
    zero = ct.evaluate(program, task.test, task.metric, num_threads=args.threads)
    t1 = time.perf_counter()
    lora = LoRAConfig(r=32, alpha=64, dropout=0.0, top_layers=args.top_layers or None)
    tuner = BootstrapFinetune(
        task.metric,
        lora=lora,
        training=TrainingConfig(epochs=args.epochs, batch_size=4, learning_rate=args.lr),
        num_rollouts=args.rollouts,
        rollout_temperature=args.temperature,
        stop_at_first_pass=True,
        keep_demos=False,
        num_threads=args.threads,
        seed=args.seed,
    )
    tuned = tuner.compile(program, trainset=task.train)
    t2 = time.perf_counter()
    theta = ct.evaluate(tuned, task.test, task.metric, num_threads=args.threads)
    t3 = time.perf_counter()
    row = {
        "seed": args.seed,
        "rollouts": args.rollouts,
        "temperature": args.temperature,
        "epochs": args.epochs,
        "top_layers": args.top_layers or None,
        "learning_rate": args.lr,
        "zero_shot_test": zero.score,
        "zero_shot_predicted": predicted(zero),
        "coverage": tuner.coverage_,
        "theta_test": theta.score,
        "theta_predicted": predicted(theta),
        "final_loss": tuner.train_result_.final_loss,
        "steps": tuner.train_result_.steps,
        "seconds": {"zero_shot": t1 - t0, "finetune": t2 - t1, "evaluate": t3 - t2},
        # the file gathers rows of several runs: each says where it came from
        "commit": commit()["commit"],
        "cpu": cpu_model(),
    }
    rows = json.loads(args.out.read_text())["runs"] if args.out.exists() else []
    write_results(args.out, {"benchmark": "theta_iris", "model": "smollm2-135m", "runs": [*rows, row]}, started=started)
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
