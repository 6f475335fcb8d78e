"""The advisor's recommendation: which strategy the evidence supports, in words, and the number formats
its sentences and tables share."""

from __future__ import annotations

import math
from collections.abc import Sequence

from cotune.report.costs import BreakEven, CostRow, Prices, Recommendation, fmt_money, fmt_volume


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
        if (
            r is not choice
            and score(r) >= score(choice)
            and r.horizon_cost <= choice.horizon_cost
            and (score(r) > score(choice) or r.horizon_cost < choice.horizon_cost)
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
            notes.append(
                f"Prompt optimization first: {p.strategy} lifts zero-shot from {_pct(zero.test_mean)} to "
                f"{_pct(p.test_mean)} with no training."
            )
        if gap > nz:
            choice = f
            text = (
                f"Fine-tune: {_acc(f)} beats the best prompt-only strategy {_acc(p)} by {_pts(gap)} on dev, more "
                f"than the noise (±{_pts(nz)})."
            )
            if f.horizon_cost <= p.horizon_cost:
                text += f" It is also cheaper at {fmt_volume(prices.calls_per_day)} {_costs(f, p, prices)}."
            else:
                answers = prices.calls_per_day * prices.horizon_days * gap  # extra correct answers over the horizon
                per_extra = (f.horizon_cost - p.horizon_cost) / answers if answers else 0.0
                text += (
                    f" It costs more {_costs(f, p, prices)}: worth it if one more correct answer is worth more "
                    f"than {fmt_money(max(per_extra, 0.0), small=True)}."
                )
                if be is not None:
                    text += f" {_break_even_sentence(be)}"
        elif gap < -nz:
            choice = p
            text = (
                f"Stay with prompt optimization: {_acc(p)}. The best fine-tuned strategy, {_acc(f)}, is "
                f"{_pts(-gap)} less accurate on dev (beyond the noise of ±{_pts(nz)})."
            )
            if f.horizon_cost < p.horizon_cost:
                text += (
                    f" {f.strategy} is cheaper {_costs(f, p, prices)}; switch only if that accuracy loss is acceptable."
                )
        else:
            text = (
                f"Accuracy is the same within the noise: {_acc(f)} vs {_acc(p)} (difference on dev {_pts(gap)}, "
                f"noise ±{_pts(nz)}), so cost decides."
            )
            if f.horizon_cost < p.horizon_cost:
                choice = f
                text += (
                    f" Fine-tune: at {fmt_volume(prices.calls_per_day)} {f.strategy} is cheaper {_costs(f, p, prices)}."
                )
            elif p.horizon_cost < f.horizon_cost:
                choice = p
                text += (
                    f" Keep {p.strategy}: it is cheaper at {fmt_volume(prices.calls_per_day)} {_costs(p, f, prices)}."
                )
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
        if (
            r is not choice
            and abs(score(r) - score(choice)) <= noise(r, choice)
            and r.horizon_cost < 0.8 * choice.horizon_cost
        ):
            notes.append(
                f"{r.strategy} ({_pct(r.test_mean)}) is within the noise of {choice.strategy} and cheaper "
                f"({fmt_money(r.horizon_cost)} vs {fmt_money(choice.horizon_cost)} over {prices.horizon_days:g} days)."
            )
            break
    if choice.format_adherence < 0.9:
        notes.append(
            f"Only {_pct(choice.format_adherence)} of {choice.strategy}'s outputs parse; check the output format."
        )
    if any(r.seeds < 2 for r in rows):
        notes.append(
            "Some strategies ran with one seed, so the noise is estimated from the test-set size alone; "
            "run --seeds 3 to measure the spread over seeds."
        )
    notes.append("Strategies are compared on dev (as the run picks its best program); accuracies shown are on test.")
    return Recommendation(label, choice.strategy, " ".join([text, *notes]))


def _break_even_sentence(b: BreakEven) -> str:
    if b.calls_per_day is None:
        return f"{b.finetuned} never becomes cheaper than {b.prompted}: {b.reason}."
    if b.calls_per_day == 0:
        return f"{b.finetuned} is cheaper than {b.prompted} at any volume: {b.reason}."
    return f"{b.finetuned} becomes cheaper than {b.prompted} above {fmt_volume(b.calls_per_day)}: {b.reason}."


def _costs(a: CostRow, b: CostRow, prices: Prices) -> str:
    return (
        f"({fmt_money(a.cost_per_day)} vs {fmt_money(b.cost_per_day)} per day, one-off {fmt_money(a.one_off_cost)} vs "
        f"{fmt_money(b.one_off_cost)}; {fmt_money(a.horizon_cost)} vs {fmt_money(b.horizon_cost)} over "
        f"{prices.horizon_days:g} days)"
    )


def _acc(r: CostRow) -> str:
    std = f" ± {100 * r.test_std:.1f}" if r.seeds > 1 else ""
    return f"{r.strategy} ({100 * r.test_mean:.1f}{std}%)"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    return f"{100 * x:.1f} points"
