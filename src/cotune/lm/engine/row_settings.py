"""Per-row generation settings in one decoding batch: rows with different grammars, stop strings, token limits
and sampling settings decode together, each as it would alone.

A decoding step's forward pass does not depend on how the rows will choose their tokens: that is done on
the step's logits, row by row. So the rows of a batch are grouped by their settings (`settings`), and each
group gets the logits processors a batch of those settings alone would have (`settings_processors`: its
grammar matchers, its seeded sampler, its stop strings), which see only the group's rows, numbered in the
group from 0. Every processor treats its rows independently (a row's matcher, a row's generator), so a row's
tokens are those it gets alone. The token limit is the decoding loop's, per row
(`cotune.lm.engine.decode.decode_steps`' ``max_new_tokens``).

The processors follow the protocol of `cotune.lm.engine.decode` (``step(live, last, scores)``), and rows may
join while the batch decodes (`RowProcessors.add_rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cotune.lm.base import GenerationConfig
from cotune.lm.engine.sampling import seeded_sampler


def settings(config: GenerationConfig) -> GenerationConfig:
    """What decides a row's tokens besides its prompt and seed: the rollout id changes only the seed (derived
    from the request), and a greedy row does not use top-p or min-p."""
    return config.replace(rollout_id=0, **({"top_p": 1.0, "min_p": 0.0} if config.temperature == 0 else {}))


@dataclass
class SettingsProcessors:
    """The processors of one group of rows that share settings, and what a joiner of the group extends."""

    processors: list[Any] = field(default_factory=list)
    sampler: Any = None  # the seeded sampler, given each joiner's seed
    grammar: Any = None  # the grammar mask, given a matcher per joiner
    rows: int = 0

    def add_rows(self, seeds: Sequence[int]) -> None:
        if self.sampler is not None:
            self.sampler.add_rows(list(seeds))
        if self.grammar is not None:
            self.grammar.add_rows(len(seeds))
        self.rows += len(seeds)


def settings_processors(
    config: GenerationConfig,
    seeds: Sequence[int],
    *,
    grammar: Callable[[], Any],
    device: str,
    stops: Callable[[Sequence[str]], Any] | None = None,
) -> SettingsProcessors:
    """The processors of rows under ``config`` (one seed each), in the order they apply.

    Args:
        grammar: the model's `cotune.lm.engine.constrain.GrammarEngine` (called only for a constrained config).
        stops: makes the stop-string processor (`cotune.lm.engine.stops.stop_processor`); None where the caller
            matches stop strings itself (transformers' ``generate``).
    """
    group = SettingsProcessors(rows=len(seeds))
    sampler = None
    if config.temperature > 0:
        sampler = seeded_sampler(list(seeds), config.temperature, config.top_p, device, config.min_p)
    group.sampler = sampler
    if config.constraint is not None:
        # A plain temperature sampler draws inside the grammar's processor (a refused draw is redrawn from
        # the masked distribution); with top-p or min-p the whole mask comes first, then the sampler.
        plain = sampler is not None and config.top_p >= 1.0 and not config.min_p
        group.grammar = grammar().processor(
            config.constraint,
            len(seeds),
            config.max_tokens,
            sampler=sampler if plain else None,
            optimistic=None if plain or sampler is None else False,
        )
        group.processors.append(group.grammar)
        if plain:
            sampler = None
    if sampler is not None:
        group.processors.append(sampler)
    if config.stop and stops is not None:
        group.processors.append(stops(config.stop))
    return group


class RowProcessors:
    """A decode processor that applies each row's own settings' processors to that row.

    Args:
        make: ``make(settings, seeds)`` → the `SettingsProcessors` of a new group of rows.
    """

    def __init__(self, make: Callable[[GenerationConfig, Sequence[int]], SettingsProcessors]):
        self.make = make
        self.groups: dict[Hashable, SettingsProcessors] = {}
        self.where: list[tuple[Hashable, int]] = []  # per batch row: its group, and its number in the group

    def add_rows(self, configs: Sequence[GenerationConfig], seeds: Sequence[int]) -> None:
        """Rows numbered after those before (the batch's first rows, then each step's joiners)."""
        added: dict[Hashable, list[int]] = {}  # a group's seeds among these rows
        for config, seed in zip(configs, seeds, strict=True):
            key = settings(config)
            mine = added.setdefault(key, [])
            before = self.groups[key].rows if key in self.groups else 0
            self.where.append((key, before + len(mine)))
            mine.append(seed)
        for key, group_seeds in added.items():
            if key in self.groups:
                self.groups[key].add_rows(group_seeds)
            else:
                self.groups[key] = self.make(key, group_seeds)

    def step(self, live, last, scores):
        """Each group's processors on the scores of its live rows (``live``, ``last``: see `cotune.lm.engine.decode`)."""
        import torch

        parts: dict[Hashable, list[int]] = {}  # a group's positions in ``scores``
        for j, i in enumerate(live):
            parts.setdefault(self.where[i][0], []).append(j)
        for key, js in parts.items():
            processors = self.groups[key].processors
            if not processors:
                continue
            rows = [self.where[live[j]][1] for j in js]
            own_last = None if last is None else [last[j] for j in js]
            if len(js) == len(scores):  # one group: its processors see the batch's scores as they are
                for p in processors:
                    scores = p.step(rows, own_last, scores)
                continue
            index = torch.tensor(js, device=scores.device)
            part = scores[index]
            for p in processors:
                part = p.step(rows, own_last, part)
            scores[index] = part
        return scores
