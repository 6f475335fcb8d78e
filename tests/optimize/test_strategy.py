"""Strategies as `StepKind`s, parsed from what users write, and the tree their prefixes form."""

from __future__ import annotations

import pytest

from cotune.errors import ConfigError
from cotune.optimize.strategy import StepKind, StrategyTree, parse_strategies, parse_strategy, strategy_name


@pytest.mark.parametrize(
    ("text", "kind"),
    [("p", StepKind.PROMPT), ("Prompt", StepKind.PROMPT), (" W ", StepKind.WEIGHTS), ("weights", StepKind.WEIGHTS)],
)
def test_step_kinds_parse_from_letters_and_words(text, kind):
    assert StepKind.parse(text) is kind


def test_a_bad_step_names_itself_the_strategy_and_the_valid_steps():
    with pytest.raises(
        ConfigError, match=r"unknown step 'Q' in strategy 'p-Q'; valid steps: p \(prompt\), w \(weights\)"
    ):
        parse_strategy("p-Q")


def test_strategies_parse_to_step_kinds_and_back_to_their_names():
    steps = parse_strategy("prompt -> weights -> prompt")
    assert steps == (StepKind.PROMPT, StepKind.WEIGHTS, StepKind.PROMPT)
    assert all(isinstance(s, StepKind) for s in steps)
    assert strategy_name(steps) == "p-w-p" and parse_strategy(strategy_name(steps)) == steps
    assert steps == ("p", "w", "p")  # a StrEnum: tuples of the letters users write compare equal


def test_the_tree_lists_each_nodes_children_and_what_a_failure_skips():
    tree = StrategyTree(parse_strategies("zero-shot,w-p,p-w-p,p-p"))
    assert [strategy_name(n) for n in tree] == ["zero-shot", "w", "p", "w-p", "p-w", "p-p", "p-w-p"]
    names = lambda nodes: [strategy_name(n) for n in nodes]  # noqa: E731
    assert names(tree.children(())) == ["w", "p"]
    assert names(tree.children(("p",))) == ["p-w", "p-p"]
    assert names(tree.children(("p", "w", "p"))) == []
    assert names(tree.descendants(("p",))) == ["p-w", "p-p", "p-w-p"]
    assert names(tree.descendants(())) == names(list(tree)[1:])
    assert [tree.position(n) for n in tree] == list(range(len(tree)))
