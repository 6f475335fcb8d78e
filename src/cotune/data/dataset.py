"""`Dataset`: a sequence of examples with seeded shuffles and splits."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

from cotune.data.example import Example
from cotune.errors import ConfigError


class Dataset(Sequence[Example]):
    """An ordered, immutable list of `Example` objects.

    Example:
        >>> ds = Dataset([Example(x=i) for i in range(10)])
        >>> train, dev = ds.split([7, 3], seed=0)
        >>> len(train), len(dev)
        (7, 3)
    """

    def __init__(self, examples: Iterable[Example] = (), name: str = ""):
        self._examples: tuple[Example, ...] = tuple(examples)
        self.name = name

    @overload
    def __getitem__(self, i: int) -> Example: ...
    @overload
    def __getitem__(self, i: slice) -> Dataset: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return Dataset(self._examples[i], self.name)
        return self._examples[i]

    def __len__(self) -> int:
        return len(self._examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self._examples)

    def __repr__(self) -> str:
        name = f"{self.name!r}, " if self.name else ""
        return f"Dataset({name}{len(self)} examples)"

    def with_inputs(self, *keys: str) -> Dataset:
        return Dataset((ex.with_inputs(*keys) for ex in self), self.name)

    def shuffled(self, seed: int) -> Dataset:
        items = list(self._examples)
        random.Random(seed).shuffle(items)
        return Dataset(items, self.name)

    def sample(self, n: int, seed: int) -> Dataset:
        if n > len(self):
            raise ConfigError(f"cannot sample {n} examples from a dataset of {len(self)}")
        return Dataset(random.Random(seed).sample(list(self._examples), n), self.name)

    def split(self, sizes: Sequence[int], *, seed: int | None = 0, stratify: str | None = None) -> list[Dataset]:
        """Cut into consecutive parts of the given sizes after a seeded shuffle (``seed=None``: no shuffle).

        With ``stratify="label_field"`` each part keeps the label proportions (round-robin over classes).
        """
        if any(s < 0 for s in sizes) or sum(sizes) > len(self):
            raise ConfigError(f"split sizes {list(sizes)} do not fit a dataset of {len(self)} examples")
        items = list(self._examples)
        rng = random.Random(seed)
        if seed is not None:
            rng.shuffle(items)
        if stratify is not None:
            items = _interleave_by(items, stratify)
        parts, start = [], 0
        for size in sizes:
            parts.append(Dataset(items[start : start + size], self.name))
            start += size
        return parts


def _interleave_by(items: list[Example], key: str) -> list[Example]:
    """Reorder so that every prefix keeps the classes' proportions: the j-th of a class's n examples sits
    at relative position (j + 0.5) / n, and positions are merged across classes."""
    groups: dict[object, list[Example]] = {}
    for ex in items:
        groups.setdefault(ex[key], []).append(ex)
    keyed = [((j + 0.5) / len(g), c, ex) for c, g in enumerate(groups.values()) for j, ex in enumerate(g)]
    return [ex for _, _, ex in sorted(keyed, key=lambda t: (t[0], t[1]))]
