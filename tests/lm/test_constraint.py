"""`Constraint` belongs to the LM layer, which carries it; programs build one from a signature."""


def test_constraint_lives_in_the_lm_layer():
    from cotune.lm.base import GenerationConfig
    from cotune.lm.constraint import Constraint
    from cotune.program.grammar import constraint
    from cotune.program.signature import Signature

    c = constraint(Signature.parse("question -> answer: int"))
    assert type(c) is Constraint
    assert GenerationConfig(constraint=c).constraint is c
