"""Seeded sampling by inverting each row's cumulative distribution (`cotune.lm.engine.sampling`)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cotune.lm.engine.sampling import BLOCK, inverse_cdf, seeded_sampler  # noqa: E402


def test_inverse_cdf_picks_the_first_token_whose_running_total_passes_the_target():
    vocab = 2 * BLOCK + 7  # three blocks, the last one short
    probs = torch.zeros(4, vocab)
    probs[:, 3] = 1.0
    probs[:, BLOCK + 1] = 1.0  # second block
    probs[:, vocab - 1] = 2.0  # the short last block
    # totals 4: running 1 (token 3), 2 (BLOCK + 1), 4 (vocab - 1)
    uniforms = torch.tensor([0.0, 0.2499, 0.25, 0.9999999])
    assert inverse_cdf(probs, uniforms).tolist() == [3, 3, BLOCK + 1, vocab - 1]


def test_inverse_cdf_never_returns_a_token_without_mass():
    """Sparse rows (a grammar leaves a few tokens) and uniforms at both ends: every pick has weight."""
    generator = torch.Generator().manual_seed(0)
    vocab = 5 * BLOCK + 3
    probs = torch.rand(64, vocab, generator=generator)
    probs[torch.rand(64, vocab, generator=generator) < 0.995] = 0.0
    probs[:, 17] += 1e-30  # every row has some mass
    for uniforms in (torch.zeros(64), torch.full((64,), 1 - 2**-52), torch.rand(64, generator=generator)):
        tokens = inverse_cdf(probs, uniforms)
        assert (probs[torch.arange(64), tokens] > 0).all()


def test_inverse_cdf_refuses_a_row_with_no_mass():
    probs = torch.zeros(2, BLOCK + 1)
    probs[0, 5] = 1.0
    with pytest.raises(ValueError, match="no token with a positive"):
        inverse_cdf(probs, torch.tensor([0.5, 0.5]))


def test_draws_follow_the_distribution():
    """20,000 seeded draws over 600 tokens spread across three blocks: Pearson's chi-square within five
    standard deviations of its mean (the draws are seeded, so this is the same number on every run)."""
    torch.manual_seed(0)
    vocab, rows = 3 * BLOCK, 20_000
    logits = torch.full((vocab,), float("-inf"))
    live_tokens = torch.randperm(vocab)[:600]
    logits[live_tokens] = torch.randn(600) * 1.5
    sampler = seeded_sampler(list(range(rows)), 1.0, 1.0, "cpu")
    picks = torch.tensor(sampler.draw(range(rows), logits.repeat(rows, 1)))
    expected = torch.softmax(logits, dim=-1)[live_tokens] * rows
    observed = torch.bincount(picks, minlength=vocab)[live_tokens].double()
    assert int(torch.bincount(picks, minlength=vocab).sum() - observed.sum()) == 0  # nothing outside the 600
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < (600 - 1) + 5 * math.sqrt(2 * (600 - 1)), chi2


def test_a_rows_draws_do_not_depend_on_its_batch():
    """Row 2 (seed 7) draws the same tokens alone and at position 0 of a batch of other rows."""
    torch.manual_seed(1)
    scores = torch.randn(5, 4 * BLOCK)
    together = seeded_sampler([1, 2, 7, 4, 5], 1.3, 0.9, "cpu")
    alone = seeded_sampler([7], 1.3, 0.9, "cpu")
    for _ in range(5):
        mine = together.draw([2, 0, 1, 3, 4], scores[[2, 0, 1, 3, 4]])[0]
        assert mine == alone.draw([0], scores[[2]])[0]
    assert together.draw([], scores[:0]) == []
