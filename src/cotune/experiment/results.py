"""Aggregate finished nodes into the Table-1 rows: mean ± std over seeds per strategy."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cotune.experiment.node_record import NodeRecord, node_records


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def wall_per_uncached_call(summary: dict[str, Any]) -> float | None:
    """An evaluation's wall time divided by its calls that were not answered from the cache."""
    uncached = summary["usage"]["calls"] - summary["usage"]["cache_hits"]
    return summary["seconds"] / uncached if uncached > 0 else None


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def summarize(nodes: Iterable[NodeRecord | Mapping[str, Any]], strategies: Sequence[str]) -> list[dict[str, Any]]:
    """One row per requested strategy (in order), averaged over the seeds that finished it. A row's
    ``optimize_seconds`` and ``train_seconds`` are what the whole strategy took, from zero-shot (each
    node's ``cumulative_seconds``); the names are those results.json tables have always had."""
    records = node_records(nodes)
    rows = []
    for strategy in strategies:
        mine = [n for n in records if n.strategy == strategy]
        if not mine:
            continue
        test_mean, test_std = _mean_std([n.test["score"] for n in mine])
        dev_mean, dev_std = _mean_std([n.dev["score"] for n in mine])
        per_call = [n.test["usage_per_call"] for n in mine]
        rows.append(
            {
                "strategy": strategy,
                "seeds": sorted(n.seed for n in mine),
                "test_mean": test_mean,
                "test_std": test_std,
                "dev_mean": dev_mean,
                "dev_std": dev_std,
                "format_adherence": statistics.fmean(n.test["format_adherence"] for n in mine),
                "prompt_tokens_per_call": statistics.fmean(p["prompt_tokens"] for p in per_call),
                "completion_tokens_per_call": statistics.fmean(p["completion_tokens"] for p in per_call),
                # Wall time of the test evaluation per call that reached the model: summing each call's own
                # latency would count a batch's time once per call that waited in it (5.7 s "per call" for a
                # 4-token answer), and cache hits would make a re-run look instant. None: every call was cached.
                "seconds_per_call": _mean_or_none([wall_per_uncached_call(n.test) for n in mine]),
                "calls_per_example": statistics.fmean(n.test["usage"]["calls"] / max(n.test["n"], 1) for n in mine),
                "optimize_seconds": statistics.fmean(n.cumulative_seconds for n in mine),
                "train_seconds": statistics.fmean(n.cumulative_train_seconds for n in mine),
            }
        )
    return rows
