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

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from cotune.errors import ConfigError
from cotune.experiment.results import summarize
from cotune.experiment.rundir import RunDir

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
        bad = [f"{k}={v!r} (must be >= 0)" for k, v in asdict(self).items() if not (isinstance(v, int | float) and v >= 0)]
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
    seconds_per_call: float
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
    prices = Prices(calls_per_day, price_per_1m_prompt_tokens, price_per_1m_completion_tokens,
                    price_per_training_hour, horizon_days, finetuned_price_factor)
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


def run_table(run: RunData) -> list[dict[str, Any]]:
    """The run's Table-1 rows, each with the mean test-set size ``test_n`` added."""
    nodes, strategies = run.nodes, run.strategies
    table = run.results.get("table") or summarize(nodes, strategies)
    out = []
    for row in table:
        ns = [n["test"].get("n", 0) for n in nodes if n["strategy"] == row["strategy"]]
        dev_ns = [n["dev"].get("n", 0) for n in nodes if n["strategy"] == row["strategy"] and "dev" in n]
        out.append(row | {"test_n": sum(ns) / len(ns) if ns else 0.0,
                          "dev_n": sum(dev_ns) / len(dev_ns) if dev_ns else 0.0})
    return out


def cost_row(run: RunData, row: dict[str, Any], prices: Prices) -> CostRow:
    finetuned = "w" in row["strategy"].split("-")
    factor = prices.finetuned_price_factor if finetuned else 1.0
    per_lm_call = (row["prompt_tokens_per_call"] * prices.price_per_1m_prompt_tokens
                   + row["completion_tokens_per_call"] * prices.price_per_1m_completion_tokens) / 1e6 * factor
    # Optimization time includes the training inside it; never count less than the training alone.
    hours = max(row["optimize_seconds"], row["train_seconds"]) / 3600
    c = CostRow(
        label=run.label, task=run.task, model=run.model, strategy=row["strategy"], seeds=len(row["seeds"]),
        test_mean=row["test_mean"], test_std=row["test_std"], test_n=row["test_n"],
        format_adherence=row["format_adherence"], prompt_tokens_per_call=row["prompt_tokens_per_call"],
        completion_tokens_per_call=row["completion_tokens_per_call"], calls_per_example=row["calls_per_example"],
        seconds_per_call=row["seconds_per_call"], train_seconds=row["train_seconds"],
        optimize_seconds=row["optimize_seconds"], finetuned=finetuned,
        dev_mean=row.get("dev_mean", float("nan")), dev_std=row.get("dev_std", 0.0), dev_n=row.get("dev_n", 0.0),
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
                cost_per_call_finetuned=f.cost_per_request, one_off_finetuned=f.one_off_cost,
                cost_per_call_prompted=p.cost_per_request, one_off_prompted=p.one_off_cost,
                horizon_days=prices.horizon_days,
            )
            tokens_f = f.prompt_tokens_per_call * f.calls_per_example
            tokens_p = p.prompt_tokens_per_call * p.calls_per_example
            if v is None:
                reason = (f"{f.strategy} does not cost less per request than {p.strategy} "
                          f"({tokens_f:,.0f} vs {tokens_p:,.0f} prompt tokens per request)")
            elif v == 0:
                per_request = "less" if f.cost_per_request < p.cost_per_request else "the same"
                setup = "less" if f.one_off_cost < p.one_off_cost else "no more"
                reason = f"{f.strategy} costs {per_request} per request and {setup} to set up"
            else:
                reason = (f"{f.strategy} uses {tokens_f:,.0f} instead of {tokens_p:,.0f} prompt tokens per request, "
                          f"paying back {fmt_money(f.one_off_cost - p.one_off_cost)} of extra one-off cost over "
                          f"{prices.horizon_days:g} days")
            out.append(BreakEven(f.label, f.strategy, p.strategy, v, reason, f.test_mean, p.test_mean))
    return out


