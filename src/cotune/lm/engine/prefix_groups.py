"""Which rows of a batch start alike: the groups whose shared leading tokens `cotune.lm.engine.decode` computes once.

A batch that mixes several programs' calls (prompt candidates evaluated side by side) holds rows that share
an instruction and demos; prefilling each group's shared tokens once, not once per row, is what makes such a
batch cheap. The grouping works on token ids only (tensors in, lists out), so it is tested without a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Below this many shared tokens, a separate prefill of the prefix costs more than it saves.
MIN_SHARED_PREFIX = 16


def common_prefix(input_ids: Any, attention_mask: Any) -> int:
    """How many leading tokens every (left-padded) row shares; each row keeps at least one of its own."""
    starts = (attention_mask.shape[1] - attention_mask.sum(dim=1)).tolist()
    rows = [input_ids[i, s:] for i, s in enumerate(starts)]
    shortest = min(len(r) for r in rows)
    first = rows[0][:shortest]
    same = first.new_ones(shortest, dtype=bool)
    for r in rows[1:]:
        same &= r[:shortest] == first
    shared = shortest if bool(same.all()) else int((~same).int().argmax())
    return min(shared, shortest - 1)


def prefix_groups(
    input_ids: Any, attention_mask: Any, min_shared: int = MIN_SHARED_PREFIX
) -> list[tuple[list[int], int]]:
    """Partition the rows into groups that share a leading run of tokens: ``[(rows, shared length), ...]``.

    Rows sorted by their tokens put alike prompts next to each other; the cut into runs minimizes the tokens
    the prefill computes (a group's shared tokens once, plus every row's own), each separate prefix call
    counting as ``min_shared`` tokens of overhead, by dynamic programming over the sorted rows (a batch is at
    most a few dozen rows). A group shares nothing (length 0) when its rows have fewer than ``min_shared``
    tokens in common; every row keeps at least one token of its own.
    """
    starts = (attention_mask.shape[1] - attention_mask.sum(dim=1)).tolist()
    rows = [input_ids[i, s:].tolist() for i, s in enumerate(starts)]
    order = sorted(range(len(rows)), key=lambda i: rows[i])
    n = len(order)
    adjacent = [_lcp(rows[order[k]], rows[order[k + 1]]) for k in range(n - 1)]

    lengths = [len(rows[i]) for i in order]

    def shared(common: int, shortest: int) -> int:  # what a run with these common tokens and shortest row shares
        s = min(common, shortest - 1)
        return s if s >= min_shared else 0

    best = [0.0] + [float("inf")] * n  # best[k]: least cost of the first k sorted rows
    cut = [(0, 0)] * (n + 1)  # (start of the last run, its shared length)
    for b in range(n):
        common, shortest, total = 1 << 60, lengths[b], 0
        for a in range(b, -1, -1):  # the run order[a..b], grown to the left
            if a < b:
                common = min(common, adjacent[a])
            shortest, total = min(shortest, lengths[a]), total + lengths[a]
            s = shared(common, shortest) if a < b else 0
            cost = best[a] + total - (b - a) * s + (min_shared if s else 0)
            if cost < best[b + 1]:
                best[b + 1], cut[b + 1] = cost, (a, s)
    groups = []
    b = n
    while b > 0:
        a, s = cut[b]
        groups.append(([order[k] for k in range(a, b)], s))
        b = a
    return groups[::-1]


def _lcp(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def bound_own_width(
    blocks: list[tuple[list[int], int, Any]], lengths: Sequence[int], pass_cost: int = MIN_SHARED_PREFIX
) -> list[tuple[list[int], int, Any]]:
    """``blocks`` (``[(rows, shared length, stored keys and values or None), ...]``) with the rows whose own
    tokens would widen a grouped prefill most moved to blocks of their own, where that computes fewer tokens.

    A grouped prefill computes the rows' own tokens (each prompt after its block's shared ones) in one pass,
    every row padded to the widest. One row alike no other (shared 0) beside groups with a few own tokens each
    makes every row compute as many as that whole prompt: a batch of 60 MedPrompt ensemble rows on
    Qwen2.5-Coder-1.5B (option orders of the same questions, groups sharing 1,200-1,300 tokens) computed 1,352
    own tokens a row. Such a row is better prefilled alone, as a block of one sharing its prompt but the last
    token. The own pass's width is chosen to minimize the tokens computed: every row times the width, plus each
    moved row's prompt and ``pass_cost`` for its pass. Only rows of blocks computed here move (stored keys and
    values stay with their rows); ``lengths``: each row's prompt tokens.

    Example:
        >>> bound_own_width([([0, 1, 2], 100, None), ([3], 0, None)], [104, 103, 105, 120])
        [([0, 1, 2], 100, None), ([3], 119, None)]
        >>> bound_own_width([([0, 1], 100, None), ([2], 0, None)], [104, 103, 10])  # 3 x 10 < 3 x 4 + 9 + 16
        [([0, 1], 100, None), ([2], 0, None)]
    """
    own = {r: lengths[r] - shared for rows, shared, _ in blocks for r in rows}
    fixed = max([own[r] for rows, _, kv in blocks if kv is not None for r in rows] + [1])
    movable = sorted((r for rows, _, kv in blocks if kv is None for r in rows), key=lambda r: -own[r])
    widths = [max(fixed, own[r]) for r in movable] + [fixed]  # the own pass's width with the first j moved
    best, cost, moved_cost = 0, len(own) * widths[0], 0
    for j, r in enumerate(movable, 1):
        moved_cost += lengths[r] - 1 + pass_cost
        if len(own) * widths[j] + moved_cost < cost:
            best, cost = j, len(own) * widths[j] + moved_cost
    moved = set(movable[:best])
    kept = [([r for r in rows if r not in moved], shared, kv) for rows, shared, kv in blocks]
    return [b for b in kept if b[0]] + [([r], lengths[r] - 1, None) for r in movable[:best]]
