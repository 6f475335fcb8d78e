"""`Program`: the base class for user code that calls predictors and tools."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotune.errors import ConfigError
from cotune.program.predict import Predict
from cotune.program.saved import read_state, save_program
from cotune.program.saved_check import FORMAT_VERSION

if TYPE_CHECKING:
    from cotune.lm.base import LM


class Program:
    """Subclass it, create predictors in ``__init__`` and call them in ``forward``.

    Predictors are found by walking attributes (also inside lists, tuples, dicts and nested programs), so
    optimizers can see and change each one by name. Other attributes (retrievers, tools) are shared,
    not copied, by `deepcopy`.

    Example:
        >>> from cotune.lm.fake import FakeLM
        >>> from cotune.program import ChainOfThought
        >>> class QA(Program):
        ...     def __init__(self):
        ...         self.answer = ChainOfThought("question -> answer")
        ...     def forward(self, question):
        ...         return self.answer(question=question)
        >>> qa = QA().bind(FakeLM(["Reasoning: easy.\\nAnswer: 4"]))
        >>> [name for name, _ in qa.named_predictors()], qa(question="2+2?").answer
        (['answer'], '4')
    """

    def forward(self, **inputs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # -- predictors ----------------------------------------------------------------------------------
    def named_predictors(self) -> list[tuple[str, Predict]]:
        """Every predictor with a dotted path name, in attribute order."""
        out: list[tuple[str, Predict]] = []
        seen: set[int] = set()

        def walk(obj: Any, name: str) -> None:
            if id(obj) in seen:
                return
            if isinstance(obj, Predict):
                seen.add(id(obj))
                out.append((name, obj))
            elif isinstance(obj, Program):
                seen.add(id(obj))
                for key, value in vars(obj).items():
                    walk(value, f"{name}.{key}" if name else key)
            elif isinstance(obj, (list, tuple)):
                for i, value in enumerate(obj):
                    walk(value, f"{name}[{i}]")
            elif isinstance(obj, dict):
                for key, value in obj.items():
                    walk(value, f"{name}[{key!r}]")

        walk(self, "")
        return out

    def predictors(self) -> list[Predict]:
        return [p for _, p in self.named_predictors()]

    def predictor(self, name: str) -> Predict:
        named = dict(self.named_predictors())
        if name not in named:
            raise ConfigError(f"no predictor {name!r}; this program has: {', '.join(named)}")
        return named[name]

    # -- LM binding ----------------------------------------------------------------------------------
    def bind(self, lm: LM) -> Program:
        """Bind every predictor to ``lm`` (in place) and return the program, so ``P().bind(lm)`` reads well."""
        for p in self.predictors():
            p.bind(lm)
        return self

    @property
    def lm(self) -> LM | None:
        """The LM all predictors share, or None when unbound; raises if they differ."""
        lms = {id(p.lm): p.lm for p in self.predictors()}
        if len(lms) > 1:
            raise ConfigError("predictors are bound to different LMs; read each predictor's .lm")
        return next(iter(lms.values()), None)

    # -- copies --------------------------------------------------------------------------------------
    def deepcopy(self) -> Program:
        """A copy whose predictors (instructions, demos) are independent; LMs, retrievers and tools are shared."""
        return _copy_structure(self, {})

    def reset_copy(self) -> Program:
        """A deep copy with every predictor's demos removed and its instruction restored to the signature's."""
        new = self.deepcopy()
        for p in new.predictors():
            p.demos = []
            p.demo_selector = None  # a per-input selector would bring the demos back
            p.instruction = p.signature.instructions
        return new

    # -- state ---------------------------------------------------------------------------------------
    def dump_state(self) -> dict[str, Any]:
        """Prompts per predictor, the class path, and the LM binding: ``lm`` when the predictors share one
        LM, else ``lms`` with one spec per predictor (e.g. one adapter each after ``multitask=False``)."""
        named = self.named_predictors()
        specs = {name: p.lm.spec() if p.lm is not None else None for name, p in named}
        shared = len({json.dumps(s, sort_keys=True, default=str) for s in specs.values()}) <= 1
        state = {
            "format_version": FORMAT_VERSION,
            "program": class_path(type(self)),
            "predictors": {name: p.dump_state() for name, p in named},
            "lm": next(iter(specs.values()), None) if shared else None,
        }
        return state if shared else state | {"lms": specs}

    def load_state(self, state: dict[str, Any]) -> Program:
        named = dict(self.named_predictors())
        saved = state.get("predictors", {})
        if set(saved) != set(named):
            raise ConfigError(f"saved predictors {sorted(saved)} do not match this program's {sorted(named)}")
        for name, pstate in saved.items():
            named[name].load_state(pstate)
        return self

    def save(self, path: str | Path, **metadata: Any) -> Path:
        """Write instructions, demos and the LM binding (model, adapter) as JSON, atomically; an adapter folder
        is recorded relative to the file, so the file and its run folder can move together. ``metadata`` is
        kept too."""
        return save_program(self, path, **metadata)

    def load(self, path: str | Path, *, lm: LM | None = None, bind_saved_lm: bool = True) -> Program:
        """Restore state saved by `save` into this program (same structure) and bind an LM.

        Args:
            lm: the LM to bind; by default the saved binding is reloaded (model and adapter), if any.
            bind_saved_lm: set False to restore prompts only.
        """
        state = read_state(path)
        self.load_state(state)
        if lm is None and bind_saved_lm and (state.get("lm") or state.get("lms")):
            # Turning a saved spec into a model is the LM registry's job; imported here to keep
            # `import cotune.program` free of backends.
            from cotune.lm.registry import from_spec

            base_dir = Path(path).parent  # adapter paths are relative to the file
            if state.get("lms"):
                loaded: LM | None = None
                for name, predictor in self.named_predictors():
                    spec = state["lms"].get(name)
                    if spec:  # the first load brings the weights; the others share them (`like=`)
                        predictor.bind(from_spec(spec, like=loaded, base_dir=base_dir))
                        loaded = loaded or predictor.lm
                return self
            lm = from_spec(state["lm"], base_dir=base_dir)
        if lm is not None:
            self.bind(lm)
        return self

    def fingerprint(self) -> str:
        """A short hash of the prompt state (instructions and demos), e.g. to label traces."""
        state = {n: p.dump_state() for n, p in self.named_predictors()}
        blob = json.dumps(state, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={p!r}" for n, p in self.named_predictors())
        return f"{type(self).__name__}({inner})"


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def program_for_state(program: Program, state: dict[str, Any]) -> Program:
    """The program ``state`` was saved from, built around ``program`` (a fresh copy of the task's program).

    The saved class path decides: a program wrapper (a class with a ``wrap_state(inner, state)``
    classmethod, such as `ChoiceShuffleEnsemble`) is rebuilt around ``program``; otherwise ``program``
    itself is returned. Only classes of modules already imported or of cotune itself are looked up, so a
    program file cannot make cotune import arbitrary code.
    """
    import importlib
    import sys

    saved = state.get("program")
    if not isinstance(saved, str) or saved == class_path(type(program)) or "." not in saved:
        return program
    module, _, name = saved.rpartition(".")
    if module not in sys.modules and not module.startswith("cotune."):
        return program
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return program
    wrap = getattr(cls, "wrap_state", None)
    if isinstance(cls, type) and issubclass(cls, Program) and callable(wrap):
        return wrap(program, state)
    return program


def _copy_structure(obj: Any, memo: dict[int, Any]) -> Any:
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, Predict):
        new = copy.copy(obj)
        new.demos = list(obj.demos)
        new.config = dict(obj.config)
        memo[id(obj)] = new
        return new
    if isinstance(obj, Program):
        new = copy.copy(obj)
        memo[id(obj)] = new
        for key, value in vars(obj).items():
            setattr(new, key, _copy_structure(value, memo))
        return new
    if isinstance(obj, list):
        return [_copy_structure(v, memo) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_copy_structure(v, memo) for v in obj)
    if isinstance(obj, dict):
        return {k: _copy_structure(v, memo) for k, v in obj.items()}
    return obj  # LMs, retrievers, tools: shared
