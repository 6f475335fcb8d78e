"""The experiment report: one Markdown file and one self-contained HTML page with the same content.

Built from one or more run directories (tasks × models combine into one table): a Table-1-style matrix of
test accuracy, the last step against the best step picked on dev, a plot of score by step per strategy, a
plot of accuracy against prompt tokens per call, the advisor's cost table and recommendation, and the
learned instructions and demos per predictor.

The content is built once as a list of blocks and rendered twice, so the two files cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cotune.experiment.node_record import node_records
from cotune.experiment.rundir import RunDir
from cotune.files import write_text_atomic
from cotune.optimize.strategy import StepKind, parse_strategy, strategy_name
from cotune.report import advisor as adv
from cotune.report import plots
from cotune.report.blocks import (
    Block,
    Code,
    Figure,
    Heading,
    Para,
    Table,
    markdown_table,
    md_escape,
    to_html,
    to_markdown,
)
from cotune.report.costs import fmt_seconds

MAX_DEMOS, MAX_VALUE_CHARS, MAX_INSTRUCTION_CHARS = 6, 240, 2000


def write_report(
    run_dirs: str | Path | RunDir | Iterable[str | Path | RunDir],
    out_dir: str | Path | None = None,
    *,
    prices: adv.Prices | None = None,
) -> tuple[Path, Path]:
    """Write ``report.md`` (with its SVG plots in ``report-plots/``) and ``report.html`` (one file).

    Args:
        run_dirs: one or more finished run directories.
        out_dir: where to write; by default the first run directory.
        prices: volume and prices for the cost section (`Prices` defaults are placeholders).

    Returns:
        The paths of the Markdown and HTML files.

    Raises:
        ConfigError: a path is not a finished run directory.
    """
    runs = adv.load_runs(run_dirs)
    out = Path(out_dir) if out_dir is not None else runs[0].path
    blocks = build_report(runs, prices or adv.Prices())
    title = "cotune report: " + ", ".join(r.label for r in runs)
    plot_dir = out / "report-plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for b in blocks:
        if isinstance(b, Figure):
            write_text_atomic(plot_dir / f"{b.name}.svg", b.svg)
    md_path, html_path = out / "report.md", out / "report.html"
    write_text_atomic(md_path, to_markdown(blocks, title, plot_dir.name))
    write_text_atomic(html_path, to_html(blocks, title))
    return md_path, html_path


def build_report(runs: list[adv.RunData], prices: adv.Prices) -> list[Block]:
    strategies = list(dict.fromkeys(s for r in runs for s in r.strategies))
    colors = {s: plots.color_for(i) for i, s in enumerate(strategies)}
    tables = {r.label: {row["strategy"]: row for row in adv.run_table(r)} for r in runs}
    advice = adv.advise_runs(runs, prices)
    today = dt.date.today().isoformat()
    blocks: list[Block] = [Para(f"Generated {today} from " + "; ".join(f"{r.label}: {r.path}" for r in runs) + ".")]

    blocks += [Heading(2, "Test accuracy by strategy", "accuracy"), Para(_seeds_note(runs, tables))]
    blocks.append(accuracy_matrix(runs, strategies, tables))
    blocks += [
        Heading(2, "Last step against the best step picked on dev", "best-step"),
        Para(
            "Each multi-step strategy ends with its last step; picking instead the step with the best dev "
            "score (per seed, ties to the later step) gives this test accuracy, with the steps picked."
        ),
    ]
    blocks.append(best_step_table(runs, strategies))

    blocks += [
        Heading(2, "Score by step", "steps"),
        Para(
            "Each line follows a strategy's chain of steps from zero-shot (step 0); points are the mean "
            "test accuracy over seeds, bars the std. Strategies sharing a prefix share its points."
        ),
    ]
    step_tables = []
    for i, r in enumerate(runs):  # figures side by side first, then their numbers
        series, table = score_by_step(r, colors)
        steps = max((len(s.points) for s in series), default=1)
        labels = ["0 zero-shot", *(str(k) for k in range(1, steps))]
        blocks.append(
            Figure(
                f"score-by-step-{i + 1}",
                plots.line_chart(series, title=f"Score by step: {r.label}", x_labels=labels),
                f"Test accuracy after each step, {r.label}.",
            )
        )
        step_tables += [Para(f"{r.label}: dev / test accuracy (%) after each step, mean over seeds."), table]
    blocks += step_tables

    blocks += [
        Heading(2, "Accuracy against prompt tokens per call", "tokens"),
        Para("Up and to the left is better: as accurate with a shorter prompt. Numbers are in the cost table."),
    ]
    for i, r in enumerate(runs):
        points = [
            plots.Point(
                s,
                row["prompt_tokens_per_call"],
                row["test_mean"],
                row["test_std"] or None,
                colors[s],
                fmt_seconds(row["seconds_per_call"], " s wall per uncached call"),
            )
            for s, row in tables[r.label].items()
        ]
        blocks.append(
            Figure(
                f"accuracy-vs-tokens-{i + 1}",
                plots.scatter_chart(points, title=f"Accuracy vs prompt tokens: {r.label}"),
                f"One point per strategy, {r.label}.",
            )
        )

    blocks += [Heading(2, "Cost and recommendation: prompt or fine-tune?", "cost"), Para(adv.assumptions_text(prices))]
    blocks.append(Table(adv.COST_HEADER, adv.cost_cells(advice), css="cost"))
    if advice.break_even:
        blocks.append(Table(adv.BREAK_EVEN_HEADER, adv.break_even_cells(advice), css="break-even"))
    for rec in advice.recommendations:
        blocks.append(Para(rec.text, lead=f"Recommendation ({rec.label}): " if len(runs) > 1 else "Recommendation: "))

    coverage = [t for r in runs if (t := theta_coverage(r)) is not None]
    if coverage:
        blocks += [
            Heading(2, "What the Θ steps learned from", "coverage"),
            Para(
                "A Θ step trains on the runs that passed; these are the training examples they cover, "
                "overall and per class of the answer. A class with no kept run cannot be learned."
            ),
        ]
        blocks += coverage
        blocks += [Para(note) for r in runs if (note := skew_note(r)) is not None]

    blocks += [Heading(2, "Learned prompts", "prompts")]
    for r in runs:
        blocks += learned_prompts(r)
    return blocks


# -- sections --------------------------------------------------------------------------------------------
SKEW = 3  # a class kept this many times less often than the most common one is worth balancing


def skew_note(run: adv.RunData) -> str | None:
    """A hint when a Θ step trained, unbalanced, on kept runs whose classes are far apart in number."""
    skewed = []
    for n in node_records(run.nodes):
        cov = n.info.get("coverage_")
        if not cov or n.kind is not StepKind.WEIGHTS or n.info.get("balance_"):
            continue
        for field, by in cov.get("by_class", {}).items():
            kept = {c: v["covered"] for c, v in by.items() if v["covered"]}
            if len(kept) > 1 and min(kept.values()) * SKEW <= max(kept.values()):
                low, high = min(kept, key=kept.get), max(kept, key=kept.get)
                skewed.append(f"{n.strategy} (seed {n.seed}): {field} {low} {kept[low]} against {high} {kept[high]}")
    if not skewed:
        return None
    return (
        f"{run.label}: the kept runs of some Θ steps are skewed ({'; '.join(skewed)}); an adapter trained on them "
        "can learn the skew. The setting weights.balance_classes: true repeats the rarer classes' runs to even them out "
        "(on Iris it took the first Θ step from 80–92% to 92% on every training seed)."
    )


def theta_coverage(run: adv.RunData) -> Table | None:
    """One row per Θ node (strategy ending in w, per seed): kept runs, examples covered, per-class coverage."""
    rows = []
    for n in node_records(run.nodes):
        cov = n.info.get("coverage_")
        if not cov or n.kind is not StepKind.WEIGHTS:
            continue
        classes = "; ".join(
            f"{field}: " + ", ".join(f"{c} {v['covered']}/{v['total']}" for c, v in by.items())
            for field, by in cov.get("by_class", {}).items()
        )
        ex = cov["examples"]
        kept = n.info.get("n_passed_", "?")
        balance = n.info.get("balance_")
        repeated = ", ".join(f"{c} ×{k}" for c, k in balance["repeats"].items() if k > 1) if balance else ""
        row = [n.strategy, str(n.seed), str(kept), f"{ex['covered']}/{ex['total']}", classes or "–"]
        rows.append(row + [repeated or ("none repeated" if balance else "off")])
    if not rows:
        return None
    header = [f"{run.label}: strategy", "seed", "kept runs", "examples covered", "per class", "balanced"]
    if all(r[-1] == "off" for r in rows):  # a run without class balancing: no column of "off"
        header, rows = header[:-1], [r[:-1] for r in rows]
    return Table(header, rows, css="coverage")


def accuracy_matrix(runs: list[adv.RunData], strategies: list[str], tables: dict[str, dict[str, dict]]) -> Table:
    """Rows strategies, columns runs (task, and model when several); the best mean per column in bold."""
    t = Table(["strategy", *(r.label for r in runs)], [], css="matrix")
    for s in strategies:
        t.rows.append([s, *(_mean_std(tables[r.label][s]) if s in tables[r.label] else "–" for r in runs)])
    for c, r in enumerate(runs, start=1):
        means = {s: row["test_mean"] for s, row in tables[r.label].items()}
        if means:
            top = max(means.values())
            t.bold |= {(i, c) for i, s in enumerate(strategies) if s in means and means[s] >= top - 1e-12}
    return t


def best_step_table(runs: list[adv.RunData], strategies: list[str]) -> Table:
    multi = [s for s in strategies if len(parse_strategy(s)) > 1]
    t = Table(
        ["strategy", *(f"{r.label}: last" for r in runs), *(f"{r.label}: best on dev" for r in runs)],
        [],
        css="best-step",
    )
    for s in multi:
        last, best = [], []
        for r in runs:
            by_key = {(n["seed"], n["strategy"]): n for n in r.nodes}
            picks = []
            for seed in sorted({n["seed"] for n in r.nodes if n["strategy"] == s}):
                chain = [by_key[(seed, p)] for p in _chain(s) if (seed, p) in by_key]
                picks.append(max(reversed(chain), key=lambda n: n["dev"]["score"]))  # ties: the later step
            last.append(_fmt_scores([n["test"]["score"] for _, n in _seeds_of(r, s)]))
            counts = ", ".join(f"{p} ×{n}" for p, n in _count(n["strategy"] for n in picks).items())
            best.append(f"{_fmt_scores([n['test']['score'] for n in picks])} ({counts})" if picks else "–")
        t.rows.append([s, *last, *best])
    return t


def score_by_step(run: adv.RunData, colors: dict[str, str]) -> tuple[list[plots.Series], Table]:
    """One series per strategy along its chain of prefixes, and the same numbers as a table (dev / test)."""
    by_key = {(n["seed"], n["strategy"]): n for n in run.nodes}
    series, rows, width = [], [], 1
    for s in run.strategies:
        seeds = [seed for seed, _ in _seeds_of(run, s)]
        if not seeds:
            continue
        points, cells = [], []
        for k, prefix in enumerate(_chain(s)):
            nodes = [by_key[(seed, prefix)] for seed in seeds if (seed, prefix) in by_key]
            if not nodes:
                continue
            test = [n["test"]["score"] for n in nodes]
            dev = [n["dev"]["score"] for n in nodes]
            points.append((k, statistics.fmean(test), statistics.stdev(test) if len(test) > 1 else None))
            cells.append(f"{prefix}: {100 * statistics.fmean(dev):.1f} / {100 * statistics.fmean(test):.1f}")
        width = max(width, len(cells))
        series.append(plots.Series(s, points, colors.get(s, plots.PALETTE[0])))
        rows.append([s, *cells])
    header = ["strategy", *(f"step {k} (dev / test)" for k in range(width))]
    return series, Table(header, [r + [""] * (width + 1 - len(r)) for r in rows], css="steps")


def learned_prompts(run: adv.RunData) -> list[Block]:
    """Per strategy, the program of the seed with the best dev score: instruction and demos per predictor."""
    blocks: list[Block] = [Heading(3, f"{run.label}")]
    seen: dict[str, str] = {}
    for s in run.strategies:
        nodes = [n for n in run.nodes if n["strategy"] == s]
        if not nodes:
            continue
        node = max(sorted(nodes, key=lambda n: n["seed"]), key=lambda n: n["dev"]["score"])
        adapter = f", adapter {_relative(node['adapter'], run.path)}" if node.get("adapter") else ""
        blocks.append(Heading(4, f"{s}: seed {node['seed']} (best dev {100 * node['dev']['score']:.1f}%){adapter}"))
        path = run.path / str(node.get("program", ""))
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            blocks.append(Para(f"No readable program.json at {path}."))
            continue
        predictors = state.get("predictors", {})
        key = json.dumps(predictors, sort_keys=True, default=str)
        if key in seen:
            blocks.append(Para(f"Same instructions and demos as {seen[key]} (the weights may differ)."))
            continue
        seen[key] = s
        for name, p in predictors.items():
            demos = p.get("demos", [])
            blocks.append(
                Para(
                    f"{name} ({_signature(p.get('signature', {}))}), {len(demos)} demo{'' if len(demos) == 1 else 's'}.",
                    lead="Predictor ",
                )
            )
            blocks.append(Code(_truncate(p.get("instruction", ""), MAX_INSTRUCTION_CHARS) or "(no instruction)"))
            if demos:
                blocks.append(Code(_demos_text(demos)))
    return blocks


# -- rendering (advisor tables for `cotune advise`) --------------------------------------------------------
def advice_markdown(advice: adv.Advice) -> str:
    """The advisor's cost and break-even tables and recommendation as Markdown (for `cotune advise`)."""
    parts = [
        md_escape(adv.assumptions_text(advice.prices)),
        "",
        markdown_table(adv.COST_HEADER, adv.cost_cells(advice)),
    ]
    if advice.break_even:
        parts += ["", markdown_table(adv.BREAK_EVEN_HEADER, adv.break_even_cells(advice))]
    for rec in advice.recommendations:
        lead = f"Recommendation ({rec.label}):" if len(advice.recommendations) > 1 else "Recommendation:"
        parts += ["", f"**{md_escape(lead)}** {md_escape(rec.text)}"]
    return "\n".join(parts)


