"""Terminal rendering for the CLI: progress bars from library events, result tables."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from cotune.events import Event
from cotune.experiment.results import wall_per_uncached_call
from cotune.optimize.strategy import StepKind, last_kind, parse_strategy
from cotune.report.costs import fmt_seconds


class RichEvents:
    """An event sink that turns ``progress.*`` events into rich progress bars and ``log`` events into lines.

    Without a terminal (a log file, CI, nohup) bars show nothing until the end, so each finished or failed
    run node is also printed as one plain line: seed, strategy, scores, elapsed time and an estimate of
    the time left; and a phase that runs longer than a minute (a Θ step's rollouts or training, an
    evaluation) prints how far it got once a minute, so a long run is never silent for long.
    """

    HEARTBEAT_S = 60.0

    def __init__(self, console: Console):
        self.console = console
        self._plain = not console.is_terminal
        self._started = time.monotonic()
        self._nodes_total: int | None = None
        self._nodes_seen = 0
        self._kinds_left: list[str] | None = None  # the last step kind of every node not yet finished
        self._node_started: dict[tuple[Any, Any], float] = {}
        self._seconds_by_kind: dict[str, list[float]] = {}
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[postfix]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[int, Any] = {}
        self._phases: dict[int, list[Any]] = {}  # plain: description, start, last line's time
        self._lock = threading.Lock()
        self._open = 0

    def __call__(self, event: Event) -> None:
        f = event.fields
        if self._plain and event.name in ("run.start", "node.start", "node.done", "node.failed", "node.skipped"):
            self._plain_line(event.name, f)
        if self._plain and event.name.startswith("progress."):
            self._heartbeat(event.name, f)
        with self._lock:
            if event.name == "progress.start":
                if self._open == 0:
                    self._progress.start()
                self._open += 1
                self._tasks[f["id"]] = self._progress.add_task(f["description"], total=f.get("total"), postfix="")
            elif event.name == "progress.advance" and f["id"] in self._tasks:
                postfix = "  ".join(_fmt(k, v) for k, v in f.items() if k not in {"id", "done", "total", "advance"})
                self._progress.update(self._tasks[f["id"]], advance=f.get("advance", 1), postfix=postfix)
            elif event.name == "progress.end" and f["id"] in self._tasks:
                self._progress.stop_task(self._tasks.pop(f["id"]))
                self._open -= 1
                if self._open == 0:
                    self._progress.stop()
                    self._progress = _fresh(self._progress, self.console)
            elif event.name == "log":
                self.console.log(f.get("message", ""))

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._progress.stop()

    def _heartbeat(self, name: str, f: dict[str, Any]) -> None:
        """Plain output: a phase's progress once a minute (none for a phase that ends within its first)."""
        now = time.monotonic()
        with self._lock:
            if name == "progress.start":
                self._phases[f["id"]] = [f["description"], now, now]
                return
            phase = self._phases.pop(f["id"], None) if name == "progress.end" else self._phases.get(f["id"])
            if phase is None or name == "progress.end" or now - phase[2] < self.HEARTBEAT_S:
                return
            phase[2] = now
        total = f"/{f['total']}" if f.get("total") else ""
        postfix = "  ".join(_fmt(k, v) for k, v in f.items() if k not in {"id", "done", "total", "advance"})
        line = f"  {phase[0]}: {f.get('done')}{total}{'  ' + postfix if postfix else ''}  ({_clock(now - phase[1])})"
        self.console.print(line, highlight=False, markup=False)

    def _plain_line(self, name: str, f: dict[str, Any]) -> None:
        if name == "run.start":
            self._nodes_total, self._started = f.get("nodes"), time.monotonic()
            self._kinds_left = list(f["node_kinds"]) if f.get("node_kinds") else None
            return
        key = (f.get("seed"), f.get("strategy"))
        if name == "node.start":
            self._node_started[key] = time.monotonic()
            return
        kind = _node_kind(str(f.get("strategy", "")))
        if self._kinds_left is not None and kind in self._kinds_left:
            self._kinds_left.remove(kind)
        if name == "node.done" and key in self._node_started:
            self._seconds_by_kind.setdefault(kind, []).append(time.monotonic() - self._node_started.pop(key))
        self._nodes_seen += 1
        elapsed = time.monotonic() - self._started
        where = f"seed {f.get('seed')} {f.get('strategy')}"
        if name == "node.done":
            what = f"dev {100 * f['dev']:.1f}%  test {100 * f['test']:.1f}%"
        elif name == "node.failed":
            what = f"FAILED ({f.get('kind')}): {str(f.get('error', ''))[:200]}"
        else:
            what = "finished earlier"
        left = ""
        if self._nodes_total:
            done = f"{self._nodes_seen}/{self._nodes_total}"
            rest = self._nodes_total - self._nodes_seen
            eta = f", {self._eta(elapsed, rest)}" if rest > 0 else ""
            left = f"  [{done} nodes{eta}]"
        self.console.print(f"{where}: {what}  ({_clock(elapsed)} elapsed){left}", highlight=False, markup=False)

    def _eta(self, elapsed: float, rest: int) -> str:
        """The time left: each node left at the mean time of finished nodes of its kind (a Θ node costs several
        times a zero-shot one); until a kind has finished once, say so rather than guess."""
        if self._kinds_left is None:
            return f"about {_clock(elapsed / self._nodes_seen * rest)} left"
        unseen = [k for k in dict.fromkeys(self._kinds_left) if k not in self._seconds_by_kind]
        if unseen:
            return f"time left known after the first {', '.join(_KIND_NAMES.get(k, k) for k in unseen)} step"
        left = sum(sum(self._seconds_by_kind[k]) / len(self._seconds_by_kind[k]) for k in self._kinds_left)
        return f"about {_clock(left)} left"


