"""The LM layer sits below programs: nothing in cotune.lm imports a package above it."""

import ast
import pathlib

import cotune.lm

ABOVE = ("program", "evaluate", "training", "tasks", "optimize", "experiment", "cli")


def _imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_lm_imports_nothing_from_the_layers_above():
    upward = {
        f"{path.name} -> {module}"
        for path in pathlib.Path(cotune.lm.__file__).parent.glob("*.py")
        for module in _imported_modules(path)
        if module.split(".")[:2] in (["cotune", layer] for layer in ABOVE)
    }
    assert upward == set()


def test_constraint_lives_in_the_lm_layer():
    from cotune.lm.base import GenerationConfig
    from cotune.lm.constraint import Constraint
    from cotune.program.grammar import constraint
    from cotune.program.signature import Signature

    c = constraint(Signature.parse("question -> answer: int"))
    assert type(c) is Constraint
    assert GenerationConfig(constraint=c).constraint is c
