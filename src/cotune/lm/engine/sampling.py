"""Seeded sampling for local models: each request draws from its own generator, whatever batch it is in."""

from __future__ import annotations


def seeded_sampler(seeds: list[int], temperature: float, top_p: float, device: str, min_p: float = 0.0):
    """A logits processor that samples each row with its own seeded generator and forces that token.

    torch's global RNG would make a row's sample depend on which other requests shared its batch;
    one generator per request keeps reruns reproducible however requests were coalesced.
    """
    import torch
    from transformers import LogitsProcessor

    class SeededSampling(LogitsProcessor):
        def __init__(self):
            self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

        def add_rows(self, row_seeds: list[int]) -> None:
            """Rows that join the batch (`cotune.lm.engine.decode.decode_steps`' ``admit``), numbered after the others."""
            self.generators += [torch.Generator(device=device).manual_seed(s) for s in row_seeds]

        def __call__(self, input_ids, scores):
            return self.step(range(len(self.generators)), None, scores)

        def step(self, live, last, scores):
            """Sample each live row (``live``: the batch rows of ``scores``' rows) with its own generator."""
            picks = self.draw(live, scores)
            forced = torch.full_like(scores, float("-inf"))
            forced[torch.arange(len(picks)), torch.tensor(picks)] = 0.0
            return forced

        def draw(self, live, scores) -> list[int]:
            """One token for each row of ``scores`` (batch row ``live[j]`` for row j), from its own generator."""
            probs = torch.softmax(scores.float() / temperature, dim=-1)
            if min_p > 0:
                probs = probs.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, 0.0)
            if top_p < 1.0:
                sorted_probs, idx = probs.sort(dim=-1, descending=True)
                # Drop tokens once the mass before them already reaches top_p (the first always stays).
                drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
                probs = probs.scatter(-1, idx, sorted_probs.masked_fill(drop, 0.0))
            return [int(torch.multinomial(probs[j], 1, generator=self.generators[i])) for j, i in enumerate(live)]

    return SeededSampling()