_KIND_NAMES = {StepKind.PROMPT: "Π (p)", StepKind.WEIGHTS: "Θ (w)", "eval": "zero-shot"}


def _node_kind(strategy: str) -> str:
    """The kind of a node's own step, as the run's ``node_kinds`` name it ("eval" for zero-shot)."""
    return last_kind(parse_strategy(strategy)) or "eval"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _fresh(old: Progress, console: Console) -> Progress:
    return Progress(*old.columns, console=console, transient=False)


def _fmt(key: str, value: Any) -> str:
    """``key=value``, a float to 3 decimals, or in 3 significant digits where it is too small for them (a
    learning rate of 1.5e-4 is not 0.000)."""
    if isinstance(value, float):
        return f"{key}={value:.3f}" if value == 0 or abs(value) >= 0.01 else f"{key}={value:.2e}"
    return f"{key}={value}"


def evaluation_table(title: str, summary: dict[str, Any], context: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for k, v in context.items():
        table.add_row(k, str(v))
    per_call = summary["usage_per_call"]
    table.add_row("accuracy", f"{summary['score']:.1%}  ({summary['n']} examples, metric {summary['metric']})")
    table.add_row("parse failures", str(summary["parse_failures"]))
    table.add_row("errors", str(summary["errors"]))
    table.add_row("format adherence", f"{summary['format_adherence']:.1%}")
    table.add_row("LM calls", f"{summary['usage']['calls']} ({summary['usage']['cache_hits']} from cache)")
    table.add_row(
        "tokens per call", f"{per_call['prompt_tokens']:.0f} prompt, {per_call['completion_tokens']:.0f} completion"
    )
    table.add_row("wall time", f"{summary['seconds']:.1f} s")
    # Wall time over the calls that reached the model: a call's own latency includes its wait in a batch.
    table.add_row("wall time per uncached call", fmt_seconds(wall_per_uncached_call(summary), " s"))
    return table


def rows_table(rows: list[Any], limit: int = 8) -> Table:
    table = Table(title=f"first {min(limit, len(rows))} predictions", title_justify="left")
    for col in ("#", "gold", "prediction", "score"):
        table.add_column(col, overflow="fold")
    for r in rows[:limit]:
        gold = "; ".join(str(v) for v in r.labels.values() if isinstance(v, (str, int, float)))[:60]
        if r.prediction is not None:
            pred = "; ".join(f"{v}" for k, v in r.prediction.items() if k != "reasoning")[:60]
        else:
            pred = f"[red]{r.error_kind}[/]: {(r.raw or r.error or '')[:50]!r}"
        table.add_row(str(r.index), gold, pred, f"{r.score:.2f}")
    return table


def results_table(results: dict[str, Any]) -> Table:
    """The Table-1-style summary of a run: one row per strategy, mean ± std over seeds."""
    cfg = results["config"]
    seeds = len(cfg.get("seeds", []))
    table = Table(title=f"{cfg['task']} · {cfg['model']} · test accuracy over {seeds} seed(s)", title_justify="left")
    for col in (
        "strategy",
        "test",
        "dev",
        "prompt tok/call",
        "wall s/uncached call",
        "format ok",
        "optimize s",
        "train s",
    ):
        table.add_column(col, justify="right" if col != "strategy" else "left")
    rows = results["table"]
    best = max((r["test_mean"] for r in rows), default=None)
    for r in rows:
        test = f"{r['test_mean']:.1%} ± {r['test_std']:.1%}"
        if r["test_mean"] == best:
            test = f"[bold green]{test}[/]"
        table.add_row(
            r["strategy"],
            test,
            f"{r['dev_mean']:.1%} ± {r['dev_std']:.1%}",
            f"{r['prompt_tokens_per_call']:.0f}",
            fmt_seconds(r["seconds_per_call"]),
            f"{r['format_adherence']:.0%}",
            f"{r['optimize_seconds']:.0f}",
            f"{r['train_seconds']:.0f}",
        )
    return table