# -- loading --------------------------------------------------------------------------------------------
@dataclass
class RunData:
    """One finished run directory's ``results.json`` and its display label (task, plus model or folder
    name when needed to tell runs apart)."""

    path: Path
    results: dict[str, Any]
    label: str = ""

    @property
    def config(self) -> dict[str, Any]:
        return self.results.get("config", {})

    @property
    def task(self) -> str:
        return str(self.config.get("task", "?"))

    @property
    def model(self) -> str:
        return Path(str(self.config.get("model", "?"))).name

    @property
    def nodes(self) -> list[dict[str, Any]]:
        return self.results.get("nodes", [])

    @property
    def strategies(self) -> list[str]:
        return self.results.get("strategies") or list(dict.fromkeys(n["strategy"] for n in self.nodes))


def load_runs(run_dirs: str | Path | RunDir | Iterable[str | Path | RunDir]) -> list[RunData]:
    """Read ``results.json`` of each run directory and label the runs so that every label is unique.

    Raises:
        ConfigError: no run directory given, or one is not a (finished) run directory.
    """
    if isinstance(run_dirs, str | Path | RunDir):
        run_dirs = [run_dirs]
    runs = []
    for d in run_dirs:
        run = d if isinstance(d, RunDir) else RunDir.open(d)
        runs.append(RunData(run.path, run.results()))
    if not runs:
        raise ConfigError("no run directory given; pass one or more folders written by `cotune run`")
    several_models = len({r.model for r in runs}) > 1
    for r in runs:
        r.label = f"{r.task} · {r.model}" if several_models else r.task
    labels = [r.label for r in runs]
    for r in runs:
        if labels.count(r.label) > 1:  # same task and model twice: tell them apart by folder
            r.label = f"{r.label} ({r.path.name})"
    return runs


# -- the recommendation ----------------------------------------------------------------------------------
def _selection(r: CostRow) -> tuple[float, float, float]:
    """(mean, std, n) that strategies are compared on: dev, so the test set stays a fair report (runs
    written before dev was kept fall back to test)."""
    if math.isnan(r.dev_mean):
        return r.test_mean, r.test_std, r.test_n
    return r.dev_mean, r.dev_std, r.dev_n or r.test_n


def score(r: CostRow) -> float:
    """The accuracy strategies are chosen by (dev)."""
    return _selection(r)[0]


def noise(a: CostRow, b: CostRow) -> float:
    """How far apart two selection (dev) accuracies may be by chance: the larger of the spread over seeds
    and the sampling error of the split (a rough one-sigma rule, not a significance test)."""
    (ma, sa, na), (mb, sb, nb) = _selection(a), _selection(b)
    seeds = math.sqrt(sa**2 + sb**2)
    sampling = math.sqrt(_binomial_var(ma, na) + _binomial_var(mb, nb))
    return max(seeds, sampling)


def _binomial_var(mean: float, n: float) -> float:
    p = min(max(mean, 0.0), 1.0)
    return p * (1 - p) / n if n > 0 else 0.0


def _best(rows: Sequence[CostRow]) -> CostRow:
    """Most accurate on dev; among equals the cheapest over the horizon."""
    return max(rows, key=lambda r: (score(r), -r.horizon_cost))


def dominated_by(choice: CostRow, rows: Sequence[CostRow]) -> CostRow | None:
    """A strategy at least as accurate (dev) and at most as costly, better in one of the two; None if none is."""
    for r in rows:
        if r is not choice and score(r) >= score(choice) and r.horizon_cost <= choice.horizon_cost and (
            score(r) > score(choice) or r.horizon_cost < choice.horizon_cost
        ):
            return r
    return None


