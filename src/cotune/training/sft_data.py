"""Traces → chat training examples → token ids with a completion-only loss mask.

Every predictor call in a kept trace becomes one `ChatExample`: the exact messages the predictor sent at
inference (``TraceStep.messages``) and the completion the model produced (``TraceStep.completion``).

Few-shot demos in the prompt (``keep_demos``): kept by default. Then the model is trained on exactly
what inference sends, so the fine-tuned program runs on the prompts it was trained on, and in Π→Θ→Π
the second prompt step re-bootstraps demos for a model that has learned to read demo turns. Stripping
them (``keep_demos=False``) trains on zero-shot prompts: shorter sequences and a cheaper program to
serve, and `BootstrapFinetune` then returns a program without demos so inference still matches training.
The zero-shot prompt is the one the predictor's format adapter rendered for the call without its demos
(``TraceStep.zero_shot``, recorded with the call), never the sent messages cut by position: where the
demos sit is the adapter's business. Measured once on Iris with SmolLM2-135M (six labeled demos,
21 passing traces, lr 3e-4): 0.38 test accuracy keeping the demos, 0.36 stripping them: equal within
noise, at ~3.5x fewer tokens per example.

Example:
    >>> from cotune.program.trace import TraceStep
    >>> msgs = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "Q: 1"},
    ...         {"role": "assistant", "content": "A: 1"}, {"role": "user", "content": "Q: 2"}]
    >>> step = TraceStep("qa", {"q": "2"}, {"a": "2"}, msgs, "A: 2", zero_shot=[msgs[0], msgs[-1]])
    >>> [len(ex.messages) for ex in chat_examples([[step]]) + chat_examples([[step]], keep_demos=False)]
    [4, 2]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cotune.program.trace import TraceStep

IGNORE_INDEX = -100  # label value that torch's cross-entropy skips


@dataclass(frozen=True)
class ChatExample:
    """One supervised example: prompt ``messages`` → assistant ``completion``, from predictor ``predictor``."""

    messages: tuple[tuple[tuple[str, str], ...], ...]
    completion: str
    predictor: str = "self"

    @classmethod
    def create(cls, messages: Sequence[dict[str, str]], completion: str, predictor: str = "self") -> ChatExample:
        return cls(tuple(tuple(sorted(m.items())) for m in messages), completion, predictor)

    @property
    def chat(self) -> list[dict[str, str]]:
        """The prompt messages as a list of dicts (what chat templates take)."""
        return [dict(m) for m in self.messages]

    def to_dict(self) -> dict[str, Any]:
        return {"messages": self.chat, "completion": self.completion, "predictor": self.predictor}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChatExample:
        return cls.create(d["messages"], d["completion"], d.get("predictor", "self"))


def chat_examples(
    traces: Iterable[Sequence[TraceStep]],
    *,
    keep_demos: bool = True,
    predictors: Iterable[str] | None = None,
    repeats: Sequence[int] | None = None,
) -> list[ChatExample]:
    """One `ChatExample` per successful predictor call, deduplicated, in first-seen order.

    Args:
        traces: the steps of each kept trace.
        keep_demos: keep the demo turns in the prompt (see the module docstring for why this is the default).
        predictors: only calls of these predictors (one adapter per predictor); None keeps all (multitask).
        repeats: one count per trace: each call is listed that many times in a row (the count of the trace
            where the call is first seen), e.g. to balance classes (`cotune.optimize.traces.balance_classes`).
    """
    wanted = None if predictors is None else set(predictors)
    seen: set[ChatExample] = set()
    out: list[ChatExample] = []
    for i, steps in enumerate(traces):
        for step in steps:
            if step.error is not None or (wanted is not None and step.predictor not in wanted):
                continue
            messages = step.messages if keep_demos else step.without_demos()
            ex = ChatExample.create(messages, step.completion, step.predictor)
            if ex not in seen:
                seen.add(ex)
                out += [ex] * (1 if repeats is None else repeats[i])
    return out


def data_hash(examples: Sequence[ChatExample]) -> str:
    """sha256 over the examples in order: identifies an adapter's training data."""
    blob = json.dumps([ex.to_dict() for ex in examples], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class TokenizedExample:
    """Token ids and labels (``IGNORE_INDEX`` on prompt tokens) of one example."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_completion_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tokenize(example: ChatExample, tokenizer: Any, max_length: int) -> TokenizedExample | None:
    """Render ``example`` with the tokenizer's chat template; loss only on the completion tokens.

    The prompt is rendered exactly as the HF backend renders it at inference (chat template with the
    generation prompt); the target is what the template puts after it for the assistant turn: the
    completion and the end-of-turn token, so the model also learns to stop. Sequences longer than
    ``max_length`` are cut at the end; returns None when no completion token is left.
    """
    chat = example.chat
    prompt_text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(
        chat + [{"role": "assistant", "content": example.completion}], tokenize=False
    )
    prompt_ids = _encode(tokenizer, prompt_text)
    if full_text.startswith(prompt_text):
        target_ids = _encode(tokenizer, full_text[len(prompt_text) :])
        eos = tokenizer.eos_token_id
        if eos in target_ids:  # generation stops at end-of-turn; what the template adds after it is never produced
            target_ids = target_ids[: len(target_ids) - target_ids[::-1].index(eos)]
    else:  # templates that rewrite earlier turns once an answer follows: append completion + EOS
        target_ids = _encode(tokenizer, example.completion) + [tokenizer.eos_token_id]
    input_ids = prompt_ids + target_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + target_ids
    truncated = len(input_ids) > max_length
    if truncated:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
        if all(label == IGNORE_INDEX for label in labels):
            return None
    return TokenizedExample(input_ids, labels, truncated)


def _encode(tokenizer: Any, text: str) -> list[int]:
    # The chat template already holds every special token; adding BOS again would shift the prompt.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