# -- helpers ---------------------------------------------------------------------------------------------
def _chain(strategy: str) -> list[str]:
    steps = parse_strategy(strategy)
    return [strategy_name(steps[:k]) for k in range(len(steps) + 1)]


def _seeds_of(run: adv.RunData, strategy: str) -> list[tuple[int, dict]]:
    return sorted(((n["seed"], n) for n in run.nodes if n["strategy"] == strategy), key=lambda x: x[0])


def _count(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


def _mean_std(row: dict[str, Any]) -> str:
    if len(row["seeds"]) > 1:
        return f"{100 * row['test_mean']:.1f} ± {100 * row['test_std']:.1f}"
    return f"{100 * row['test_mean']:.1f}"


def _fmt_scores(scores: list[float]) -> str:
    if not scores:
        return "–"
    if len(scores) == 1:
        return f"{100 * scores[0]:.1f}"
    return f"{100 * statistics.fmean(scores):.1f} ± {100 * statistics.stdev(scores):.1f}"


def _seeds_note(runs: list[adv.RunData], tables: dict[str, dict[str, dict]]) -> str:
    counts = sorted({len(row["seeds"]) for t in tables.values() for row in t.values()})
    seeds = " or ".join(str(c) for c in counts) or "0"
    spread = "mean ± std over seeds" if counts and max(counts) > 1 else "one seed, so no spread is shown"
    return f"Test accuracy in %, {spread} ({seeds} seeds per cell); the best mean in each column is in bold."


def _signature(sig: dict[str, Any]) -> str:
    names = [[f.get("name", "?") for f in sig.get(k, [])] for k in ("inputs", "outputs")]
    return f"{', '.join(names[0])} -> {', '.join(names[1])}"


def _demos_text(demos: list[dict[str, Any]]) -> str:
    parts = []
    for i, d in enumerate(demos[:MAX_DEMOS], start=1):
        fields = [
            f"  {k}: {_truncate(str(v), MAX_VALUE_CHARS)}".replace("\n", "\n    ")
            for k, v in d.items()
            if not str(k).startswith("_")
        ]
        parts.append(f"demo {i}\n" + "\n".join(fields))
    if len(demos) > MAX_DEMOS:
        parts.append(f"… and {len(demos) - MAX_DEMOS} more demos")
    return "\n".join(parts)


def _relative(path: str, base: Path) -> str:
    """A path inside the run directory, written relative to it (shorter, and still true if the folder moves)."""
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return path


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + f" … ({len(text) - limit} more characters)"
