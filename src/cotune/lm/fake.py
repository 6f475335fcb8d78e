"""`FakeLM`: a scripted model for unit tests and docs."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from cotune.lm.base import LM, GenerationConfig
from cotune.lm.cache import RequestCache
from cotune.lm.completion import Completion, Messages, truncate_at_stop


class FakeLM(LM):
    """Answers from a function of the messages, or from a script of answers taken in turn (cycling).

    Token counts are whitespace word counts. No cache by default. ``calls`` keeps every request.

    Example:
        >>> lm = FakeLM(lambda messages: "Answer: " + messages[-1]["content"].upper())
        >>> lm([{"role": "user", "content": "hi"}]).text
        'Answer: HI'
        >>> FakeLM(["a", "b"])([{"role": "user", "content": "?"}]).text
        'a'
    """

    backend = "fake"

    def __init__(
        self,
        answers: Callable[..., str] | Iterable[str],
        *,
        name: str = "fake",
        adapter: str | None = None,
        cache: RequestCache | bool | None = None,
        config: GenerationConfig | None = None,
        structured_output: str | None = None,
    ):
        super().__init__(cache=cache, config=config)
        self.structured_output = structured_output  # pretend to constrain ("grammar"/"json_schema"): tests
        if callable(answers):
            self._fn = answers
        else:
            script = list(answers)
            if not script:
                raise ValueError("FakeLM needs at least one scripted answer")
            cycle, lock = itertools.cycle(script), threading.Lock()

            def next_answer(messages: Messages, **_: Any) -> str:
                with lock:
                    return next(cycle)

            self._fn = next_answer
        self._name, self._adapter = name, adapter
        self.calls: list[tuple[Messages, GenerationConfig]] = []
        self._calls_lock = threading.Lock()

    @property
    def model(self) -> str:
        return self._name

    @property
    def adapter(self) -> str | None:
        return self._adapter

    def with_adapter(self, adapter: str | None) -> FakeLM:
        """A FakeLM that answers the same way but reports another adapter (handy in optimizer tests)."""
        new = FakeLM(
            self._fn,
            name=self._name,
            adapter=adapter,
            cache=self.cache,
            config=self.config,
            structured_output=self.structured_output,
        )
        new.calls = self.calls
        return new

    def _generate(self, batch: Sequence[Messages], config: GenerationConfig) -> list[Completion]:
        out = []
        for messages in batch:
            with self._calls_lock:
                self.calls.append((messages, config))
            text = _call(self._fn, messages, config, self._adapter)
            text, _ = truncate_at_stop(text, config.stop)
            prompt = sum(len(m["content"].split()) for m in messages)
            out.append(Completion(text, prompt, len(text.split()), 0.0))
        return out


def _call(fn: Callable[..., str], messages: Messages, config: GenerationConfig, adapter: str | None) -> str:
    """Pass ``config`` and ``adapter`` only to functions that accept them."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(messages)
    kwargs: dict[str, Any] = {}
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if "config" in params or accepts_any:
        kwargs["config"] = config
    if "adapter" in params or accepts_any:
        kwargs["adapter"] = adapter
    return fn(messages, **kwargs)
