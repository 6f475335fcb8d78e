import pytest

from cotune.evaluate.compare import paired_gain


@pytest.mark.parametrize(
    ("new", "old", "min_gain_se", "significant"),
    [
        ([1, 0, 0, 0] * 9, [0, 0, 0, 0] * 9, 1.0, True),  # 9 wins, no loss on 36
        ([1] + [0] * 34, [0] * 35, 1.0, False),  # Iris: 12/35 against 11/35 by one flower
        ([1] + [0] * 34, [0] * 35, 0.0, True),  # the plain argmax takes it
        ([1, 1, 0] + [0] * 32, [0, 0, 1] + [0] * 32, 1.0, False),  # 2 wins, 1 loss
        ([0] * 10, [0] * 10, 0.0, False),  # a tie is never a gain
        ([0, 1] * 5, [1, 0] * 5, 0.0, False),  # equal means, swapped rows
    ],
)
def test_paired_gain_rule(new, old, min_gain_se, significant):
    assert paired_gain(new, old, min_gain_se).significant is significant


def test_paired_gain_counts_and_standard_error():
    g = paired_gain([1, 1, 0, 1], [0, 1, 1, 1])
    assert (g.wins, g.losses, g.n) == (1, 1, 4) and g.gain == 0.0
    assert g.se == pytest.approx((2 / 3 / 4) ** 0.5)
    assert "+0.0 points on 4 examples (1 won, 1 lost)" in g.describe()


def test_paired_gain_needs_the_same_examples():
    with pytest.raises(ValueError, match="3 new against 2 old"):
        paired_gain([1, 0, 1], [1, 0])
