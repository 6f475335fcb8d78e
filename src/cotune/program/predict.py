"""`Predict`: one LM call — render instruction + demos + inputs to messages, generate, parse outputs.

The rendering, the constraint and the parsing are the format adapter's (`cotune.program.adapter`);
by default cotune's ``Label: value`` text format."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cotune.data.example import Example
from cotune.errors import ConfigError, ParseError, UnknownChoiceError
from cotune.lm.constraint import Constraint
from cotune.program import trace
from cotune.program.adapter import FormatAdapter, TextAdapter
from cotune.program.prediction import Prediction
from cotune.program.signature import Signature, ensure_signature

if TYPE_CHECKING:  # annotations only: predictors call the LM they are bound to
    from cotune.lm.base import LM


# Demo selectors saved with a predictor, by the "kind" in their state (`cotune.program.selectors`).
SELECTORS = ("knn",)


def load_selector(state: Mapping[str, Any], demos: list[Example]) -> Any:
    """Rebuild a saved demo selector (``Class.from_state(state, demos)``).

    Raises:
        UnknownChoiceError: a selector kind this version does not know.
    """
    kind = state.get("kind")
    if kind not in SELECTORS:
        raise UnknownChoiceError("demo selector", kind, SELECTORS)
    from cotune.program.selectors import KNNSelector  # numpy and the embedders: only when a program has one

    return KNNSelector.from_state(state, demos)


class Predict:
    """A named LM call with prompt parameters: an instruction and few-shot demos.

    Args:
        signature: ``"inputs -> outputs"`` or a `Signature`.
        instruction: overrides the signature's instruction.
        demos: examples holding the signature's fields, shown as earlier turns.
        config: generation overrides for this predictor (e.g. ``{"max_tokens": 64}``).
        constrained: constrain the completion to the signature's format and types where the LM can
            (a grammar on local models, structured outputs on servers); None follows the LM's setting
            (on by default). False lets the model write freely; the lenient parser reads it.
        reasoning_budget: caps the tokens of the first output field when it is free text followed by
            other fields (`ChainOfThought` sets it), so a constrained run always reaches its answer.
        adapter: the format of the call (messages, constraint, parsing, and labels written as a completion;
            see `cotune.program.adapter`); None for `TextAdapter`. Not saved with the program: it is code,
            kept by `load_state`.

    Example:
        >>> from cotune.lm.fake import FakeLM
        >>> qa = Predict("question -> answer").bind(FakeLM(["Answer: Paris"]))
        >>> qa(question="Capital of France?").answer
        'Paris'
    """

    def __init__(
        self,
        signature: str | Signature,
        *,
        instruction: str | None = None,
        demos: Sequence[Mapping[str, Any]] = (),
        config: Mapping[str, Any] | None = None,
        constrained: bool | None = None,
        reasoning_budget: int | None = None,
        adapter: FormatAdapter | None = None,
    ):
        if reasoning_budget is not None and (not isinstance(reasoning_budget, int) or reasoning_budget < 1):
            raise ConfigError(f"reasoning_budget must be a positive number of tokens or None, got {reasoning_budget!r}")
        self.signature = ensure_signature(signature)
        self.constrained = constrained
        self.reasoning_budget = reasoning_budget
        self.adapter: FormatAdapter = adapter if adapter is not None else TextAdapter()
        self.instruction = instruction if instruction is not None else self.signature.instructions
        self.demos: list[Example] = [d if isinstance(d, Example) else Example(d) for d in demos]
        self.config: dict[str, Any] = dict(config or {})
        self.lm: LM | None = None
        # Per-input demo choice (kNN few-shot); None means the fixed ``demos``.
        self.demo_selector: Any = None

    def bind(self, lm: LM) -> Predict:
        self.lm = lm
        return self

    def demos_for(self, inputs: Mapping[str, Any]) -> list[Example]:
        if self.demo_selector is not None:
            return list(self.demo_selector(inputs))
        return self.demos

    def structured_output(self) -> str | None:
        """How this predictor's calls are constrained on its LM: "grammar", "json_schema" or None."""
        if self.lm is None:
            return None
        on = self.constrained if self.constrained is not None else self.lm.constrained
        return self.lm.structured_output if on else None

    def constraint(self) -> Constraint | None:
        """The `Constraint` sent with each call, or None when the completion is free."""
        if self.structured_output() is None:
            return None
        return self.adapter.constraint(self.signature, budget_tokens=self.reasoning_budget)

    def messages(self, **inputs: Any) -> list[dict[str, str]]:
        """The exact messages this predictor sends for ``inputs``."""
        return self._render(self.demos_for(inputs), inputs)

    def zero_shot_messages(self, **inputs: Any) -> list[dict[str, str]]:
        """The messages this predictor sends for ``inputs`` once its demos are gone: what a Θ step that
        strips demos trains on, and what the program it returns sends."""
        return self._render((), inputs)

    def completion(self, outputs: Mapping[str, Any]) -> str:
        """The completion that answers with ``outputs`` in this predictor's format (its adapter's), as its
        LM would write it: what a Θ step trains on for gold labels.

        Raises:
            ConfigError: the adapter cannot render one (it has no ``completion`` method).
        """
        render = getattr(self.adapter, "completion", None)
        if render is None:
            raise ConfigError(
                f"the format adapter {type(self.adapter).__name__} cannot write labels as a completion: give it a "
                "completion(signature, outputs, *, structured_output=None) method (see "
                "cotune.program.adapter.FormatAdapter), or train on runs only (fill_with_labels=False)"
            )
        return render(self.signature, outputs, structured_output=self.structured_output())

    def _render(self, demos: Sequence[Mapping[str, Any]], inputs: Mapping[str, Any]) -> list[dict[str, str]]:
        return self.adapter.messages(
            self.signature, self.instruction, demos, inputs, structured_output=self.structured_output()
        )

    def __call__(self, **inputs: Any) -> Prediction:
        return self.forward(**inputs)

    def forward(self, **inputs: Any) -> Prediction:
        if self.lm is None:
            raise ConfigError("this predictor is not bound to an LM; call program.bind(lm) first")
        demos = self.demos_for(inputs)  # once: a kNN selector embeds the inputs to choose them
        messages = self._render(demos, inputs)
        overrides = dict(self.config)
        rule = self.constraint()
        if rule is not None:
            overrides["constraint"] = rule
        t0 = time.perf_counter()
        completion = self.lm(messages, **overrides)
        usage = {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "seconds": time.perf_counter() - t0,
            "cached": completion.cached,
        }
        recorder = trace.current()
        kept_inputs = {k: inputs[k] for k in self.signature.input_names}

        def step(outputs: dict[str, Any] | None, error: str | None = None) -> trace.TraceStep:
            # The call's prompt without its demos too, rendered by the same adapter: what a Θ step that
            # strips demos trains on (a trace cannot tell demo turns from others in the messages alone).
            zero_shot = self._render((), inputs) if demos else None
            return trace.TraceStep(
                recorder.name_of(self), kept_inputs, outputs, messages, completion.text, usage, error, zero_shot
            )

        try:
            outputs = self.adapter.parse(self.signature, completion.text)
        except ParseError as e:
            if recorder is not None:
                recorder.add(step(None, str(e)))
            raise
        if recorder is not None:
            recorder.add(step(outputs))
        return Prediction(outputs)

    # -- state ---------------------------------------------------------------------------------------
    def dump_state(self) -> dict[str, Any]:
        state = {
            "signature": self.signature.to_dict(),
            "instruction": self.instruction,
            "demos": [d.to_dict() for d in self.demos],
            "config": self.config,
            "constrained": self.constrained,
            "reasoning_budget": self.reasoning_budget,
        }
        if hasattr(self.demo_selector, "dump_state"):  # a saveable selector, e.g. a kNN index over the demos
            state["selector"] = self.demo_selector.dump_state()
        return state

    def load_state(self, state: Mapping[str, Any]) -> Predict:
        saved = Signature.from_dict(state["signature"])
        if saved.input_names != self.signature.input_names or saved.output_names != self.signature.output_names:
            raise ConfigError(f"saved signature '{saved}' does not match this predictor's '{self.signature}'")
        # The saved types win: a program saved with typed fields parses and constrains as it was optimized.
        self.signature = Signature(saved.inputs, saved.outputs, self.signature.instructions)
        self.instruction = state["instruction"]
        self.demos = [Example(d) for d in state.get("demos", [])]
        self.config = dict(state.get("config", {}))
        self.constrained = state.get("constrained", self.constrained)
        self.reasoning_budget = state.get("reasoning_budget", self.reasoning_budget)
        self.demo_selector = load_selector(state["selector"], self.demos) if state.get("selector") else None
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.signature}', demos={len(self.demos)})"