def recommend(rows: Sequence[CostRow], pairs: Sequence[BreakEven], prices: Prices) -> Recommendation:
    """Plain words that follow the evidence of one run (task × model)."""
    if not rows:
        return Recommendation("", None, "No finished strategies to compare yet.")
    label = rows[0].label
    prompt_rows = [r for r in rows if not r.finetuned]
    ft_rows = [r for r in rows if r.finetuned]
    notes: list[str] = []
    zero = next((r for r in rows if r.strategy == "zero-shot"), None)
    if not ft_rows or not prompt_rows:
        choice = _best(rows)
        kind = "prompt-only" if not ft_rows else "fine-tuned"
        text = f"Only {kind} strategies were run; the most accurate is {_acc(choice)}."
        if not ft_rows:
            text += " Add a weight step (e.g. --strategies p,p-w,p-w-p) to measure what fine-tuning adds."
    else:
        p, f = _best(prompt_rows), _best(ft_rows)
        gap, nz = score(f) - score(p), noise(f, p)  # decided on dev; the text reports test
        be = next((b for b in pairs if b.finetuned == f.strategy and b.prompted == p.strategy), None)
        if zero is not None and p is not zero:
            notes.append(f"Prompt optimization first: {p.strategy} lifts zero-shot from {_pct(zero.test_mean)} to "
                         f"{_pct(p.test_mean)} with no training.")
        if gap > nz:
            choice = f
            text = (f"Fine-tune: {_acc(f)} beats the best prompt-only strategy {_acc(p)} by {_pts(gap)} on dev, more "
                    f"than the noise (±{_pts(nz)}).")
            if f.horizon_cost <= p.horizon_cost:
                text += f" It is also cheaper at {fmt_volume(prices.calls_per_day)} {_costs(f, p, prices)}."
            else:
                answers = prices.calls_per_day * prices.horizon_days * gap  # extra correct answers over the horizon
                per_extra = (f.horizon_cost - p.horizon_cost) / answers if answers else 0.0
                text += (f" It costs more {_costs(f, p, prices)}: worth it if one more correct answer is worth more "
                         f"than {fmt_money(max(per_extra, 0.0), small=True)}.")
                if be is not None:
                    text += f" {_break_even_sentence(be)}"
        elif gap < -nz:
            choice = p
            text = (f"Stay with prompt optimization: {_acc(p)}. The best fine-tuned strategy, {_acc(f)}, is "
                    f"{_pts(-gap)} less accurate on dev (beyond the noise of ±{_pts(nz)}).")
            if f.horizon_cost < p.horizon_cost:
                text += (f" {f.strategy} is cheaper {_costs(f, p, prices)}; switch only if that accuracy loss is "
                         f"acceptable.")
        else:
            text = (f"Accuracy is the same within the noise: {_acc(f)} vs {_acc(p)} (difference on dev {_pts(gap)}, "
                    f"noise ±{_pts(nz)}), so cost decides.")
            if f.horizon_cost < p.horizon_cost:
                choice = f
                text += f" Fine-tune: at {fmt_volume(prices.calls_per_day)} {f.strategy} is cheaper {_costs(f, p, prices)}."
            elif p.horizon_cost < f.horizon_cost:
                choice = p
                text += f" Keep {p.strategy}: it is cheaper at {fmt_volume(prices.calls_per_day)} {_costs(p, f, prices)}."
            else:
                choice = f if gap > 0 else p
                text += f" Both cost the same; {choice.strategy} is nominally more accurate."
            if be is not None:
                text += f" {_break_even_sentence(be)}"
    better = dominated_by(choice, rows)
    if better is not None:  # never recommend a strategy that is worse and more expensive than another
        text += f" However {better.strategy} is at least as accurate and no more expensive, so prefer it."
        choice = better
    for r in rows:
        if r is not choice and abs(score(r) - score(choice)) <= noise(r, choice) and r.horizon_cost < 0.8 * choice.horizon_cost:
            notes.append(f"{r.strategy} ({_pct(r.test_mean)}) is within the noise of {choice.strategy} and cheaper "
                         f"({fmt_money(r.horizon_cost)} vs {fmt_money(choice.horizon_cost)} over {prices.horizon_days:g} days).")
            break
    if choice.format_adherence < 0.9:
        notes.append(f"Only {_pct(choice.format_adherence)} of {choice.strategy}'s outputs parse; check the output format.")
    if any(r.seeds < 2 for r in rows):
        notes.append("Some strategies ran with one seed, so the noise is estimated from the test-set size alone; "
                     "run --seeds 3 to measure the spread over seeds.")
    notes.append("Strategies are compared on dev (as the run picks its best program); accuracies shown are on test.")
    return Recommendation(label, choice.strategy, " ".join([text, *notes]))


def _break_even_sentence(b: BreakEven) -> str:
    if b.calls_per_day is None:
        return f"{b.finetuned} never becomes cheaper than {b.prompted}: {b.reason}."
    if b.calls_per_day == 0:
        return f"{b.finetuned} is cheaper than {b.prompted} at any volume: {b.reason}."
    return f"{b.finetuned} becomes cheaper than {b.prompted} above {fmt_volume(b.calls_per_day)}: {b.reason}."


