"""What the decoding loop computed, counted as it goes: where a slow run loses its time.

A run's wall time alone does not say whether the model computed padding, recomputed prompts, ran small
batches or spent its steps on finished rows. `EngineCounters` says: prompt tokens the rows really had vs the
token positions the prefill passes computed (padding included), decoding steps and the rows they carried,
and the seconds each part took. Counting costs a few integer additions per pass.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

# what a batch's own counters hold, added to the totals when it ends
PER_PASS = (
    "prefill_tokens",
    "prefill_passes",
    "prefill_seconds",
    "reused_tokens",
    "decode_steps",
    "decode_rows",
    "decode_seconds",
    "joined_rows",
    "join_steps",
)


@dataclass
class EngineCounters:
    """Totals over every batch `cotune.lm.engine.decode.decode_steps` ran with these counters.

    ``prompt_tokens``: the rows' real prompt tokens; ``prefill_tokens``: positions the prefill passes computed
    (rows × columns, padding included; a shared prefix counts once); ``reused_tokens``: prompt tokens taken
    from stored prefixes. ``decode_rows``: rows carried by decoding steps (finished rows kept in the batch
    count too); ``new_tokens``: the tokens the rows produced. ``joined_rows``: rows that joined a batch while it
    decoded (counted in its batch size and prompt tokens too); ``join_steps``: decoding steps at which rows joined
    (each a prefill of the joiners, counted in the prefill counts). ``mixed_batches``: batches whose rows had
    different generation settings (grammar, stop strings, token limits, sampling: `cotune.lm.engine.row_settings`).
    """

    batches: int = 0
    batch_sizes: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    prefill_tokens: int = 0
    prefill_passes: int = 0
    prefill_seconds: float = 0.0
    reused_tokens: int = 0
    decode_steps: int = 0
    decode_rows: int = 0
    decode_seconds: float = 0.0
    new_tokens: int = 0
    joined_rows: int = 0
    join_steps: int = 0
    mixed_batches: int = 0
    # per batch, the first HISTORY: (rows, real prompt tokens, widest prompt, prefill positions computed,
    # decoding steps, new tokens)
    history: list[tuple[int, ...]] = field(default_factory=list)

    HISTORY = 20_000

    def add_batch(self, batch: EngineCounters, prompt_lengths: list[int], new_tokens: int) -> None:
        """Add one batch's counts (``batch``: its passes and steps) with its rows' prompt lengths."""
        self.batches += 1
        self.batch_sizes[len(prompt_lengths)] += 1
        self.prompt_tokens += sum(prompt_lengths)
        self.new_tokens += new_tokens
        for name in PER_PASS:
            setattr(self, name, getattr(self, name) + getattr(batch, name))
        if len(self.history) < self.HISTORY:
            row = (len(prompt_lengths), sum(prompt_lengths), max(prompt_lengths), batch.prefill_tokens)
            self.history.append((*row, batch.decode_steps, new_tokens))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["history"] = [list(h) for h in self.history]
        out["batch_sizes"] = dict(sorted(self.batch_sizes.items()))
        out["prefill_seconds"] = round(self.prefill_seconds, 2)
        out["decode_seconds"] = round(self.decode_seconds, 2)
        return out
