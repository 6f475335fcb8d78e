"""Checks a saved program's state field by field, so a hand-edited or damaged file fails on load with one
line naming the file and the field, instead of a traceback later or an evaluation that scores every row 0
(an instruction of null, a temperature of "hot"). Unknown top-level keys are kept: program wrappers save
their own (an ensemble's settings).

Example:
    >>> check_state({"format_version": 1, "predictors": {}, "lm": "smollm2-135m"}, "p.json")
    Traceback (most recent call last):
    ...
    cotune.errors.ConfigError: p.json: lm must be an object like {"backend": "hf", "model": "smollm2-135m"}, got 'smollm2-135m'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cotune.errors import ConfigError

FORMAT_VERSION = 1  # the newest format this version reads and writes


class _Bad(Exception):
    """One problem: the field's dotted name and what is wrong with it (``said``: the problem is a sentence
    of its own, shown after a colon)."""

    def __init__(self, where: str, problem: str, *, said: bool = False):
        super().__init__(where, problem)
        self.where, self.problem, self.said = where, problem, said


def check_state(state: Any, source: object) -> dict[str, Any]:
    """``state`` when it is a program state this version can load.

    Raises:
        ConfigError: ``{source}: {field} {problem}`` for the first bad field; a ``format_version`` newer than
            `FORMAT_VERSION` says to upgrade.
    """
    try:
        _check(state)
    except _Bad as bad:
        raise ConfigError(f"{source}: {bad.where}{': ' if bad.said else ' '}{bad.problem}") from None
    return state


def _check(state: Any) -> None:
    if not isinstance(state, dict) or "predictors" not in state:
        raise _Bad("predictors", "is missing: this is not a saved cotune program")
    version = state.get("format_version", 1)  # files from before the field are version 1
    if not _is_int(version) or version < 1:
        raise _Bad("format_version", f"must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        newer = f"is from a newer cotune (this one reads format_version {FORMAT_VERSION}); upgrade cotune to load it"
        raise _Bad(f"format_version {version}", newer)
    _object(state["predictors"], "predictors")
    for name, pstate in state["predictors"].items():
        _predictor(pstate, f"predictors.{name}")
    if state.get("lm") is not None:
        _lm(state["lm"], "lm")
    if state.get("lms") is not None:
        _object(state["lms"], "lms")
        for name, spec in state["lms"].items():
            if spec is not None:
                _lm(spec, f"lms.{name}")
    if state.get("program") is not None and not isinstance(state["program"], str):
        raise _Bad("program", f"must be a class path string, got {state['program']!r}")
    if state.get("metadata") is not None:
        _metadata(state["metadata"])


def _predictor(p: Any, at: str) -> None:
    _object(p, at)
    _signature(p.get("signature"), f"{at}.signature")
    if not isinstance(p.get("instruction"), str):
        raise _Bad(f"{at}.instruction", f"must be a string, got {p.get('instruction')!r}")
    demos = p.get("demos", [])
    if not isinstance(demos, list):
        raise _Bad(f"{at}.demos", f"must be a list of objects, got {_short(demos)}")
    for i, demo in enumerate(demos):
        if not isinstance(demo, dict):
            raise _Bad(f"{at}.demos[{i}]", f"must be an object of field values, got {_short(demo)}")
    config = p.get("config", {})
    _object(config, f"{at}.config")
    _generation_config(config, f"{at}.config")
    if p.get("constrained") not in (None, True, False):
        raise _Bad(f"{at}.constrained", f"must be true, false or null, got {p['constrained']!r}")
    budget = p.get("reasoning_budget")
    if budget is not None and (not _is_int(budget) or budget < 1):
        raise _Bad(f"{at}.reasoning_budget", f"must be a positive integer or null, got {budget!r}")
    if p.get("selector") is not None:
        _object(p["selector"], f"{at}.selector")


def _signature(sig: Any, at: str) -> None:
    _object(sig, at)
    for side in ("inputs", "outputs"):
        fields = sig.get(side)
        if not isinstance(fields, list):
            raise _Bad(f"{at}.{side}", f"must be a list of fields, got {_short(fields)}")
        for i, f in enumerate(fields):
            _object(f, f"{at}.{side}[{i}]")
            if not isinstance(f.get("name"), str) or not f["name"]:
                raise _Bad(f"{at}.{side}[{i}].name", f"must be a non-empty string, got {f.get('name')!r}")


def _generation_config(config: Mapping[str, Any], at: str) -> None:
    # What a generation parameter is, and its valid range, is the LM layer's; imported here (not at the
    # top) so `import cotune.program` stays free of it, as `Program.load` does for the LM registry.
    from cotune.lm.base import GenerationConfig

    defaults = GenerationConfig()
    for key, value in config.items():
        if key not in defaults.to_dict() or key == "constraint":  # a constraint is code, never saved
            names = [k for k in defaults.to_dict() if k != "constraint"]
            raise _Bad(at, f"unknown generation parameter {key!r}; choose one of: {', '.join(names)}", said=True)
        default = getattr(defaults, key)
        if isinstance(default, tuple):
            if not isinstance(value, str) and not (isinstance(value, list) and all(isinstance(s, str) for s in value)):
                raise _Bad(f"{at}.{key}", f"must be a string or a list of strings, got {value!r}")
        elif isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _Bad(f"{at}.{key}", f"must be a number, got {value!r}")
        elif isinstance(default, int) and not _is_int(value):
            raise _Bad(f"{at}.{key}", f"must be an integer, got {value!r}")
        try:
            defaults.replace(**{key: value})
        except ConfigError as e:
            raise _Bad(f"{at}.{key}", str(e), said=True) from None


def _lm(spec: Any, at: str) -> None:
    if not isinstance(spec, dict):
        raise _Bad(at, f'must be an object like {{"backend": "hf", "model": "smollm2-135m"}}, got {_short(spec)}')
    for key in ("backend", "model"):
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise _Bad(f"{at}.{key}", f"must be a non-empty string, got {spec.get(key)!r}")
    for key in ("adapter", "base_url"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise _Bad(f"{at}.{key}", f"must be a string or null, got {spec[key]!r}")


def _metadata(meta: Any) -> None:
    _object(meta, "metadata")
    if "split_seed" in meta and not _is_int(meta["split_seed"]):
        raise _Bad("metadata.split_seed", f"must be an integer, got {meta['split_seed']!r}")
    sizes = meta.get("split_sizes")
    if sizes is not None:
        _object(sizes, "metadata.split_sizes")
        for name, size in sizes.items():
            if not _is_int(size) or size < 0:
                raise _Bad(f"metadata.split_sizes.{name}", f"must be a non-negative integer, got {size!r}")


def _object(value: Any, at: str) -> None:
    if not isinstance(value, dict):
        raise _Bad(at, f"must be an object, got {_short(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
