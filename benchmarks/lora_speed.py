"""LoRA training speed: every layer vs the top N layers over a cached frozen trunk (``LoRAConfig.top_layers``),
each with and without running a micro-batch's shared prompt prefix once (``LoRAConfig.share_prefix``).

    .venv/bin/python benchmarks/lora_speed.py                      # top_layers None, 16, 8, 4; 12 steps each
    .venv/bin/python benchmarks/lora_speed.py --top 8 --steps 6

The training examples are the built-in Iris program's own zero-shot calls on the first 48 training flowers
(the messages it sends and the completion it got: ~118 tokens each, what Θ trains on for Iris), SmolLM2-135M,
LoRA r32/α64 on all linear layers, batch 4, float32 unless the hardware computes bf16 natively. One process,
settings run one after another, so the ratios come from one run on one machine. Reported per setting:
seconds per optimizer step (mean after the first), the one-off setup (model load, trunk pass, the exactness
checks, saving), the speed-up over every layer without sharing, and the speed-up of sharing at that depth.
Writes ``benchmarks/results/lora_speed.json``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from bench import RESULTS, arguments, write_results


def main() -> None:
    ap = arguments(__doc__, RESULTS / "lora_speed.json")
    ap.add_argument("--top", type=int, nargs="*", default=[0, 16, 8, 4], help="top_layers settings (0: every layer)")
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    started = time.perf_counter()

    import torch

    import cotune as ct
    from cotune.program.trace import record
    from cotune.tasks import load_task
    from cotune.training import LoRAConfig, TrainingConfig, train_lora
    from cotune.training.sft_data import chat_examples

    task = load_task("iris", seed=0)
    lm = ct.lm.load("smollm2-135m", cache=False)
    program = task.program().bind(lm)
    examples = []
    for ex in task.train[:48]:
        with record(program) as rec:
            program(**ex.inputs())
        examples += chat_examples([rec.steps], keep_demos=False)
    n_examples = args.steps * 4

    rows = []
    for top in args.top:
        for share in (False, True):
            lora = LoRAConfig(r=32, alpha=64, dropout=0.0, top_layers=top or None)
            training = TrainingConfig(epochs=1, batch_size=4, learning_rate=3e-3, share_prefix=share)
            with tempfile.TemporaryDirectory() as tmp:
                result = train_lora(
                    examples[:n_examples],
                    base_model_path=lm.model_path,
                    output_dir=Path(tmp) / "a",
                    lora=lora,
                    training=training,
                )
            per_step = sum(result.step_seconds[1:]) / max(1, len(result.step_seconds) - 1)
            rows.append(
                {
                    "top_layers": top or None,
                    "share_prefix": share,
                    "steps": result.steps,
                    "seconds_per_step": round(per_step, 3),
                    "setup_seconds": round(result.seconds - sum(result.step_seconds), 1),
                    "tokens_per_step": round(result.n_tokens / result.steps),
                    "final_loss": round(result.final_loss, 4),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    full = next((r["seconds_per_step"] for r in rows if r["top_layers"] is None and not r["share_prefix"]), None)
    for r in rows:
        r["speedup_vs_every_layer"] = round(full / r["seconds_per_step"], 2) if full else None
        alone = next(o for o in rows if o["top_layers"] == r["top_layers"] and not o["share_prefix"])
        r["speedup_of_sharing"] = round(alone["seconds_per_step"] / r["seconds_per_step"], 2)
    out = {
        "benchmark": "lora_speed",
        "model": "smollm2-135m",
        "layers": 30,
        "batch_size": 4,
        "rows": rows,
        "torch_threads": torch.get_num_threads(),
        "dtype": "float32 unless bf16 is native",
    }
    write_results(args.out, out, started=started)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
