"""Stop strings in cotune's decoding loop (`cotune.lm.engine.decode`): a row that has written one of them ends.

transformers' ``generate`` matches stop strings itself, but it runs a batch to its end in one call, so a long
generation with a stop string would hold the model's thread (`cotune.lm.engine.batching`) for all of it. Here each
row's latest tokens are decoded after every step; once they contain a stop string, the row is made to write
its end token next, as ``generate`` would have stopped it there. The completion's text is cut at the stop
string afterwards (`cotune.lm.completion.truncate_at_stop`), and its token count is the same as ``generate``'s.

The tokens decoded are the last ``4 × (longest stop) + 8``: a stop string is found at the step that finishes
it, when it spans at most that many tokens (4: a character can take up to four byte tokens), and a few tokens
more keep the first one's decoding (a leading space some tokenizers drop) away from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def stop_processor(tokenizer: Any, stops: Sequence[str], end_id: int) -> Any:
    """A decode processor (``step(live, last, scores)``) that ends each row after it writes one of ``stops``."""
    window = 4 * max(len(s) for s in stops) + 8

    class StopStrings:
        def __init__(self) -> None:
            self.tails: dict[int, list[int]] = {}
            self.stopped: set[int] = set()

        def step(self, live, last, scores):
            if last is not None:
                for i, token in zip(live, last, strict=True):
                    if token is None:  # a row that joined the batch at this step
                        continue
                    tail = self.tails.setdefault(i, [])
                    tail.append(token)
                    del tail[:-window]
                    if i not in self.stopped:
                        text = tokenizer.decode(tail, skip_special_tokens=True)
                        if any(s in text for s in stops):
                            self.stopped.add(i)
            for j, i in enumerate(live):
                if i in self.stopped:
                    scores[j].fill_(float("-inf"))
                    scores[j, end_id] = 0.0
            return scores

    return StopStrings()
