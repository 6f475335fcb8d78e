"""What a chat-completions request will cost, checked before it reaches the model's thread.

A local model answers every request on one thread, so work done there for one client is time every other
client waits. So, in the request's own thread:

- **context**: the prompt is counted with the model's tokenizer; a prompt that does not fit the context with
  the tokens asked for is refused (400) instead of being prefilled first. A request that did not set
  ``max_tokens`` gets what room is left, as vLLM does;
- **output schema**: a ``response_format`` schema over the size or nesting limits is refused (400): the
  grammar compiler's time grows about with the cube of the nesting depth (a 450-deep schema took 25 s);
- **grammar**: the schema is compiled here, one compile at a time, so the batch that uses it finds it compiled;
- **long prompts**: a local engine serving clients cuts its prefills into finer slices (`cotune.lm.engine.prefill`),
  so a short request waits behind a long prompt about as long as it takes to decode a few tokens.

Backends tell their prompt size through ``LM.count_prompt_tokens`` when they can; a transformers model
(``LM.engine``) is counted with a private copy of its tokenizer: the model's thread changes its
tokenizer's padding settings for each batch, and a fast tokenizer shared across threads can fail or pad
wrong.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from cotune.errors import ConfigError
from cotune.lm.base import LM
from cotune.serve.policy import ServerLimits, context_length
from cotune.serve.protocol import RequestError


def schema_depth(value: Any) -> int:
    """How deep JSON containers nest in ``value`` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


class Admission:
    """The checks of `cotune.serve.admission` for one server, with its limits."""

    def __init__(self, limits: ServerLimits, lm: LM | None = None):
        self.limits = limits
        passes = getattr(lm.engine, "passes", None) if lm is not None else None  # shared by its adapters
        if passes is not None:
            passes.interactive = True
        self._compiling = threading.Lock()  # one grammar compile at a time: each may take a core for a while
        self._counters: weakref.WeakKeyDictionary[Any, _Counter] = weakref.WeakKeyDictionary()
        self._counters_lock = threading.Lock()

    def check(self, lm: LM, messages: list[dict[str, str]], overrides: dict[str, Any]) -> None:
        """Refuse a request that does not fit; may set ``overrides["max_tokens"]`` to the room left.

        Raises:
            RequestError: 400 naming the limit and what the request asked.
        """
        constraint = overrides.get("constraint")
        if constraint is not None and constraint.json_schema is not None:
            self._check_schema(constraint.json_schema)
        context = context_length(lm)
        if context is None or (prompt := self.prompt_tokens(lm, messages)) is None:
            return
        asked = overrides.get("max_tokens")
        if prompt >= context:
            raise RequestError(
                400,
                f"the messages are {prompt} tokens, and this model's context is {context} tokens; shorten them",
                param="messages",
                code="context_length_exceeded",
            )
        if asked is not None and prompt + asked > context:
            raise RequestError(
                400,
                f"the messages are {prompt} tokens and 'max_tokens' asks for {asked} more: over this model's "
                f"context of {context} tokens; ask for at most {context - prompt}",
                param="max_tokens",
                code="context_length_exceeded",
            )
        if asked is None and prompt + lm.config.max_tokens > context:
            overrides["max_tokens"] = context - prompt

    def compile(self, lm: LM, overrides: Mapping[str, Any]) -> None:
        """Compile the request's output grammar now (outside the model's thread), where the backend has one.

        Raises:
            RequestError: 400 a schema the grammar engine cannot compile.
        """
        constraint = overrides.get("constraint")
        engine = lm.engine
        if constraint is None or not hasattr(engine, "grammar"):
            return
        try:
            with self._compiling:
                engine.grammar.compile(constraint)  # cached by the engine, for the batch that uses it
        except ConfigError as e:
            raise RequestError(400, str(e), param="response_format") from None

    def prompt_tokens(self, lm: LM, messages: list[dict[str, str]]) -> int | None:
        """The prompt's length in tokens as the model will see it; None when the backend cannot tell."""
        count = lm.count_prompt_tokens(messages)
        if count is not None:
            return int(count)
        engine = lm.engine
        if engine is None or getattr(engine, "tokenizer", None) is None:
            return None
        with self._counters_lock:
            counter = self._counters.get(engine)
            if counter is None:
                counter = self._counters[engine] = _Counter(engine.tokenizer)
        return counter(messages)

    def _check_schema(self, schema: str) -> None:
        limits, size = self.limits, len(schema.encode())
        if size > limits.max_schema_bytes:
            raise RequestError(
                400,
                f"the response_format schema is {size} bytes, over this server's limit of {limits.max_schema_bytes}",
                param="response_format",
            )
        depth = schema_depth(json.loads(schema))
        if depth > limits.max_schema_depth:
            raise RequestError(
                400,
                f"the response_format schema nests {depth} levels deep, over this server's limit of "
                f"{limits.max_schema_depth}",
                param="response_format",
            )


class _Counter:
    """Counts a prompt's tokens as a transformers engine renders and tokenizes it, on its own tokenizer copy."""

    def __init__(self, tokenizer: Any):
        from tokenizers import Tokenizer

        self._render = tokenizer
        self._lock = threading.Lock()
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._fast = Tokenizer.from_str(backend.to_str()) if backend is not None else None
        if self._fast is not None:
            self._fast.no_padding()
            self._fast.no_truncation()

    def __call__(self, messages: list[dict[str, str]]) -> int:
        text = self._render.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        with self._lock:
            if self._fast is not None:
                return len(self._fast.encode(text, add_special_tokens=False).ids)
            return len(self._render(text, add_special_tokens=False)["input_ids"])  # a slow tokenizer: no shared state
