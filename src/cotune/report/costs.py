"""The cost model of the advisor: prices, per-strategy cost rows projected from a run's measurements, and
the break-even volume at which a fine-tuned strategy becomes cheaper than a prompt-only one."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from cotune.errors import ConfigError
from cotune.experiment.node_record import node_records
from cotune.experiment.results import summarize
from cotune.optimize.strategy import StepKind, parse_strategy
from cotune.report.run_data import RunData

# Placeholders near list prices of hosted small models and of one rented GPU hour (USD); a user should
# pass their own. Training price is per hour of the machine that optimizes and trains.
DEFAULT_CALLS_PER_DAY = 10_000
DEFAULT_PRICE_PER_1M_PROMPT_TOKENS = 0.15
DEFAULT_PRICE_PER_1M_COMPLETION_TOKENS = 0.60
DEFAULT_PRICE_PER_TRAINING_HOUR = 2.00
DEFAULT_HORIZON_DAYS = 30


@dataclass(frozen=True)
class Prices:
    """The volume and prices costs are projected with.

    Attributes:
        calls_per_day: program calls (requests) per day; each makes ``calls_per_example`` LM calls.
        price_per_1m_prompt_tokens / price_per_1m_completion_tokens: token prices.
        price_per_training_hour: price of one hour of optimization or training.
        horizon_days: days over which one-off optimization/training costs are paid back.
        finetuned_price_factor: multiplier on token prices for programs with a weight step (hosted
            fine-tuned models often cost more per token than their base model).
    """

    calls_per_day: float = DEFAULT_CALLS_PER_DAY
    price_per_1m_prompt_tokens: float = DEFAULT_PRICE_PER_1M_PROMPT_TOKENS
    price_per_1m_completion_tokens: float = DEFAULT_PRICE_PER_1M_COMPLETION_TOKENS
    price_per_training_hour: float = DEFAULT_PRICE_PER_TRAINING_HOUR
    horizon_days: float = DEFAULT_HORIZON_DAYS
    finetuned_price_factor: float = 1.0

    def __post_init__(self) -> None:
        bad = [
            f"{k}={v!r} (must be >= 0)" for k, v in asdict(self).items() if not (isinstance(v, int | float) and v >= 0)
        ]
        if self.horizon_days <= 0:
            bad.append(f"horizon_days={self.horizon_days!r} (must be > 0)")
        if bad:
            raise ConfigError("invalid advisor prices: " + "; ".join(bad))


@dataclass
class CostRow:
    """One strategy of one run, measured (mean over seeds) and projected. Strategies are compared on dev
    (``dev_mean``), as the runner picks its best program; accuracy is reported on test."""

    label: str
    task: str
    model: str
    strategy: str
    seeds: int
    test_mean: float
    test_std: float
    test_n: float
    format_adherence: float
    prompt_tokens_per_call: float
    completion_tokens_per_call: float
    calls_per_example: float
    seconds_per_call: float | None  # test wall time per uncached call; None: every call was cached
    train_seconds: float
    optimize_seconds: float
    finetuned: bool
    cost_per_request: float = 0.0
    cost_per_day: float = 0.0
    one_off_cost: float = 0.0
    horizon_cost: float = 0.0
    dev_mean: float = float("nan")
    dev_std: float = 0.0
    dev_n: float = 0.0


@dataclass
class BreakEven:
    """Where the fine-tuned strategy becomes cheaper than the prompt-only one; None: never."""

    label: str
    finetuned: str
    prompted: str
    calls_per_day: float | None
    reason: str
    finetuned_accuracy: float = float("nan")
    prompted_accuracy: float = float("nan")


@dataclass
class Recommendation:
    label: str
    strategy: str | None
    text: str


@dataclass
class Advice:
    """The advisor's answer: `rows` per strategy, `break_even` per (fine-tuned, prompt-only) pair, and one
    `Recommendation` per run (task × model)."""

    prices: Prices
    rows: list[CostRow]
    break_even: list[BreakEven]
    recommendations: list[Recommendation] = field(default_factory=list)

    @property
    def recommendation(self) -> str:
        if len(self.recommendations) == 1:
            return self.recommendations[0].text
        return "\n\n".join(f"{r.label}: {r.text}" for r in self.recommendations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prices": asdict(self.prices),
            "rows": [asdict(r) for r in self.rows],
            "break_even": [asdict(b) for b in self.break_even],
            "recommendations": [asdict(r) for r in self.recommendations],
            "recommendation": self.recommendation,
        }


def run_table(run: RunData) -> list[dict[str, Any]]:
    """The run's Table-1 rows, each with the mean test-set size ``test_n`` added."""
    nodes = node_records(run.nodes)
    table = run.results.get("table") or summarize(nodes, run.strategies)
    out = []
    for row in table:
        ns = [n.test.get("n", 0) for n in nodes if n.strategy == row["strategy"]]
        dev_ns = [n.dev.get("n", 0) for n in nodes if n.strategy == row["strategy"]]
        out.append(
            row | {"test_n": sum(ns) / len(ns) if ns else 0.0, "dev_n": sum(dev_ns) / len(dev_ns) if dev_ns else 0.0}
        )
    return out


