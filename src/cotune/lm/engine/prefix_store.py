"""Prompt prefixes' keys and values kept across calls: a prompt seen before is not computed again.

cotune sends the same prompts many times: the Θ step samples up to 16 rollouts of each training example in
rounds (every round re-sends the prompts that have not passed yet), bootstrapping re-runs its teacher, and
every call of a predictor starts with the same instruction and demos. `decode` already computes a batch's
shared prefix once; `PrefixStore` keeps those prefixes and each prompt (all but its last token) after the
prefill, so a later batch starts from the stored keys and values and computes only the tokens after them.

Entries are keyed by the exact token ids and a namespace (the adapter: different weights, different keys and
values), least recently used first out once ``max_bytes`` is exceeded. Only the engine's worker thread uses
a store, so it takes no lock. torch is never imported here: entries are whatever tensors `decode` puts in.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

# Per layer: (keys, values), each (kv heads, tokens, head dim).
KV = list[tuple[Any, Any]]


@dataclass
class PrefixStats:
    """``hits``: rows that started from a stored prefix; ``reused_tokens``: the prompt tokens they skipped."""

    hits: int = 0
    reused_tokens: int = 0
    stored: int = 0
    evicted: int = 0


class PrefixStore:
    """An LRU of prompt prefixes' per-layer keys and values, bounded in bytes.

    Args:
        max_bytes: the most bytes of keys and values held; 0 keeps nothing.
        min_tokens: shorter prefixes are not worth a lookup and are never stored.

    Example:
        >>> store = PrefixStore(max_bytes=1 << 20, min_tokens=2)
        >>> store.put(None, [1, 2, 3], [("k", "v")], nbytes=10)
        >>> store.longest(None, [1, 2, 3, 4, 5], limit=4)
        (3, [('k', 'v')])
        >>> store.longest(None, [1, 2, 9, 4], limit=3) is None
        True
    """

    def __init__(self, max_bytes: int = 512 << 20, min_tokens: int = 16):
        self.max_bytes, self.min_tokens = max_bytes, min_tokens
        self.bytes = 0
        self.stats = PrefixStats()
        self._entries: OrderedDict[tuple[Hashable, tuple[int, ...]], tuple[KV, int]] = OrderedDict()
        self._lengths: dict[Hashable, Counter[int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, namespace: Hashable, tokens: Sequence[int]) -> KV | None:
        """The stored keys and values of exactly ``tokens``, or None."""
        entry = self._entries.get((namespace, tuple(tokens)))
        if entry is None:
            return None
        self._entries.move_to_end((namespace, tuple(tokens)))
        return entry[0]

    def longest(self, namespace: Hashable, tokens: Sequence[int], limit: int) -> tuple[int, KV] | None:
        """The longest stored prefix of ``tokens`` of at most ``limit`` tokens: (its length, its keys and values)."""
        for n in sorted(self._lengths.get(namespace, ()), reverse=True):
            if self.min_tokens <= n <= limit:
                kv = self.get(namespace, tokens[:n])
                if kv is not None:
                    return n, kv
        return None

    def put(self, namespace: Hashable, tokens: Sequence[int], kv: KV, nbytes: int) -> None:
        """Keep ``kv`` (``nbytes`` of tensors) as the keys and values of ``tokens``; evict the least recently used."""
        key = (namespace, tuple(tokens))
        if len(key[1]) < self.min_tokens or nbytes > self.max_bytes or key in self._entries:
            return
        self._entries[key] = (kv, nbytes)
        self._lengths.setdefault(namespace, Counter())[len(key[1])] += 1
        self.bytes += nbytes
        self.stats.stored += 1
        while self.bytes > self.max_bytes:
            (old_ns, old_tokens), (_, old_bytes) = self._entries.popitem(last=False)
            self.bytes -= old_bytes
            lengths = self._lengths[old_ns]
            lengths[len(old_tokens)] -= 1
            if not lengths[len(old_tokens)]:
                del lengths[len(old_tokens)]
            self.stats.evicted += 1

    def clear(self) -> None:
        self._entries.clear()
        self._lengths.clear()
        self.bytes = 0
