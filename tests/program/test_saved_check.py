"""A hand-edited or damaged program file is refused on load with one line naming the file and the field,
instead of a traceback or an evaluation that scores every row 0; a file from a newer cotune is refused."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from cotune.errors import ConfigError
from cotune.program.program import FORMAT_VERSION
from cotune.program.saved import read_program_state
from cotune.tasks import load_task


@pytest.fixture(scope="module")
def good():
    state = load_task("iris").program().dump_state()
    state["predictors"]["classify"]["demos"] = [{"petal_length": 1.4, "petal_width": 0.2, "species": "setosa"}]
    state["predictors"]["classify"]["config"] = {"temperature": 0.0, "max_tokens": 64, "stop": ["\n\n"]}
    state["lm"] = {"backend": "hf", "model": "smollm2-135m", "adapter": None}
    return state | {"metadata": {"task": "iris", "split_seed": 0, "split_sizes": {"train": 50, "dev": 50, "test": 50}}}


def write(tmp_path, state):
    path = tmp_path / "program.json"
    path.write_text(json.dumps(state))
    return path


def edited(good, change):
    state = copy.deepcopy(good)
    change(state)
    return state


def predictor(state):
    return state["predictors"]["classify"]


def test_a_good_file_loads(tmp_path, good):
    assert read_program_state(write(tmp_path, good))["predictors"] == good["predictors"]
    legacy = edited(good, lambda s: s.pop("format_version"))  # files from before the field: version 1
    assert read_program_state(write(tmp_path, legacy))["lm"] == good["lm"]
    load_task("iris").program().load(write(tmp_path, good), bind_saved_lm=False)


CASES = {
    "future version": (
        lambda s: s.update(format_version=99),
        rf"format_version 99 .*newer cotune.*reads format_version {FORMAT_VERSION}",
    ),
    "version not a number": (
        lambda s: s.update(format_version="1"),
        r"format_version must be a positive integer, got '1'",
    ),
    "lm as a string": (
        lambda s: s.update(lm="smollm2-135m"),
        r"lm must be an object like \{\"backend\": \"hf\", \"model\": \"smollm2-135m\"\}, got 'smollm2-135m'",
    ),
    "lm without a model": (lambda s: s["lm"].pop("model"), r"lm\.model must be a non-empty string, got None"),
    "lms not a dict": (lambda s: s.update(lms=["x"]), r"lms must be an object"),
    "split seed": (
        lambda s: s["metadata"].update(split_seed="zero"),
        r"metadata\.split_seed must be an integer, got 'zero'",
    ),
    "split sizes": (
        lambda s: s["metadata"].update(split_sizes={"train": -5}),
        r"metadata\.split_sizes\.train must be a non-negative integer, got -5",
    ),
    "metadata not a dict": (lambda s: s.update(metadata=[1]), r"metadata must be an object, got \[1\]"),
    "predictors not a dict": (lambda s: s.update(predictors=[]), r"predictors must be an object"),
    "demo not a dict": (
        lambda s: predictor(s)["demos"].append("setosa"),
        r"predictors\.classify\.demos\[1\] must be an object .*got 'setosa'",
    ),
    "demos not a list": (lambda s: predictor(s).update(demos={"a": 1}), r"predictors\.classify\.demos must be a list"),
    "bad temperature": (
        lambda s: predictor(s)["config"].update(temperature="hot"),
        r"predictors\.classify\.config\.temperature must be a number, got 'hot'",
    ),
    "negative temperature": (
        lambda s: predictor(s)["config"].update(temperature=-1),
        r"predictors\.classify\.config\.temperature: temperature must be >= 0, got -1",
    ),
    "unknown parameter": (
        lambda s: predictor(s)["config"].update(temprature=0.5),
        r"predictors\.classify\.config: unknown generation parameter 'temprature'; choose one of: .*temperature",
    ),
    "max tokens": (
        lambda s: predictor(s)["config"].update(max_tokens=1.5),
        r"predictors\.classify\.config\.max_tokens must be an integer, got 1.5",
    ),
    "stop": (lambda s: predictor(s)["config"].update(stop=[1]), r"config\.stop must be a string or a list of strings"),
    "config not a dict": (
        lambda s: predictor(s).update(config="fast"),
        r"predictors\.classify\.config must be an object",
    ),
    "null instruction": (
        lambda s: predictor(s).update(instruction=None),
        r"predictors\.classify\.instruction must be a string, got None",
    ),
    "no instruction": (
        lambda s: predictor(s).pop("instruction"),
        r"predictors\.classify\.instruction must be a string",
    ),
    "constrained": (
        lambda s: predictor(s).update(constrained="yes"),
        r"predictors\.classify\.constrained must be true, false or null, got 'yes'",
    ),
    "reasoning budget": (
        lambda s: predictor(s).update(reasoning_budget=0),
        r"predictors\.classify\.reasoning_budget must be a positive integer or null, got 0",
    ),
    "signature": (
        lambda s: predictor(s).update(signature="a -> b"),
        r"predictors\.classify\.signature must be an object",
    ),
    "signature fields": (
        lambda s: predictor(s)["signature"].update(outputs=[{"desc": "x"}]),
        r"predictors\.classify\.signature\.outputs\[0\]\.name must be a non-empty string",
    ),
    "predictor not a dict": (
        lambda s: s["predictors"].update(classify=None),
        r"predictors\.classify must be an object",
    ),
    "selector": (lambda s: predictor(s).update(selector="knn"), r"predictors\.classify\.selector must be an object"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_field_is_one_line_naming_the_file_and_the_field(tmp_path, good, case):
    change, message = CASES[case]
    path = write(tmp_path, edited(good, change))
    with pytest.raises(ConfigError, match=message) as info:
        read_program_state(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    with pytest.raises(ConfigError, match=message):  # the library's own load checks the same
        load_task("iris").program().load(path, bind_saved_lm=False)


def test_a_latin1_file_says_it_is_not_utf8(tmp_path, good):
    state = edited(good, lambda s: predictor(s).update(instruction="Identify the species (café data)."))
    path = tmp_path / "program.json"
    path.write_bytes(json.dumps(state, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"{path} is not UTF-8 text .*byte 0xe9 at offset \d+"):
        read_program_state(path)


def test_the_command_line_says_one_line_and_exits_2(tmp_path, good):
    path = write(tmp_path, edited(good, lambda s: s.update(lm="smollm2-135m")))
    result = subprocess.run(
        [sys.executable, "-c", "from cotune.cli import main; main()", "eval", "--program", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "lm must be an object" in " ".join(result.stderr.split())