def _costs(a: CostRow, b: CostRow, prices: Prices) -> str:
    return (f"({fmt_money(a.cost_per_day)} vs {fmt_money(b.cost_per_day)} per day, one-off {fmt_money(a.one_off_cost)} vs "
            f"{fmt_money(b.one_off_cost)}; {fmt_money(a.horizon_cost)} vs {fmt_money(b.horizon_cost)} over "
            f"{prices.horizon_days:g} days)")


def _acc(r: CostRow) -> str:
    std = f" ± {100 * r.test_std:.1f}" if r.seeds > 1 else ""
    return f"{r.strategy} ({100 * r.test_mean:.1f}{std}%)"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    return f"{100 * x:.1f} points"


def fmt_money(x: float, small: bool = False) -> str:
    """``$1,234.50``; amounts under a cent keep two significant digits, written out (``$0.0000025``)."""
    if small or 0 < abs(x) < 0.01:
        return "$" + format(Decimal(f"{x:.2g}"), "f")
    return f"${x:,.2f}"


def _price(x: float) -> str:
    return f"${x:,.2f}" if round(x, 2) == x else f"${x:g}"


def fmt_volume(v: float | None) -> str:
    if v is None:
        return "never"
    if v == 0:
        return "any volume"
    return f"{math.ceil(round(v, 6)):,} calls/day"  # round first: 1000.0000000002 is 1000


# -- rendering -------------------------------------------------------------------------------------------
COST_HEADER = ["run", "strategy", "test acc. (%)", "format ok", "prompt tok/call", "compl. tok/call", "LM calls/req.",
               "latency/call (s)", "train (s)", "optimize (s)", "cost/day", "one-off", "total over horizon"]
BREAK_EVEN_HEADER = ["run", "fine-tuned", "vs prompt-only", "test acc. (%)", "break-even", "why"]


def cost_cells(advice: Advice) -> list[list[str]]:
    """The cost table as display strings (shared by the Markdown, HTML and terminal renderings)."""
    out = []
    for r in advice.rows:
        acc = f"{100 * r.test_mean:.1f} ± {100 * r.test_std:.1f}" if r.seeds > 1 else f"{100 * r.test_mean:.1f}"
        out.append([r.label, r.strategy, acc, f"{100 * r.format_adherence:.0f}%", f"{r.prompt_tokens_per_call:,.0f}",
                    f"{r.completion_tokens_per_call:,.0f}", f"{r.calls_per_example:.2g}", f"{r.seconds_per_call:.2f}",
                    f"{r.train_seconds:,.0f}", f"{r.optimize_seconds:,.0f}", fmt_money(r.cost_per_day),
                    fmt_money(r.one_off_cost), fmt_money(r.horizon_cost)])
    return out


def break_even_cells(advice: Advice) -> list[list[str]]:
    return [[b.label, b.finetuned, b.prompted, f"{100 * b.finetuned_accuracy:.1f} vs {100 * b.prompted_accuracy:.1f}",
             fmt_volume(b.calls_per_day), b.reason] for b in advice.break_even]


def assumptions_text(prices: Prices) -> str:
    text = (f"Projected at {prices.calls_per_day:,.0f} requests/day, {_price(prices.price_per_1m_prompt_tokens)} per 1M "
            f"prompt tokens, {_price(prices.price_per_1m_completion_tokens)} per 1M completion tokens, "
            f"{_price(prices.price_per_training_hour)} per optimization/training hour, one-off costs over "
            f"{prices.horizon_days:g} days")
    if prices.finetuned_price_factor != 1:
        text += f", token prices × {prices.finetuned_price_factor:g} for fine-tuned programs"
    defaults = Prices()
    if (prices.price_per_1m_prompt_tokens, prices.price_per_1m_completion_tokens, prices.price_per_training_hour) == (
        defaults.price_per_1m_prompt_tokens, defaults.price_per_1m_completion_tokens, defaults.price_per_training_hour
    ):
        text += " (placeholder prices: pass your own)"
    return text + ". Accuracy is on the test split, mean ± std over seeds (strategies are chosen on dev); optimization time includes training."
