"""What the GPO and MedPrompt ladders share: a rung's row with its 95% interval, the request cache that lets a
long run resume, and the progress lines on stderr.

A rung is one program evaluated on one task's fixed test split. Its row says the accuracy with a Wilson 95%
interval (the normal interval is wrong near 0 and 1 and for the ~50-question splits of a slow model), the
tokens and calls per question over every call a question needs, the parse failures, the answer distribution
(a model that says "(A)" to everything shows it here) and how many calls the cache answered. The cache is one
SQLite file per ladder: run the same command again after an interruption and every call made before is
answered from it, so the run continues where it stopped, with the same answers.

No heavy imports at module level: the scripts' --help must stay fast.
"""

from __future__ import annotations

import math
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import ROOT

Z95 = 1.959963984540054  # the two-sided 95% quantile of the normal distribution
CACHE_DIR = ROOT / "runs"  # ignored by git, beside the checkout's other run folders


def wilson(correct: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion: ``correct`` successes out of ``n``.

    Raises:
        ValueError: ``n`` < 1 or ``correct`` outside [0, n].

    >>> wilson(0, 10)[0], round(wilson(0, 10)[1], 3)
    (0.0, 0.278)
    """
    if n < 1:
        raise ValueError(f"an interval needs at least one question, got n={n}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, {n}], got {correct}")
    p = correct / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # at 0 or n the bound is exactly 0 or 1; floating point would leave 0.9999999999999999
    low = 0.0 if correct == 0 else max(0.0, center - half)
    high = 1.0 if correct == n else min(1.0, center + half)
    return low, high


def interval_fields(correct: float, n: int) -> dict[str, Any]:
    """accuracy, correct, n and the 95% interval, as a rung or a summary records them."""
    low, high = wilson(correct, n)
    return {"test_accuracy": correct / n, "correct": correct, "n": n, "ci95": [round(low, 4), round(high, 4)]}


def answer_distribution(
    predictions: Iterable[Mapping[str, Any] | None], field: str = "answer", top: int = 12
) -> dict[str, int]:
    """How often each answer was given, most frequent first; a run without a parsed answer counts as "(none)",
    answers past the ``top`` most frequent (free text) together as "(other)".

    >>> answer_distribution([{"answer": "A"}, {"answer": "A"}, None, {"answer": "B"}])
    {'A': 2, '(none)': 1, 'B': 1}
    >>> answer_distribution([{"answer": str(i % 3)} for i in range(7)], top=1)
    {'0': 3, '(other)': 4}
    """
    counts = Counter(
        "(none)" if not p or p.get(field) in (None, "") else " ".join(str(p[field]).split()) for p in predictions
    ).most_common()
    shown = dict(counts[:top])
    if len(counts) > top:
        shown["(other)"] = sum(n for _, n in counts[top:])
    return shown


def chance_level(testset: Sequence[Mapping[str, Any]]) -> float:
    """The accuracy of guessing uniformly among each question's options."""
    return sum(1 / len(ex["options"]) for ex in testset) / len(testset)


def at_chance(row: Mapping[str, Any], chance: float) -> bool:
    """Whether a rung is no better than guessing: chance lies at or above its interval's lower bound."""
    return row["ci95"][0] <= chance


def usage_fields(usage: Any, n: int) -> dict[str, Any]:
    """Tokens and calls per question from a `Usage` (cache hits included: they cost the same tokens)."""
    return {
        "prompt_tokens_per_question": usage.prompt_tokens / n,
        "completion_tokens_per_question": usage.completion_tokens / n,
        "tokens_per_question": (usage.prompt_tokens + usage.completion_tokens) / n,
        "calls_per_question": usage.calls / n,
        "cache_hits": usage.cache_hits,
        "model_seconds": round(usage.seconds, 1),
    }


def usage_delta(before: Any, after: Any) -> dict[str, Any]:
    """What an LM answered between two `Usage` snapshots (calls, tokens, cache hits, model seconds)."""
    return {
        "calls": after.calls - before.calls,
        "prompt_tokens": after.prompt_tokens - before.prompt_tokens,
        "completion_tokens": after.completion_tokens - before.completion_tokens,
        "cache_hits": after.cache_hits - before.cache_hits,
        "model_seconds": round(after.seconds - before.seconds, 1),
    }


def with_tokens(program: Any, limit: int) -> Any:
    """``program`` with every predictor's generation limit set to ``limit`` tokens."""
    for predictor in program.predictors():
        predictor.config = {**predictor.config, "max_tokens": limit}
    return program


def score_rung(
    name: str,
    program: Any,
    testset: Sequence[Any],
    metric: Callable[..., float],
    *,
    model: str,
    num_threads: int,
    say: Callable[[str], None],
    **extra: Any,
) -> dict[str, Any]:
    """Evaluate ``program`` on ``testset`` and return the rung's row (see the module docstring)."""
    from cotune.evaluate import evaluate

    result = evaluate(
        program,
        testset,
        metric,
        num_threads=num_threads,
        max_errors=None,
        description=name,
        events=progress_events(say, f"  {name}"),
    )
    n = len(testset)
    row = {"rung": name, "model": model} | interval_fields(sum(r.score for r in result.rows), n)
    row |= usage_fields(result.usage, n) | {
        "parse_failures": result.parse_failures,
        "errors": result.errors,
        "seconds": round(result.seconds, 1),
        "answers": answer_distribution(r.prediction for r in result.rows),
    }
    agreements = [r.prediction["agreement"] for r in result.rows if r.prediction and "agreement" in r.prediction]
    if agreements:
        row["mean_agreement"] = sum(agreements) / len(agreements)
    say(
        f"  {name:14s} acc {row['test_accuracy']:.3f} [{row['ci95'][0]:.2f}, {row['ci95'][1]:.2f}]  "
        f"tokens/q {row['tokens_per_question']:6.0f}  calls/q {row['calls_per_question']:.1f}  "
        f"parse fails {row['parse_failures']}  cached {row['cache_hits']}  {row['seconds']:.0f} s"
    )
    return row | extra


def pooled(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Per model and rung, the questions of every task pooled: accuracy with its interval, tokens per question."""
    out = []
    models = list(dict.fromkeys(r["model"] for r in rows))
    for model in models:
        for name in names:
            group = [r for r in rows if r["rung"] == name and r["model"] == model]
            if not group:
                continue
            n = sum(r["n"] for r in group)
            tokens = sum(r["tokens_per_question"] * r["n"] for r in group) / n
            calls = sum(r["calls_per_question"] * r["n"] for r in group) / n
            out.append(
                {"rung": name, "model": model, "tasks": len(group)}
                | interval_fields(sum(r["correct"] for r in group), n)
                | {"tokens_per_question": tokens, "calls_per_question": calls}
            )
    return out


def table(summary: Sequence[Mapping[str, Any]], title: str) -> str:
    """The pooled summary as a Markdown table."""
    lines = [f"| {title} | model | tasks | n | accuracy | 95% CI | tokens/q | calls/q |", "|---" * 8 + "|"]
    for s in summary:
        lines.append(
            f"| {s['rung']} | {s['model']} | {s['tasks']} | {s['n']} | {s['test_accuracy']:.3f} | "
            f"{s['ci95'][0]:.3f}–{s['ci95'][1]:.3f} | {s['tokens_per_question']:.0f} | {s['calls_per_question']:.1f} |"
        )
    return "\n".join(lines)


def stderr_say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def progress_events(say: Callable[[str], None], prefix: str, every: int = 4) -> Callable[[Any], None]:
    """An event sink that turns a long step's events into a few progress lines: each quarter of an
    evaluation, each GPO step (its budget and candidates' scores) and GPO's final choice."""

    def sink(event: Any) -> None:
        f = event.fields
        if event.name == "progress.advance" and f.get("total") and "step" not in f:  # GPO's steps: below
            step = max(1, f["total"] // every)
            if f["done"] % step == 0 and f["done"] < f["total"]:
                score = f" score {f['score']:.2f}" if "score" in f else ""
                say(f"{prefix}: {f['done']}/{f['total']}{score}")
        elif event.name == "gpo.step":
            scores = ", ".join(f"{s:.2f}" for s in f["scores"]) or "no candidate"
            say(f"{prefix}: step {f['step']} budget {f['budget']}: [{scores}] -> {f['current_score']:.2f}")
        elif event.name == "gpo.confirm":
            say(f"{prefix}: confirmed on the full valset {[round(s, 2) for s in f['scores']]}")

    return sink


def open_cache(path: Path, say: Callable[[str], None]) -> Any:
    """The run's request cache; says how many calls it already holds (a resumed run)."""
    from cotune.lm.cache import RequestCache

    cache = RequestCache(path)
    held = len(cache)
    say(f"request cache {path}: {held} calls held" + (" (resuming)" if held else ""))
    return cache


class OnModelThread:
    """An embedder that computes on an LM's model thread (`LM.run_compute`) and keeps every vector it made.

    torch work on any other thread (kNN's queries are embedded on evaluate's worker threads) starts another
    OpenMP team, and a process with more OpenMP threads than cores makes every later generation slower (the
    README's "Good to know"). So misses are computed on the model thread, and `embed` of texts seen before
    answers from memory without queueing behind the engine's generations: embed a rung's queries once
    before it runs (`warm`), and its calls never wait.
    """

    def __init__(self, inner: Any, lm: Any):
        self.inner, self.lm = inner, lm
        self._vectors: dict[str, Any] = {}
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Any:
        import numpy as np

        texts = [str(t) for t in texts]
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing or not texts:
            vectors = self.lm.run_compute(lambda: self.inner.embed(missing))
            with self._lock:
                self._vectors.update(zip(missing, vectors, strict=True))
            if not texts:
                return vectors
        with self._lock:
            return np.stack([self._vectors[t] for t in texts])

    def warm(self, texts: Sequence[str]) -> None:
        """Embed ``texts`` now, in one call on the model thread."""
        self.embed(list(texts))

    def __repr__(self) -> str:
        return f"{self.inner!r} on the model thread"


def make_embedder(kind: str, lm: Any) -> Any:
    """TF-IDF ("tfidf"), or the default embedder (MiniLM when installed) computing on ``lm``'s model thread."""
    from cotune.retrieve.embed import TfidfEmbedder, default_embedder

    if kind == "tfidf":
        return TfidfEmbedder()
    embedder = default_embedder()
    return embedder if isinstance(embedder, TfidfEmbedder) else OnModelThread(embedder, lm)


def require_models(*names: str) -> None:
    """Fail now, before hours of work, where a model a later rung needs could not be loaded: an unknown name, or
    a registered model neither converted nor installed (`cotune.lm.registry.check`; the message gives the pip
    command)."""
    from cotune.lm import registry

    for name in names:
        registry.check(name)


def default_loader(dtype: str = "auto") -> Callable[[str, Any], Any]:
    """``load(name, cache)``: a registered model (or folder) loaded on this machine with ``cache``."""

    def load(name: str, cache: Any) -> Any:
        import cotune.lm

        return cotune.lm.load(name, cache=cache, dtype=dtype)

    return load


def settings_of(args: Any) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def earlier_run(path: Path, args: Any, same: Sequence[str], say: Callable[[str], None]) -> dict[str, Any] | None:
    """The results file at ``path`` written by an earlier run of the same ladder, if its settings ``same`` all
    equal this run's (``--fresh``: never). Its finished ladders are kept, not run again: the results file, once
    committed, carries a run that was cut off to another machine, where the request cache is not."""
    if getattr(args, "fresh", False) or not path.exists():
        return None
    import json

    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        say(f"{path}: not read ({exc}); every ladder runs")
        return None
    theirs, ours = earlier.get("settings", {}), settings_of(args)
    differ = [k for k in same if theirs.get(k) != ours.get(k)]
    if differ:
        shown = ", ".join(f"{k}={theirs.get(k)!r} there, {ours.get(k)!r} here" for k in differ)
        say(f"{path}: written with other settings ({shown}); every ladder runs, and the file is replaced")
        return None
    return earlier


def kept_rungs(earlier: Mapping[str, Any] | None, task: str, model: str) -> dict[str, dict[str, Any]]:
    """Task ``task``'s finished rungs on ``model`` in an earlier results file's ``tasks``, by name, each with the
    commit that computed it."""
    if earlier is None:
        return {}
    rows = (earlier.get("tasks", {}).get(task) or {}).get("rungs", [])
    return {r["rung"]: with_commit(earlier, r) for r in rows if r.get("model") == model}


def kept_ladder(earlier: Mapping[str, Any] | None, section: str, task: str, model: str) -> dict[str, Any] | None:
    """Task ``task``'s finished ladder on ``model`` in section ``section`` of an earlier results file, with the
    commit that computed it (the file's, where the entry does not say its own)."""
    if earlier is None:
        return None
    entry = earlier.get(section, {}).get(task)
    if not entry or entry.get("model") != model:
        return None
    return with_commit(earlier, entry)


def with_commit(earlier: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """``entry`` of an earlier results file with the commit that computed it: its own, else the file's."""
    return {"commit": earlier.get("commit")} | entry
