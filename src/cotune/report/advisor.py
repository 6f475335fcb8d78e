"""Prompt or fine-tune? The answer from measurements: accuracy, tokens, latency and training time per
strategy, turned into cost per day at a call volume and prices, the break-even volume at which a
fine-tuned program with a short prompt becomes cheaper than a few-shot one, and a recommendation that
follows the evidence (prompt optimization first; fine-tune when the accuracy gap or the volume pays for it).

The default prices are placeholders, not quotes: set the ones you pay.

Example:
    >>> break_even_calls_per_day(cost_per_call_finetuned=0.0001, one_off_finetuned=3.0,
    ...                          cost_per_call_prompted=0.0004, one_off_prompted=0.0, horizon_days=10)
    1000.0
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from cotune.experiment.rundir import RunDir
from cotune.report.costs import (
    DEFAULT_CALLS_PER_DAY,
    DEFAULT_HORIZON_DAYS,
    DEFAULT_PRICE_PER_1M_COMPLETION_TOKENS,
    DEFAULT_PRICE_PER_1M_PROMPT_TOKENS,
    DEFAULT_PRICE_PER_TRAINING_HOUR,
    Advice,
    BreakEven,
    CostRow,
    Prices,
    Recommendation,
    break_even_calls_per_day,
    break_even_pairs,
    cost_row,
    fmt_money,
    fmt_price,
    fmt_seconds,
    fmt_volume,
    run_table,
)
from cotune.report.recommend import dominated_by, recommend
from cotune.report.run_data import RunData, load_runs


def advise(
    run_dirs: str | Path | RunDir | Iterable[str | Path | RunDir],
    *,
    calls_per_day: float = DEFAULT_CALLS_PER_DAY,
    price_per_1m_prompt_tokens: float = DEFAULT_PRICE_PER_1M_PROMPT_TOKENS,
    price_per_1m_completion_tokens: float = DEFAULT_PRICE_PER_1M_COMPLETION_TOKENS,
    price_per_training_hour: float = DEFAULT_PRICE_PER_TRAINING_HOUR,
    horizon_days: float = DEFAULT_HORIZON_DAYS,
    finetuned_price_factor: float = 1.0,
) -> Advice:
    """Cost table, break-even volumes and a recommendation for the strategies in one or more run directories.

    Raises:
        ConfigError: a path is not a finished run directory, or a price is negative.
    """
    prices = Prices(
        calls_per_day,
        price_per_1m_prompt_tokens,
        price_per_1m_completion_tokens,
        price_per_training_hour,
        horizon_days,
        finetuned_price_factor,
    )
    return advise_runs(load_runs(run_dirs), prices)


def advise_runs(runs: Sequence[RunData], prices: Prices) -> Advice:
    """`advise` on runs already loaded (the report shares them)."""
    advice = Advice(prices, [], [])
    for run in runs:
        rows = [cost_row(run, r, prices) for r in run_table(run)]
        pairs = break_even_pairs(rows, prices)
        advice.rows += rows
        advice.break_even += pairs
        advice.recommendations.append(recommend(rows, pairs, prices))
    return advice


# -- rendering -------------------------------------------------------------------------------------------
COST_HEADER = [
    "run",
    "strategy",
    "test acc. (%)",
    "format ok",
    "prompt tok/call",
    "compl. tok/call",
    "LM calls/req.",
    "wall s / uncached call",
    "train (s)",
    "optimize (s)",
    "cost/day",
    "one-off",
    "total over horizon",
]
BREAK_EVEN_HEADER = ["run", "fine-tuned", "vs prompt-only", "test acc. (%)", "break-even", "why"]


def cost_cells(advice: Advice) -> list[list[str]]:
    """The cost table as display strings (shared by the Markdown, HTML and terminal renderings)."""
    out = []
    for r in advice.rows:
        acc = f"{100 * r.test_mean:.1f} ± {100 * r.test_std:.1f}" if r.seeds > 1 else f"{100 * r.test_mean:.1f}"
        out.append(
            [
                r.label,
                r.strategy,
                acc,
                f"{100 * r.format_adherence:.0f}%",
                f"{r.prompt_tokens_per_call:,.0f}",
                f"{r.completion_tokens_per_call:,.0f}",
                f"{r.calls_per_example:.2g}",
                fmt_seconds(r.seconds_per_call),
                f"{r.train_seconds:,.0f}",
                f"{r.optimize_seconds:,.0f}",
                fmt_money(r.cost_per_day),
                fmt_money(r.one_off_cost),
                fmt_money(r.horizon_cost),
            ]
        )
    return out


def break_even_cells(advice: Advice) -> list[list[str]]:
    return [
        [
            b.label,
            b.finetuned,
            b.prompted,
            f"{100 * b.finetuned_accuracy:.1f} vs {100 * b.prompted_accuracy:.1f}",
            fmt_volume(b.calls_per_day),
            b.reason,
        ]
        for b in advice.break_even
    ]


def assumptions_text(prices: Prices) -> str:
    text = (
        f"Projected at {prices.calls_per_day:,.0f} requests/day, {fmt_price(prices.price_per_1m_prompt_tokens)} per 1M "
        f"prompt tokens, {fmt_price(prices.price_per_1m_completion_tokens)} per 1M completion tokens, "
        f"{fmt_price(prices.price_per_training_hour)} per optimization/training hour, one-off costs over "
        f"{prices.horizon_days:g} days"
    )
    if prices.finetuned_price_factor != 1:
        text += f", token prices × {prices.finetuned_price_factor:g} for fine-tuned programs"
    defaults = Prices()
    if (prices.price_per_1m_prompt_tokens, prices.price_per_1m_completion_tokens, prices.price_per_training_hour) == (
        defaults.price_per_1m_prompt_tokens,
        defaults.price_per_1m_completion_tokens,
        defaults.price_per_training_hour,
    ):
        text += " (placeholder prices: pass your own)"
    return (
        text
        + ". Accuracy is on the test split, mean ± std over seeds (strategies are chosen on dev); optimization time includes training."
    )


__all__ = [
    "BREAK_EVEN_HEADER",
    "COST_HEADER",
    "DEFAULT_CALLS_PER_DAY",
    "DEFAULT_HORIZON_DAYS",
    "DEFAULT_PRICE_PER_1M_COMPLETION_TOKENS",
    "DEFAULT_PRICE_PER_1M_PROMPT_TOKENS",
    "DEFAULT_PRICE_PER_TRAINING_HOUR",
    "Advice",
    "BreakEven",
    "CostRow",
    "Prices",
    "Recommendation",
    "RunData",
    "advise",
    "advise_runs",
    "assumptions_text",
    "break_even_calls_per_day",
    "break_even_cells",
    "break_even_pairs",
    "cost_cells",
    "cost_row",
    "dominated_by",
    "fmt_money",
    "fmt_volume",
    "load_runs",
    "recommend",
    "run_table",
]
