"""Per-token overhead of constrained decoding on CPU: xgrammar vs llguidance vs outlines-core.

    .venv/bin/python benchmarks/archive/grammar_engines.py                  # every embedded model found, ~3-4 min
    .venv/bin/python benchmarks/archive/grammar_engines.py --models smollm2-135m --reps 10 --batch-reps 3   # quicker

For each engine, each grammar (``iris_cot``, ``gsm8k_cot``, ``json_obj``, each written in the engine's own
input language: xgrammar EBNF / JSON schema, llguidance Lark / JSON schema, outlines-core regex) and the real
tokenizer of each embedded model found under ``<cache dir>/models``, it measures:

- compile time: the tokenizer preparation (once per tokenizer), the first compile of the grammar and a second
  one (a cache hit for xgrammar; llguidance and outlines-core keep no cache, their second compile is a full
  one), and the cost of one more matcher for the same grammar;
- one sequence: the work a decoder does each step, i.e. fill the next-token bitmask, then advance the matcher
  with the chosen token, replayed along a fixed valid completion (the sample tokenized, then EOS);
  µs per token (mean, p50, p95 over all steps of all repetitions), split into mask and advance;
- a batch of 16 and 50 sequences filling one (batch, vocab/32) int32 bitmask per step: a Python loop over the
  matchers, and the engine's parallel batch API where it has one (xgrammar ``BatchGrammarMatcher``,
  llguidance ``LLExecutor``); all sequences replay the same completion;
- applying a (batch, vocab) float32 logits mask on CPU (``xgr.apply_token_bitmask_inplace``, and an eager
  torch unpack + ``masked_fill_`` for comparison: the three engines fill the same bit layout);
- for context, one bf16 decode step (one new token, KV cache of 150 tokens) of SmolLM2-135M (and of each other
  embedded model that is present) at batch 16 and 50, so the overhead can be stated as % of a decode step.

Repetitions run round-robin over engines so that load from other processes hits them alike. Also checks that
each engine accepts the completion and ends accepting, and whether the engines' masks agree step by step.
Writes ``benchmarks/results/grammar_engines.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "results" / "grammar_engines.json"
MODELS = ["smollm2-135m", "qwen2.5-coder-0.5b"]
ENGINES = ["xgrammar", "llguidance", "outlines_core"]
BATCHES = [16, 50]
KV_LEN = 150
ns = time.perf_counter_ns

# ---------------------------------------------------------------------------------------------- grammars

SPECIES = ["setosa", "versicolor", "virginica"]
NUMBER_EBNF = '"-"? [0-9]{1,15} ("." [0-9]{1,6})?'
NUMBER_RE = r"-?[0-9]{1,15}(?:\.[0-9]{1,6})?"
JSON_SCHEMA = {
    "type": "object",
    "properties": {"reasoning": {"type": "string"}, "answer": {"type": "number"}},
    "required": ["reasoning", "answer"],
    "additionalProperties": False,
}
SAMPLES = {
    "iris_cot": "Reasoning: The petal length is 4.7 cm and the petal width is 1.4 cm, which is typical of versicolor.\nSpecies: versicolor",
    "gsm8k_cot": "Reasoning: Natalia sold 48/2 = 24 clips in May.\nAltogether she sold 48+24 = 72 clips.\nAnswer: 72",
    "json_obj": '{"reasoning": "48/2 = 24; 48+24 = 72", "answer": 72}',
}
LABELS = {"iris_cot": "Species", "gsm8k_cot": "Answer"}


def _check_prefix(prefix: str) -> None:
    # the constructions below write the prefix's characters unescaped, in strings and in [^...] classes
    assert all(c.isalnum() or c == ":" for c in prefix), prefix


def not_prefix_ebnf(prefix: str) -> list[str]:
    """EBNF rules ``l0 .. l{n-1}``: ``l0`` is any line (no newline) that does not start with ``prefix``."""
    _check_prefix(prefix)
    rules = []
    for k, c in enumerate(prefix):
        alts = ['""', f"[^{c}\\n] [^\\n]*"]
        if k + 1 < len(prefix):
            alts.append(f'"{c}" l{k + 1}')
        rules.append(f"l{k} ::= " + " | ".join(alts))
    return rules


def not_prefix_regex(prefix: str) -> str:
    """A regex for any line (no newline) that does not start with ``prefix``."""
    _check_prefix(prefix)
    out = ""
    for c in reversed(prefix):
        out = f"(?:[^{c}\\n][^\\n]*" + (f"|{c}{out}" if out else "") + ")?"
    return out


def value_ebnf(grammar: str) -> str:
    return " | ".join(f'"{s}"' for s in SPECIES) if grammar == "iris_cot" else NUMBER_EBNF


def value_regex(grammar: str) -> str:
    return "(?:" + "|".join(SPECIES) + ")" if grammar == "iris_cot" else NUMBER_RE


def xgrammar_ebnf(grammar: str) -> str:
    label = LABELS[grammar]
    return "\n".join(
        [
            f'root ::= "Reasoning: " first cont* "\\n{label}: " ({value_ebnf(grammar)})',
            "first ::= [^\\n]*",
            'cont ::= "\\n" l0',
            *not_prefix_ebnf(label + ":"),
        ]
    )


def reasoning_regex(grammar: str) -> str:
    """The multi-line free text R: a first line, then lines that do not start with "<label>:"."""
    return r"[^\n]*(?:\n" + not_prefix_regex(LABELS[grammar] + ":") + ")*"


def full_regex(grammar: str) -> str:
    return f"Reasoning: {reasoning_regex(grammar)}\\n{LABELS[grammar]}: {value_regex(grammar)}"


def llguidance_lark(grammar: str) -> str:
    # R and the "\n<label>: " after it are ONE lexeme: llguidance's lexer is greedy, so a separate R terminal
    # would swallow "\nSpecies" (a line may start with "Species" without the colon) and then fail at ":".
    label = LABELS[grammar]
    value = " | ".join(f'"{s}"' for s in SPECIES) if grammar == "iris_cot" else f"/{NUMBER_RE}/"
    return "\n".join(
        ['start: "Reasoning: " body value', f"body: /{reasoning_regex(grammar)}\\n{label}: /", f"value: {value}"]
    )


# ---------------------------------------------------------------------------------------------- statistics


def stats_us(samples_ns: list[int], per: int = 1) -> dict[str, float]:
    xs = sorted(s / 1000 / per for s in samples_ns)
    q = statistics.quantiles(xs, n=20, method="inclusive") if len(xs) > 1 else xs * 19
    return {
        "mean": round(statistics.fmean(xs), 2),
        "p50": round(statistics.median(xs), 2),
        "p95": round(q[18], 2),
        "min": round(xs[0], 2),
        "n": len(xs),
    }


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = ns()
    out = fn()
    return out, (ns() - t0) / 1e6


def popcount(row) -> int:
    import numpy as np

    return int(np.unpackbits(row.numpy().view(np.uint8)).sum())


def allowed(bitmask, row: int, token: int) -> bool:
    return bool((int(bitmask[row, token >> 5]) >> (token & 31)) & 1)


# ---------------------------------------------------------------------------------------------- engines


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte <-> printable-character table used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


class Engine:
    """One engine bound to one tokenizer. ``compile`` -> grammar object; ``matcher`` -> a fresh matcher."""

    name = ""
    has_par = False
    caches = False

    def __init__(self, tokenizer, vocab: int, eos: int):
        self.tokenizer, self.vocab, self.eos = tokenizer, vocab, eos

    def compile(self, grammar: str): ...
    def matcher(self, compiled): ...
    def reset(self, m) -> None: ...
    def fill(self, m, bitmask, row: int) -> None: ...
    def advance(self, m, token: int) -> None: ...
    def finished(self, m) -> bool: ...
    def fill_par(self, ms, bitmask) -> None: ...
    def advance_par(self, ms, tokens: list[int]) -> None: ...


class XGrammar(Engine):
    name, has_par, caches = "xgrammar", True, True

    def __init__(self, tokenizer, vocab, eos):
        super().__init__(tokenizer, vocab, eos)
        import xgrammar as xgr

        self.xgr = xgr
        self.info = self.tokenizer_info(tokenizer, vocab, eos)
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=os.cpu_count() or 1, cache_enabled=True)
        self.batch = xgr.BatchGrammarMatcher(max_threads=os.cpu_count() or 1)

    @staticmethod
    def tokenizer_info(tokenizer, vocab: int, eos: int):
        """``TokenizerInfo.from_huggingface`` keeps special added tokens (``<|im_start|>``, ``<|endoftext|>``...)
        as text, so a free-text rule like ``[^\\n]*`` allows them; xgrammar treats a token as special only when
        its string is empty. So: take the metadata it detects, blank the special tokens, and build it again."""
        import xgrammar as xgr

        detected = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab, stop_token_ids=[eos])
        added = tokenizer.added_tokens_decoder
        encoded = [""] * vocab
        for token, i in tokenizer.get_vocab().items():
            if i < vocab and not (i in added and added[i].special):
                encoded[i] = token
        return xgr.TokenizerInfo(
            encoded,
            detected.vocab_type,
            vocab_size=vocab,
            stop_token_ids=[eos],
            add_prefix_space=detected.add_prefix_space,
        )

    def compile(self, grammar):
        if grammar == "json_obj":
            return self.compiler.compile_json_schema(
                json.dumps(JSON_SCHEMA), any_whitespace=False, separators=(", ", ": "), strict_mode=True
            )
        return self.compiler.compile_grammar(xgrammar_ebnf(grammar))

    def matcher(self, compiled):
        return self.xgr.GrammarMatcher(compiled)

    def reset(self, m):
        m.reset()

    def fill(self, m, bitmask, row):
        m.fill_next_token_bitmask(bitmask, row)

    def advance(self, m, token):
        if not m.accept_token(token):
            raise RuntimeError(f"xgrammar rejected token {token}")

    def finished(self, m):
        return m.is_terminated()

    def fill_par(self, ms, bitmask):
        self.batch.batch_fill_next_token_bitmask(ms, bitmask)

    def advance_par(self, ms, tokens):
        if not all(self.xgr.BatchGrammarMatcher.batch_accept_token(ms, tokens)):
            raise RuntimeError("xgrammar rejected a token")


class LLGuidance(Engine):
    name, has_par, caches = "llguidance", True, False

    def __init__(self, tokenizer, vocab, eos):
        super().__init__(tokenizer, vocab, eos)
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.llg, self.llt = llguidance, llguidance.torch
        self.tok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab, eos_token=eos)
        self.executor = llguidance.LLExecutor(num_threads=os.cpu_count() or 1)

    def compile(self, grammar):
        if grammar == "json_obj":
            text = self.llg.LLMatcher.grammar_from_json_schema(
                JSON_SCHEMA, defaults={"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
            )
        else:
            text = self.llg.LLMatcher.grammar_from_lark(llguidance_lark(grammar))
        m = self.llg.LLMatcher(self.tok, text, log_level=1)
        if m.is_error():
            raise RuntimeError(m.get_error())
        self.text = text
        return m  # a pristine matcher: deep_copy() it for each sequence

    def matcher(self, compiled):
        return compiled.deep_copy()

    def reset(self, m):
        m.reset()

    def fill(self, m, bitmask, row):
        self.llt.fill_next_token_bitmask(m, bitmask, row)

    def advance(self, m, token):
        if not m.consume_token(token):
            raise RuntimeError(f"llguidance rejected token {token}: {m.get_error()}")

    def finished(self, m):
        return m.is_stopped() and not m.is_error()

    def fill_par(self, ms, bitmask):
        self.llt.fill_next_token_bitmask_par(self.executor, [(m, i) for i, m in enumerate(ms)], bitmask)

    def advance_par(self, ms, tokens):
        if not all(self.llt.consume_token_par(self.executor, list(zip(ms, tokens, strict=True)))):
            raise RuntimeError("llguidance rejected a token")


class OutlinesCore(Engine):
    name, has_par, caches = "outlines_core", False, False

    def __init__(self, tokenizer, vocab, eos):
        super().__init__(tokenizer, vocab, eos)
        import outlines_core

        self.oc = outlines_core
        self.vocabulary = self.build_vocabulary(tokenizer, eos)

    @staticmethod
    def build_vocabulary(tokenizer, eos: int):
        """``Vocabulary(eos, {token bytes: [ids]})`` from a byte-level BPE tokenizer, without the hub.

        Special added tokens are left out (the other engines never allow them as text); EOS is given apart.
        """
        import outlines_core

        decoder = type(tokenizer.backend_tokenizer.decoder).__name__
        if decoder != "ByteLevel":
            raise NotImplementedError(f"only byte-level BPE vocabularies are handled here, not {decoder}")
        byte_of = {c: b for b, c in bytes_to_unicode().items()}
        added = tokenizer.added_tokens_decoder
        table: dict[bytes, list[int]] = {}
        for token, i in tokenizer.get_vocab().items():
            if i == eos or (i in added and added[i].special):
                continue
            raw = added[i].content.encode() if i in added else bytes(byte_of[c] for c in token)
            table.setdefault(raw, []).append(i)
        return outlines_core.Vocabulary(eos, table)

    def compile(self, grammar):
        if grammar == "json_obj":
            regex = self.oc.json_schema.build_regex_from_schema(json.dumps(JSON_SCHEMA))
        else:
            regex = full_regex(grammar)
        return self.oc.Index(regex, self.vocabulary)

    def matcher(self, compiled):
        return self.oc.Guide(compiled)

    def reset(self, m):
        m.reset()

    def fill(self, m, bitmask, row):
        v = bitmask[row]
        m.write_mask_into(v.data_ptr(), v.numel(), 4)

    def advance(self, m, token):
        if token == self.eos:  # Guide.advance(eos) raises "No next state found", even in a final state where
            if not m.is_finished():  # the mask allows EOS: a decoder stops on EOS instead of advancing
                raise RuntimeError("outlines-core: EOS before a final state")
            return
        m.advance(token, return_tokens=False)  # return_tokens defaults to True: a list of allowed ids per step

    def finished(self, m):
        return m.is_finished()


ENGINE_CLASSES = {"xgrammar": XGrammar, "llguidance": LLGuidance, "outlines_core": OutlinesCore}

# ---------------------------------------------------------------------------------------------- replays


class Job:
    """One (model, grammar, engine): compiled grammar, matchers, and the samples of every replay mode."""

    def __init__(self, engine: Engine, grammar: str, compiled, tokens: list[int]):
        import torch

        self.engine, self.grammar, self.compiled, self.tokens = engine, grammar, compiled, tokens
        words = (engine.vocab + 31) // 32
        self.bitmask = {b: torch.zeros((b, words), dtype=torch.int32) for b in [1, *BATCHES]}
        self.single = engine.matcher(compiled)
        self.batch = {b: [engine.matcher(compiled) for _ in range(b)] for b in BATCHES}
        self.samples: dict[str, dict[str, list[int]]] = {}
        self.masks: list = []  # the first replay's masks, one per step, for the cross-engine comparison
        self.first_mask_us: float | None = None
        self.cold_replay_ns = 0  # the first replay on a fresh matcher: lazy work (llguidance's lexer) lands here
        self.accepted = False

    def _add(self, key: str, **parts: int) -> None:
        d = self.samples.setdefault(key, {})
        for k, v in parts.items():
            d.setdefault(k, []).append(v)

    def replay_single(self, record: bool, check: bool) -> None:
        e, m, bm = self.engine, self.single, self.bitmask[1]
        e.reset(m)
        for step, tok in enumerate(self.tokens):
            t0 = ns()
            e.fill(m, bm, 0)
            t1 = ns()
            e.advance(m, tok)
            t2 = ns()
            if self.first_mask_us is None:
                self.first_mask_us = (t1 - t0) / 1000
            if record:
                self._add("single", mask=t1 - t0, advance=t2 - t1, total=t2 - t0)
            if check:
                self.cold_replay_ns += t2 - t0
                if not allowed(bm, 0, tok):
                    raise RuntimeError(f"{e.name}: token {tok} at step {step} is not in the mask")
                self.masks.append(bm[0].clone())
        if check:
            self.accepted = e.finished(m)

    def replay_batch(self, b: int, par: bool, record: bool) -> None:
        e, ms, bm = self.engine, self.batch[b], self.bitmask[b]
        for m in ms:
            e.reset(m)
        for tok in self.tokens:
            toks = [tok] * b
            t0 = ns()
            if par:
                e.fill_par(ms, bm)
            else:
                for i, m in enumerate(ms):
                    e.fill(m, bm, i)
            t1 = ns()
            if par:
                e.advance_par(ms, toks)
            else:
                for m in ms:
                    e.advance(m, tok)
            t2 = ns()
            if record:
                self._add(f"batch{b}_{'par' if par else 'loop'}", mask=t1 - t0, advance=t2 - t1, total=t2 - t0)
        if record and not all(e.finished(m) for m in ms):
            raise RuntimeError(f"{e.name}: a batch matcher did not finish")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, d in self.samples.items():
            b = 1 if key == "single" else int(key[5:].split("_")[0])
            row = {
                "us_per_token": stats_us(d["total"], per=b),
                "mask_us_per_token": stats_us(d["mask"], per=b),
                "advance_us_per_token": stats_us(d["advance"], per=b),
            }
            if b > 1:
                row["us_per_step"] = stats_us(d["total"])
            else:  # where along the completion the time goes (see the model's "completions" for the tokens)
                steps = len(self.tokens)
                runs = [d["total"][i : i + steps] for i in range(0, len(d["total"]), steps)]
                row["per_step_p50_us"] = [round(statistics.median(col) / 1000, 1) for col in zip(*runs, strict=True)]
            out[key] = row
        return out


def run_round_robin(jobs: list[Job], reps: int, batch_reps: int, warmup: int) -> None:
    for r in range(warmup + reps):
        for job in list(jobs):
            try:
                job.replay_single(record=r >= warmup, check=r == 0)
            except Exception as exc:  # noqa: BLE001 - one engine failing must not stop the others
                job.error = f"{type(exc).__name__}: {exc}"
                jobs.remove(job)
    for r in range(warmup + batch_reps):
        for b in BATCHES:
            for job in list(jobs):
                for par in [False, True] if job.engine.has_par else [False]:
                    try:
                        job.replay_batch(b, par, record=r >= warmup)
                    except Exception as exc:  # noqa: BLE001
                        job.error = f"{type(exc).__name__}: {exc}"
                        jobs.remove(job)
                        break


def mask_agreement(jobs: list[Job]) -> dict[str, Any]:
    """Step by step, do the engines' bitmasks allow the same tokens? (first replay; token ids < vocab)."""
    import torch

    have = [j for j in jobs if len(j.masks) == len(j.tokens) and not hasattr(j, "error")]
    if len(have) < 2:
        return {}
    steps = len(have[0].tokens)
    differ = [s for s in range(steps) if any(not torch.equal(have[0].masks[s], j.masks[s]) for j in have[1:])]
    return {
        "engines": [j.engine.name for j in have],
        "steps": steps,
        "steps_identical": steps - len(differ),
        "allowed_tokens_per_step": {j.engine.name: [popcount(m) for m in j.masks] for j in have},
        "differing_steps": differ,
    }