def cost_row(run: RunData, row: dict[str, Any], prices: Prices) -> CostRow:
    finetuned = StepKind.WEIGHTS in parse_strategy(row["strategy"])
    factor = prices.finetuned_price_factor if finetuned else 1.0
    per_lm_call = (
        (
            row["prompt_tokens_per_call"] * prices.price_per_1m_prompt_tokens
            + row["completion_tokens_per_call"] * prices.price_per_1m_completion_tokens
        )
        / 1e6
        * factor
    )
    # Optimization time includes the training inside it; never count less than the training alone.
    hours = max(row["optimize_seconds"], row["train_seconds"]) / 3600
    c = CostRow(
        label=run.label,
        task=run.task,
        model=run.model,
        strategy=row["strategy"],
        seeds=len(row["seeds"]),
        test_mean=row["test_mean"],
        test_std=row["test_std"],
        test_n=row["test_n"],
        format_adherence=row["format_adherence"],
        prompt_tokens_per_call=row["prompt_tokens_per_call"],
        completion_tokens_per_call=row["completion_tokens_per_call"],
        calls_per_example=row["calls_per_example"],
        seconds_per_call=row["seconds_per_call"],
        train_seconds=row["train_seconds"],
        optimize_seconds=row["optimize_seconds"],
        finetuned=finetuned,
        dev_mean=row.get("dev_mean", float("nan")),
        dev_std=row.get("dev_std", 0.0),
        dev_n=row.get("dev_n", 0.0),
    )
    c.cost_per_request = per_lm_call * row["calls_per_example"]
    c.cost_per_day = c.cost_per_request * prices.calls_per_day
    c.one_off_cost = hours * prices.price_per_training_hour
    c.horizon_cost = c.one_off_cost + c.cost_per_day * prices.horizon_days
    return c


def break_even_calls_per_day(
    *,
    cost_per_call_finetuned: float,
    one_off_finetuned: float,
    cost_per_call_prompted: float,
    one_off_prompted: float,
    horizon_days: float,
) -> float | None:
    """Calls per day above which the fine-tuned program costs less over ``horizon_days``, one-off costs
    included; 0.0 when it is cheaper at any volume, None when never (it does not cost less per call, or
    costs the same per call and no less to set up).

    Solves ``one_off_f + H·v·c_f = one_off_p + H·v·c_p`` for the volume ``v``.
    """
    saving = cost_per_call_prompted - cost_per_call_finetuned
    extra_once = one_off_finetuned - one_off_prompted
    if saving < 0 or (saving == 0 and extra_once >= 0):
        return None
    return max(extra_once, 0.0) / (horizon_days * saving) if saving > 0 else 0.0


def break_even_pairs(rows: Sequence[CostRow], prices: Prices) -> list[BreakEven]:
    """Every fine-tuned strategy against every few-shot (prompt-only, non-zero-shot) one of the same run."""
    out = []
    prompted = [r for r in rows if not r.finetuned and r.strategy != "zero-shot"]
    for f in (r for r in rows if r.finetuned):
        for p in prompted:
            v = break_even_calls_per_day(
                cost_per_call_finetuned=f.cost_per_request,
                one_off_finetuned=f.one_off_cost,
                cost_per_call_prompted=p.cost_per_request,
                one_off_prompted=p.one_off_cost,
                horizon_days=prices.horizon_days,
            )
            tokens_f = f.prompt_tokens_per_call * f.calls_per_example
            tokens_p = p.prompt_tokens_per_call * p.calls_per_example
            if v is None:
                reason = (
                    f"{f.strategy} does not cost less per request than {p.strategy} "
                    f"({tokens_f:,.0f} vs {tokens_p:,.0f} prompt tokens per request)"
                )
            elif v == 0:
                per_request = "less" if f.cost_per_request < p.cost_per_request else "the same"
                setup = "less" if f.one_off_cost < p.one_off_cost else "no more"
                reason = f"{f.strategy} costs {per_request} per request and {setup} to set up"
            else:
                reason = (
                    f"{f.strategy} uses {tokens_f:,.0f} instead of {tokens_p:,.0f} prompt tokens per request, "
                    f"paying back {fmt_money(f.one_off_cost - p.one_off_cost)} of extra one-off cost over "
                    f"{prices.horizon_days:g} days"
                )
            out.append(BreakEven(f.label, f.strategy, p.strategy, v, reason, f.test_mean, p.test_mean))
    return out


# -- number formats (the advisor's sentences and tables) ------------------------------------------------
def fmt_money(x: float, small: bool = False) -> str:
    """``$1,234.50``; amounts under a cent keep two significant digits, written out (``$0.0000025``)."""
    if small or 0 < abs(x) < 0.01:
        return "$" + format(Decimal(f"{x:.2g}"), "f")
    return f"${x:,.2f}"


def fmt_seconds(x: float | None, unit: str = "") -> str:
    """``0.12`` seconds, or an em dash where nothing was measured (every call came from the cache)."""
    return "—" if x is None else f"{x:.2f}{unit}"


def fmt_price(x: float) -> str:
    return f"${x:,.2f}" if round(x, 2) == x else f"${x:g}"


def fmt_volume(v: float | None) -> str:
    if v is None:
        return "never"
    if v == 0:
        return "any volume"
    return f"{math.ceil(round(v, 6)):,} calls/day"  # round first: 1000.0000000002 is 1000
