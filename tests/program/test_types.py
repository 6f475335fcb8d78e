"""Typed fields: parsing the type forms, coercion, errors that name the field/value/choices, save/load."""

from __future__ import annotations

import enum
from typing import Literal

import pytest

from cotune.errors import ConfigError, ParseError
from cotune.lm.fake import FakeLM
from cotune.program import ChainOfThought, Predict, Program
from cotune.program.format import parse
from cotune.program.signature import Field, InputField, OutputField, Signature, ensure_signature
from cotune.program.types import FieldType, TypeSpecError


@pytest.mark.parametrize(
    "spec, kind, coerced",
    [
        ("float", "float", [(" 42 ", 42.0), ("1,000", 1000.0), ("$18.50", 18.5), ("**7**.", 7.0)]),
        ("int", "int", [("3", 3), (" -12 ", -12), ("4.0", 4)]),
        ("bool", "bool", [("True", True), ("no", False), ("**yes**", True)]),
        ("Literal['setosa', 'versicolor']", "choice", [("Versicolor", "versicolor"), ("Iris setosa.", "setosa")]),
        ("Literal[A, B, C]", "choice", [("(B)", "B"), ("c", "C")]),
        ("list[int]", "list", [("[1, 2, 3]", [1, 2, 3]), ("1, 2", [1, 2])]),
        ("json", "json", [('{"a": 1}', {"a": 1}), ('```json\n{"a": [2]}\n```', {"a": [2]})]),
        ("str", "str", [("  hi  ", "hi")]),
    ],
)
def test_type_forms_coerce(spec, kind, coerced):
    t = FieldType.parse(spec)
    assert t.kind == kind
    for text, value in coerced:
        assert t.coerce(text) == value


@pytest.mark.parametrize(
    "spec, text, message",
    [
        ("float", "about forty", "expected a number"),
        ("float", "3 or 4", "expected one number"),
        ("int", "2.5", "expected an integer"),
        ("bool", "maybe", "true or false"),
        ("Literal['setosa', 'versicolor']", "rose", "expected one of: setosa, versicolor"),
        ("Literal['setosa', 'versicolor']", "setosa or versicolor", "expected one of"),
        ("json", "{not json", "expected JSON"),
    ],
)
def test_values_that_do_not_fit_raise(spec, text, message):
    with pytest.raises(ValueError, match=message):
        FieldType.parse(spec).coerce(text)


def test_parse_error_names_field_value_and_choices():
    sig = Signature.parse("question -> species: Literal['setosa', 'versicolor', 'virginica']")
    with pytest.raises(ParseError) as info:
        parse(sig, "Species: rose")
    e = info.value
    assert e.field == "species" and e.value == "rose" and e.raw == "Species: rose"
    assert "'species'" in str(e) and "'rose'" in str(e) and "setosa, versicolor, virginica" in str(e)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("q -> a: Literal[]", "at least one choice"),
        ("q -> a: Literal['x', 'X']", "repeat"),
        ("q -> a: set[int]", r"unknown type 'set\[int\]'"),
        ("q -> a: list[list[int]]", "a list holds"),
    ],
)
def test_bad_types_fail_at_signature_creation_naming_the_field(spec, message):
    with pytest.raises(ConfigError, match=message) as info:
        Signature.parse(spec)
    assert "field 'a'" in str(info.value)


def test_annotation_types():
    class Color(enum.Enum):
        RED = "red"
        BLUE = "blue"

    assert Field("a", type=float).type.kind == "float"
    assert Field("a", type=Literal["x", "y"]).type.choices == ("x", "y")
    assert Field("a", type=Color).type.choices == ("red", "blue")
    assert Field("a", type=list[bool]).type.spec == "list[bool]"
    with pytest.raises(ConfigError, match="field 'a'.*cannot use 'set'"):
        Field("a", type=set)


def test_pydantic_model_field_validates():
    pydantic = pytest.importorskip("pydantic")

    class Point(pydantic.BaseModel):
        x: int
        y: int

    t = FieldType.from_annotation(Point)
    assert t.kind == "json" and t.json_schema()["properties"]["x"]["type"] == "integer"
    with pytest.raises(ValueError, match="does not fit Point"):
        t.coerce('{"x": 1}')


def test_class_based_signature():
    class Classify(Signature):
        """Name the species."""

        petal_length: float = InputField(desc="in cm")
        species: Literal["setosa", "versicolor"] = OutputField()
        confidence: float = OutputField(required=False)

    sig = ensure_signature(Classify)
    assert sig.instructions == "Name the species."
    assert [(f.name, f.type.kind, f.required) for f in sig.outputs] == [
        ("species", "choice", True),
        ("confidence", "float", False),
    ]
    assert sig.inputs[0].desc == "in cm" and sig.inputs[0].type.kind == "float"
    pred = Predict(Classify).bind(FakeLM(["Species: Versicolor\nConfidence: 0.9"]))(petal_length=4.1)
    assert (pred.species, pred.confidence) == ("versicolor", 0.9)


def test_class_signature_needs_field_markers():
    class Bad(Signature):
        question: str

    with pytest.raises(ConfigError, match="Bad.question needs a value of InputField"):
        ensure_signature(Bad)


def test_string_form_keeps_commas_inside_choices():
    sig = Signature.parse("q -> a: Literal['x, y', 'z'], b: int")
    assert sig.outputs[0].type.choices == ("x, y", "z") and sig.outputs[1].type.kind == "int"


class Typed(Program):
    def __init__(self):
        self.solve = ChainOfThought("question -> answer: float, unit: Literal['cm', 'm']")

    def forward(self, question):
        return self.solve(question=question)


def test_saved_programs_keep_types(tmp_path):
    path = Typed().save(tmp_path / "p.json")
    # A program whose code lost the types gets the saved ones back.
    loaded = Typed()
    loaded.solve.signature = Signature.parse("question -> reasoning, answer, unit")
    loaded.load(path, bind_saved_lm=False)
    out = loaded.solve.signature.outputs
    assert [f.type.spec for f in out] == ["str", "float", "Literal['cm', 'm']"]
    pred = loaded.solve.bind(FakeLM(["Answer: 2.5\nUnit: M"]))(question="?")
    assert (pred.answer, pred.unit) == (2.5, "m")


def test_type_spec_round_trip():
    for spec in ["int", "float", "bool", "str", "list[int]", "Literal['a', 'b']", "list[Literal['x', 'y']]"]:
        t = FieldType.parse(spec)
        assert FieldType.parse(t.spec) == t and FieldType.from_dict(t.to_dict()) == t
    with pytest.raises(TypeSpecError, match="unknown field type kind"):
        FieldType("tuple")
