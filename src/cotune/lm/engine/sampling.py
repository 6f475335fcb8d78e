"""Seeded sampling for local models: each request draws from its own generator, whatever batch it is in.

A row's token is drawn by inverting its cumulative distribution with one uniform number from its own generator.
`torch.multinomial` draws a random number for every token of the vocabulary (an exponential race): for 40 rows
of Qwen's 151,936 tokens that was ~180 ms a decoding step on a 2-core CPU, a fifth of a sampled rollout's
decoding time; the inversion below is ~3 ms for the same rows (one number a row, a sum per block of the
vocabulary, one cumulative sum over the chosen block).
"""

from __future__ import annotations

BLOCK = 256  # tokens per block of the two-level inversion: block sums, then a cumulative sum inside one block


def inverse_cdf(probs, uniforms):
    """One token index per row of ``probs`` (rows of non-negative weights, each with some mass), the first whose
    cumulative weight passes ``uniforms`` (one number in [0, 1) a row) times the row's total.

    Two levels so that no cumulative sum runs over the whole vocabulary: the block whose running total passes
    the target, then the token inside it. Block sums in the weights' dtype (a float64 copy of the whole vocabulary
    cost 26 of 29 ms for 40 rows), running totals in float64; a token of weight 0 is never returned (where
    rounding lands on one, the nearest token with weight before it, else after it, is taken).
    """
    import torch

    rows, vocab = probs.shape
    blocks = -(-vocab // BLOCK)
    padded = probs if blocks * BLOCK == vocab else torch.nn.functional.pad(probs, (0, blocks * BLOCK - vocab))
    padded = padded.view(rows, blocks, BLOCK)
    running = padded.sum(dim=-1).to(torch.float64).cumsum(dim=-1)
    target = uniforms.to(torch.float64) * running[:, -1]
    block = torch.searchsorted(running, target.unsqueeze(1), right=True).squeeze(1).clamp_(max=blocks - 1)
    before = torch.where(block > 0, running.gather(1, (block - 1).clamp(min=0).unsqueeze(1)).squeeze(1), 0.0)
    inside = padded[torch.arange(rows, device=probs.device), block].to(torch.float64).cumsum(dim=-1)
    offset = torch.searchsorted(inside, (target - before).unsqueeze(1), right=True).squeeze(1).clamp_(max=BLOCK - 1)
    tokens = (block * BLOCK + offset).clamp_(max=vocab - 1)
    for row in (~(probs[torch.arange(rows, device=probs.device), tokens] > 0)).nonzero().flatten().tolist():
        tokens[row] = _nearest_with_mass(probs[row], int(tokens[row]))
    return tokens


def _nearest_with_mass(weights, index: int) -> int:
    """The last token at or before ``index`` with weight, else the first after it (a rounding edge only)."""
    has = (weights > 0).nonzero().flatten()
    if not len(has):
        raise ValueError("a row to sample has no token with a positive, finite probability")
    before = has[has <= index]
    return int(before[-1]) if len(before) else int(has[0])


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
            if not len(live):
                return []
            probs = torch.softmax(scores.float() / temperature, dim=-1)
            if min_p > 0:
                probs = probs.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, 0.0)
            if top_p < 1.0:
                sorted_probs, idx = probs.sort(dim=-1, descending=True)
                # Drop tokens once the mass before them already reaches top_p (the first always stays).
                drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
                probs = probs.scatter(-1, idx, sorted_probs.masked_fill(drop, 0.0))
            uniforms = torch.stack(
                [torch.rand((), generator=self.generators[i], device=probs.device, dtype=torch.float64) for i in live]
            )
            return inverse_cdf(probs, uniforms).tolist()

    return SeededSampling()