# ---------------------------------------------------------------------------------------------- logits mask


def apply_mask_costs(vocab: int, bitmasks: dict[int, Any], reps: int) -> dict[str, Any]:
    import numpy as np
    import torch
    import xgrammar as xgr

    def eager(logits, bm):
        bits = (bm.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
        logits.masked_fill_(bits.view(bm.shape[0], -1)[:, : logits.shape[1]] == 0, float("-inf"))

    def unpackbits(logits, bm):
        allow = np.unpackbits(bm.numpy().view(np.uint8), axis=1, bitorder="little", count=logits.shape[1])
        logits.masked_fill_(~torch.from_numpy(allow.view(np.bool_)), float("-inf"))

    out = {}
    for b, bm in bitmasks.items():
        logits = torch.randn(b, vocab, dtype=torch.float32)
        row, masked = {}, {}
        for name, fn in [
            ("xgrammar_cpu", lambda lg, m: xgr.apply_token_bitmask_inplace(lg, m)),
            ("torch_eager", eager),
            ("numpy_unpackbits", unpackbits),
        ]:
            masked[name] = logits.clone()
            fn(masked[name], bm)
            samples = []
            for _ in range(reps):
                lg = logits.clone()
                t0 = ns()
                fn(lg, bm)
                samples.append(ns() - t0)
            row[name] = stats_us(samples)
        row["same_result"] = all(torch.equal(masked["xgrammar_cpu"], m) for m in masked.values())
        out[str(b)] = row
    return out


# ---------------------------------------------------------------------------------------------- decode step


class DecodeStep:
    """One bf16 decode step (one new token per row, KV cache of ``KV_LEN``) at each batch size.

    ``measure`` runs before and after the grammar work and the samples are pooled: on a shared machine the load
    changes over a run, and the decode step (two torch threads) suffers from it more than the single-threaded
    matchers do.
    """

    def __init__(self, path: Path):
        import torch
        from transformers import AutoModelForCausalLM

        self.model, self.load_ms = timed(
            lambda: AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
        )
        self.gen = torch.Generator().manual_seed(0)
        self.samples: dict[int, list[int]] = {b: [] for b in BATCHES}

    def measure(self, reps: int) -> None:
        import torch

        vocab = self.model.config.vocab_size
        with torch.inference_mode():
            for b in BATCHES:
                prompt = torch.randint(100, vocab - 100, (1, KV_LEN), generator=self.gen)
                cache = self.model(prompt, use_cache=True).past_key_values  # prefill one row, then copy it b times
                cache.batch_repeat_interleave(b)
                ids = torch.randint(100, vocab - 100, (b, 1), generator=self.gen)
                for r in range(reps + 1):  # the first step is a warm-up
                    t0 = ns()
                    self.model(ids, past_key_values=cache, use_cache=True)
                    dt = ns() - t0
                    cache.crop(-1)  # back to KV_LEN (transformers 5 refuses a positive crop length)
                    if r:
                        self.samples[b].append(dt)
                assert cache.get_seq_length() == KV_LEN

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dtype": "bfloat16", "kv_len": KV_LEN, "load_ms": round(self.load_ms, 1)}
        for b, xs in self.samples.items():
            out[str(b)] = {
                "step_ms": {k: round(v / 1000, 3) if k != "n" else v for k, v in stats_us(xs).items()},
                "all_ms": [round(x / 1e6, 1) for x in xs],
            }
        return out


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated; those not present are skipped")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--reps", type=int, default=40, help="replays of the completion for one sequence")
    parser.add_argument("--batch-reps", type=int, default=5, help="replays for each batch size")
    parser.add_argument(
        "--decode-reps", type=int, default=8, help="decode steps per batch size, half before, half after"
    )
    parser.add_argument("--decode-models", default="all", help="'all' (each model present), or comma-separated")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import llguidance
    import outlines_core
    import torch
    import transformers
    import xgrammar
    from transformers import AutoConfig, AutoTokenizer

    from cotune.lm.cache import default_cache_dir

    started, load_before = time.perf_counter(), os.getloadavg()
    models_dir = default_cache_dir() / "models"
    models = [m for m in args.models.split(",") if (models_dir / m / "tokenizer.json").exists()]
    skipped = [m for m in args.models.split(",") if m not in models]
    grammars = list(SAMPLES)
    steppers: dict[str, Any] = {}  # model -> DecodeStep, or an error
    decode_models = models if args.decode_models == "all" else [m for m in args.decode_models.split(",") if m in models]
    for model in decode_models:  # first half of the decode samples, before the grammar work
        try:
            steppers[model] = DecodeStep(models_dir / model)
            steppers[model].measure(args.decode_reps // 2)
        except Exception as exc:  # noqa: BLE001
            steppers[model] = {"error": f"{type(exc).__name__}: {exc}"}
    results: dict[str, Any] = {}
    agreement: dict[str, Any] = {}
    apply_costs: dict[str, Any] = {}
    for model in models:
        path = models_dir / model
        tokenizer = AutoTokenizer.from_pretrained(path)
        vocab = AutoConfig.from_pretrained(path).vocab_size  # logits width; may exceed the tokenizer's
        eos = tokenizer.eos_token_id
        per_model: dict[str, Any] = {
            "vocab_size": vocab,
            "eos_token_id": eos,
            "tokenizer_prep_ms": {},
            "completions": {},
            "grammars": {g: {} for g in grammars},
        }
        engines: dict[str, Engine] = {}
        for name in args.engines.split(","):
            try:
                engines[name], ms = timed(lambda n=name, t=tokenizer, v=vocab, x=eos: ENGINE_CLASSES[n](t, v, x))
                per_model["tokenizer_prep_ms"][name] = round(ms, 1)
            except Exception as exc:  # noqa: BLE001
                per_model["tokenizer_prep_ms"][name] = f"error: {type(exc).__name__}: {exc}"
        jobs: list[Job] = []
        for g in grammars:
            tokens = tokenizer(SAMPLES[g], add_special_tokens=False)["input_ids"] + [eos]
            per_model["completions"][g] = [tokenizer.decode([t]) for t in tokens]
            for name, engine in engines.items():
                row: dict[str, Any] = {"tokens": len(tokens)}
                per_model["grammars"][g][name] = row
                try:
                    compiled, first = timed(lambda e=engine, g=g: e.compile(g))
                    second = timed(lambda e=engine, g=g: e.compile(g))[1]
                    _, matcher_ms = timed(lambda e=engine, c=compiled: e.matcher(c))
                    row["compile_ms"] = {
                        "first": round(first, 2),
                        "second": round(second, 2),
                        "second_is_cache_hit": engine.caches,
                        "new_matcher_us": round(matcher_ms * 1000, 1),
                    }
                    job = Job(engine, g, compiled, tokens)
                    job.row = row
                    jobs.append(job)
                except Exception as exc:  # noqa: BLE001
                    row["error"] = f"{type(exc).__name__}: {exc}"
        all_jobs = list(jobs)
        run_round_robin(jobs, args.reps, args.batch_reps, warmup=2)
        for job in all_jobs:
            if hasattr(job, "error"):
                job.row["error"] = job.error
            job.row["accepts_completion"] = job.accepted
            job.row["first_mask_us"] = round(job.first_mask_us, 1) if job.first_mask_us is not None else None
            job.row["cold_replay_ms"] = round(job.cold_replay_ns / 1e6, 3)
            job.row.update(job.summary())
        agreement[model] = {g: mask_agreement([j for j in all_jobs if j.grammar == g]) for g in grammars}
        donor = next((j for j in all_jobs if j.engine.name == "xgrammar" and j.grammar == "iris_cot"), all_jobs[0])
        apply_costs[model] = apply_mask_costs(vocab, {b: donor.bitmask[b] for b in BATCHES}, reps=30)
        results[model] = per_model
        del engines, jobs, all_jobs

    for bench in steppers.values():  # second half of the decode samples, after the grammar work
        if isinstance(bench, DecodeStep):
            bench.measure(args.decode_reps - args.decode_reps // 2)
    decode = {m: bench.summary() if isinstance(bench, DecodeStep) else bench for m, bench in steppers.items()}

    table, overhead = summarize(results, decode, apply_costs)
    report = {
        "benchmark": "grammar_engines",
        "what": "per-token CPU cost of constrained decoding: fill the next-token bitmask + advance the matcher with "
        "the chosen token, replayed along a fixed valid completion (sample tokens + EOS)",
        "models": models,
        "models_skipped": skipped,
        "samples": SAMPLES,
        "grammar_sources": {
            "xgrammar": {g: xgrammar_ebnf(g) for g in LABELS}
            | {"json_obj": "compile_json_schema(schema, any_whitespace=False, separators=(', ', ': '))"},
            "llguidance": {g: llguidance_lark(g) for g in LABELS}
            | {
                "json_obj": "LLMatcher.grammar_from_json_schema(schema, defaults={whitespace_flexible: False, "
                "item_separator: ', ', key_separator: ': '})"
            },
            "outlines_core": {g: full_regex(g) for g in LABELS}
            | {"json_obj": "json_schema.build_regex_from_schema(schema)  (whitespace [ ]?)"},
            "json_schema": JSON_SCHEMA,
        },
        "settings": {
            "reps_single": args.reps,
            "reps_batch": args.batch_reps,
            "warmup_reps": 2,
            "batches": BATCHES,
            "threads_for_parallel_apis": os.cpu_count(),
            "decode_reps": args.decode_reps,
            "batch_note": "all sequences of a batch replay the same completion; 'loop' = a Python loop "
            "over the matchers, 'par' = the engine's parallel batch API",
        },
        "results": results,
        "mask_agreement": agreement,
        "apply_mask_us": apply_costs,
        "decode_step": decode,
        "overhead_pct_of_decode_step": overhead,
        "table": table,
        "choice": choose(table),
        "notes": NOTES,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "processor": _cpu_name(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "xgrammar": _version("xgrammar", xgrammar),
            "llguidance": _version("llguidance", llguidance),
            "outlines_core": _version("outlines_core", outlines_core),
        },
        "runtime_s": round(time.perf_counter() - started, 1),
        "out": str(args.out),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


NOTES = [
    "xgrammar: TokenizerInfo.from_huggingface(tok, vocab_size=config.vocab_size, stop_token_ids=[eos]) keeps special "
    "added tokens (<|im_start|>, <|endoftext|>, <repo_name>...) as text, so [^\\n]* allows them; xgrammar treats a "
    "token as special only when its string is empty: rebuild TokenizerInfo(encoded_vocab with specials blanked, "
    "detected.vocab_type, vocab_size=..., stop_token_ids=[eos], add_prefix_space=detected.add_prefix_space).",
    "xgrammar: BatchGrammarMatcher.batch_accept_token is a static method; batch_fill_next_token_bitmask(matchers, "
    "bitmask) fills rows 0..n-1. GrammarCompiler caches compiled grammars (second compile is a cache hit).",
    "llguidance: one LLMatcher per grammar string parses the grammar (no cache across matchers); deep_copy() of a "
    "pristine matcher is the cheap way to get one per sequence. Lexer DFA states are built lazily, so the first "
    "masks of a fresh grammar cost more (first_mask_us, cold_replay_ms). Its lexer is greedy: a free-text terminal "
    "followed by a literal that the text could also contain must be one terminal with that literal.",
    'llguidance: where the grammar forces text ("Reasoning: "), the mask allows only the canonical token '
    "('Reason'), where xgrammar and outlines-core allow every token that is a prefix ('R', 'Re', 'Reason'); it "
    "also never allows non-special added tokens (<tool_call>) as text. These are the mask_agreement differences "
    "(besides outlines-core's JSON whitespace [ ]?).",
    "outlines-core: Guide.advance(eos) raises ValueError('No next state found ...') even in a final state whose "
    "mask allows EOS: stop on EOS instead of advancing. Guide.advance returns the next allowed-token list unless "
    "return_tokens=False. Vocabulary(eos_id, {bytes: [ids]}) takes str or bytes keys but not both in one dict, "
    "and must not contain EOS; Index(regex, vocabulary) is the compile step (no cache; keep the Index).",
    "The three engines fill the same bitmask layout (bit i of int32 word i // 32 = token i allowed), so any apply "
    "kernel works for all of them.",
]


def _version(dist: str, module) -> str:
    from importlib.metadata import version

    try:
        return version(dist.replace("_", "-"))
    except Exception:  # noqa: BLE001
        return getattr(module, "__version__", "?")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def best_batch_mode(row: dict[str, Any], b: int) -> tuple[str, dict[str, Any]] | None:
    modes = [(k.split("_")[1], row[k]) for k in (f"batch{b}_loop", f"batch{b}_par") if k in row]
    return min(modes, key=lambda m: m[1]["us_per_step"]["mean"]) if modes else None


def summarize(results, decode, apply_costs) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One table row per (model, grammar, engine); overhead against SmolLM2-135M's step (the brief's reference)
    and against the same model's own step where that was measured."""
    table, overhead = [], {}
    ref = decode.get("smollm2-135m", {})
    for model, per_model in results.items():
        own = decode.get(model, {})
        for g, engines in per_model["grammars"].items():
            for name, row in engines.items():
                t: dict[str, Any] = {"model": model, "grammar": g, "engine": name}
                if "error" in row:
                    t["error"] = row["error"]
                if "single" in row:
                    t |= {
                        "compile_first_ms": row["compile_ms"]["first"],
                        "compile_second_ms": row["compile_ms"]["second"],
                        "compile_plus_cold_replay_ms": round(row["compile_ms"]["first"] + row["cold_replay_ms"], 2),
                        "single_us_per_token": row["single"]["us_per_token"]["mean"],
                        "single_p50": row["single"]["us_per_token"]["p50"],
                        "single_p95": row["single"]["us_per_token"]["p95"],
                    }
                for b in BATCHES:
                    best = best_batch_mode(row, b)
                    if not best:
                        continue
                    mode, r = best
                    step_us = r["us_per_step"]["mean"]
                    kernels = apply_costs.get(model, {}).get(str(b), {})
                    apply_us = min((v["mean"] for v in kernels.values() if isinstance(v, dict)), default=0.0)
                    t |= {
                        f"batch{b}_us_per_token": r["us_per_token"]["mean"],
                        f"batch{b}_mode": mode,
                        f"batch{b}_p50": r["us_per_token"]["p50"],
                        f"batch{b}_p95": r["us_per_token"]["p95"],
                        f"batch{b}_us_per_step": step_us,
                    }
                    steps = [("smollm2_step", ref)] + ([("own_step", own)] if model != "smollm2-135m" else [])
                    for label, dec in steps:
                        if str(b) in dec:
                            dec_us = dec[str(b)]["step_ms"]["mean"] * 1000
                            t[f"batch{b}_pct_of_{label}"] = round(100 * step_us / dec_us, 2)
                            t[f"batch{b}_pct_of_{label}_with_apply"] = round(100 * (step_us + apply_us) / dec_us, 2)
                            t[f"batch{b}_pct_of_{label}_p50"] = round(
                                100 * r["us_per_step"]["p50"] / (dec[str(b)]["step_ms"]["p50"] * 1000), 2
                            )
                            overhead.setdefault(model, {}).setdefault(g, {}).setdefault(name, {})[
                                f"batch{b}_vs_{label}"
                            ] = {
                                "mask_advance_pct": t[f"batch{b}_pct_of_{label}"],
                                "mask_advance_apply_pct": t[f"batch{b}_pct_of_{label}_with_apply"],
                                "mask_advance_us_per_step": step_us,
                                "apply_us_fastest_kernel": apply_us,
                                "decode_step_us": round(dec_us, 1),
                                "mode": mode,
                                "mask_advance_pct_p50": t[f"batch{b}_pct_of_{label}_p50"],
                            }
                table.append(t)
    return table, overhead


def choose(table: list[dict[str, Any]]) -> dict[str, Any]:
    """The engine with the lowest per-token cost: geometric mean, over (model, grammar), of its time relative to
    the fastest engine of that cell; batched at the largest batch and single-sequence, separately."""
    import math

    def score(key: str, model: str | None = None) -> dict[str, float]:
        cells: dict[tuple[str, str], dict[str, float]] = {}
        for t in table:
            if key in t and model in (None, t["model"]):
                cells.setdefault((t["model"], t["grammar"]), {})[t["engine"]] = t[key]
        engines = {e for c in cells.values() for e in c}
        out = {}
        for e in engines:
            ratios = [c[e] / min(c.values()) for c in cells.values() if e in c]
            if len(ratios) == len(cells):  # an engine that failed a cell is not ranked
                out[e] = round(math.exp(statistics.fmean(map(math.log, ratios))), 3)
        return dict(sorted(out.items(), key=lambda kv: kv[1]))

    big = BATCHES[-1]
    models = sorted({t["model"] for t in table})
    batched, single = score(f"batch{big}_us_per_token"), score("single_us_per_token")
    batched_p50, single_p50 = score(f"batch{big}_p50"), score("single_p50")
    compile_, cold = score("compile_first_ms"), score("compile_plus_cold_replay_ms")
    winner = next(iter(batched or single), None)
    winner_p50 = next(iter(batched_p50 or single_p50), None)
    failed = sorted({f"{t['engine']}/{t['model']}/{t['grammar']}" for t in table if "error" in t})
    reasoning = (
        f"Geometric mean over (model, grammar) of each engine's per-token time relative to the fastest engine "
        f"of that cell (1.0 = fastest everywhere). Batch {big}, mean: {batched}; p50: {batched_p50}. "
        f"Single sequence, mean: {single}; p50: {single_p50}. First compile: {compile_}; first compile + "
        f"first (cold) replay: {cold}. Per model, batch {big}, mean: "
        f"{ {m: score(f'batch{big}_us_per_token', m) for m in models} }. "
        f"Lowest batched per-token overhead: {winner} (by mean)"
        + ("" if winner_p50 == winner else f", {winner_p50} by p50")
        + "."
    )
    if failed:
        reasoning += f" Failed cells (not ranked): {failed}."
    return {
        "engine": winner,
        "engine_by_p50": winner_p50,
        "relative_batched_mean": batched,
        "relative_batched_p50": batched_p50,
        "relative_single_mean": single,
        "relative_single_p50": single_p50,
        "relative_compile": compile_,
        "relative_compile_plus_cold_replay": cold,
        "relative_batched_mean_per_model": {m: score(f"batch{big}_us_per_token", m) for m in models},
        "relative_single_mean_per_model": {m: score("single_us_per_token", m) for m in models},
        "reasoning": reasoning,
    }


if __name__ == "__main__":
    report = main()
    for t in report["table"]:
        if "error" in t:
            print(f"{t['model']:20} {t['grammar']:10} {t['engine']:14} ERROR {t['error'][:100]}")
            continue
        print(
            f"{t['model']:20} {t['grammar']:10} {t['engine']:14} compile {t['compile_first_ms']:8.1f} ms  "
            f"single {t['single_us_per_token']:7.1f} us/tok  "
            + "  ".join(
                f"b{b} {t.get(f'batch{b}_us_per_token', float('nan')):6.1f} us/tok "
                f"({t.get(f'batch{b}_pct_of_smollm2_step', float('nan'))}% of step)"
                for b in BATCHES
            )
        )
    for m, d in report["decode_step"].items():
        print(m, {b: d.get(b, {}).get("step_ms") for b in map(str, BATCHES)})
    print("choice:", report["choice"]["reasoning"])
    print(f"runtime {report['runtime_s']} s -> {report['out']}")
