"""Format adapters: how a `Predict` turns its signature, instruction, demos and inputs into messages, what
its completion must look like, and how the completion is read back into fields.

`TextAdapter`, the default, is cotune's ``Label: value`` format (`cotune.program.format`) with its grammar
(`cotune.program.grammar`), and the JSON variant of that format for servers that constrain completions
to a JSON schema. A predictor takes another with ``Predict(..., adapter=...)``: any object with the
methods of `FormatAdapter`. The adapter is code, like the LM a program is bound to, so it is not saved
with the program; a program built with one keeps it when it loads a saved state.

The adapter is the only thing that renders a call, for prompting and fine-tuning alike: a Θ step trains
on the messages the adapter rendered at inference (with or without the demos, see
`cotune.training.sft_data`), and on gold labels written as the completion the adapter renders for them
(`FormatAdapter.completion`). An adapter without ``completion`` prompts and parses as usual; only
training on labels (``BootstrapFinetune(fill_with_labels=True)``) needs it and says so.

Example:
    >>> from cotune.lm.fake import FakeLM
    >>> from cotune.program.predict import Predict
    >>> class Shouting(TextAdapter):
    ...     def parse(self, signature, text):
    ...         return {name: value.upper() for name, value in super().parse(signature, text).items()}
    >>> qa = Predict("question -> answer", adapter=Shouting()).bind(FakeLM(["Answer: yes"]))
    >>> qa(question="Is it?").answer
    'YES'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from cotune.lm.constraint import Constraint
from cotune.program import format as fmt
from cotune.program.grammar import constraint
from cotune.program.signature import Signature

Messages = list[dict[str, str]]


class FormatAdapter(Protocol):
    """What a `Predict` asks of a format."""

    def messages(
        self,
        signature: Signature,
        instruction: str,
        demos: Sequence[Mapping[str, Any]],
        inputs: Mapping[str, Any],
        *,
        structured_output: str | None = None,
    ) -> Messages:
        """The messages of one call. ``structured_output`` says how the LM will constrain the completion
        ("grammar", "json_schema", or None for free text), so the prompt can ask for that shape."""
        ...

    def constraint(self, signature: Signature, *, budget_tokens: int | None = None) -> Constraint | None:
        """What the completion must look like where the LM can constrain it (None: free text).
        ``budget_tokens`` caps the first output field's free text (see `cotune.program.grammar`)."""
        ...

    def parse(self, signature: Signature, text: str) -> dict[str, Any]:
        """The output fields read from a completion, each coerced to its type.

        Raises:
            ParseError: a required field is missing or does not fit its type.
        """
        ...

    def completion(
        self, signature: Signature, outputs: Mapping[str, Any], *, structured_output: str | None = None
    ) -> str:
        """The completion an LM answering with these ``outputs`` writes in this format (those present; an
        optional output may be missing), so that `parse` reads them back. What a Θ step trains on for a
        gold label; only that needs it."""
        ...


class TextAdapter:
    """cotune's ``Label: value`` format: `cotune.program.format` renders and parses it, and
    `cotune.program.grammar` constrains completions to it (or to its JSON variant on servers)."""

    def messages(
        self,
        signature: Signature,
        instruction: str,
        demos: Sequence[Mapping[str, Any]],
        inputs: Mapping[str, Any],
        *,
        structured_output: str | None = None,
    ) -> Messages:
        style = "json" if structured_output == "json_schema" else "labels"
        return fmt.render(signature, instruction, demos, inputs, style)

    def constraint(self, signature: Signature, *, budget_tokens: int | None = None) -> Constraint | None:
        return constraint(signature, budget_tokens=budget_tokens)

    def parse(self, signature: Signature, text: str) -> dict[str, Any]:
        return fmt.parse(signature, text)

    def completion(
        self, signature: Signature, outputs: Mapping[str, Any], *, structured_output: str | None = None
    ) -> str:
        # As the demos' answers are rendered: the JSON object where the server constrains to a schema.
        render = fmt.render_json if structured_output == "json_schema" else fmt.render_fields
        return render(signature.outputs, outputs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
