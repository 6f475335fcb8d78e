"""Is one program better than another on the same examples, or only by the noise of a small valset?

Selection on a validation set of a few dozen examples is noisy: on Iris's 35 inner validation flowers one
example is 2.9 points, and random search picked a demo set that won 12/35 to 11/35 and then lost on test.
The rule here is a paired one-sided test on per-example scores: with ``d_i = new_i - old_i`` over the same
examples, the new program wins only when ``mean(d) > min_gain_se * se(d)``, where
``se(d) = stdev(d) / sqrt(n)``. ``min_gain_se=1`` is the one-standard-error rule (a gain must exceed one
standard error of the paired difference); 0 is a plain "higher mean wins".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class PairedGain:
    """The paired comparison of a new program's per-example scores with an old one's."""

    gain: float  # mean(new - old)
    se: float  # standard error of that mean
    n: int
    wins: int  # examples where new scored higher
    losses: int  # examples where old scored higher
    min_gain_se: float
    significant: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"gain {self.gain * 100:+.1f} points on {self.n} examples ({self.wins} won, {self.losses} lost), "
            f"{'above' if self.significant else 'not above'} {self.min_gain_se:g} standard error"
            f"{'s' if self.min_gain_se != 1 else ''} ({self.se * 100:.1f} points)"
        )


def paired_gain(new: Sequence[float], old: Sequence[float], min_gain_se: float = 1.0) -> PairedGain:
    """Compare per-example scores of the same examples, in the same order.

    Example:
        >>> paired_gain([1, 1, 0, 0], [0, 1, 0, 0]).significant   # one win, no loss: +25 points, se 25
        False
        >>> paired_gain([1] * 10 + [0] * 10, [0] * 20).significant
        True
    """
    if len(new) != len(old):
        raise ValueError(f"paired scores need the same examples: {len(new)} new against {len(old)} old")
    n = len(new)
    diffs = [float(a) - float(b) for a, b in zip(new, old, strict=True)]
    gain = sum(diffs) / n if n else 0.0
    var = sum((d - gain) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    se = math.sqrt(var / n) if n else 0.0
    # A margin of exactly one standard error (one win, no loss) is not above it: compare with a tolerance.
    significant = gain > 1e-12 and gain > min_gain_se * se + 1e-12
    return PairedGain(
        gain=gain,
        se=se,
        n=n,
        wins=sum(d > 0 for d in diffs),
        losses=sum(d < 0 for d in diffs),
        min_gain_se=min_gain_se,
        significant=significant,
    )
