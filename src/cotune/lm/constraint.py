"""`Constraint`: what a completion must look like, for backends that constrain decoding.

The LM layer only carries and applies it (it is part of `GenerationConfig` and of a request's cache key);
programs build one from a signature with `cotune.program.grammar.constraint`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Constraint:
    """What a completion must look like (hashable: it is part of a request's cache key and batch group).

    Attributes:
        grammar: segments to concatenate, each ``("ebnf", text)`` or ``("json_schema", text)``.
        json_schema: the outputs as a JSON object schema (JSON text), for servers.
        budget_tokens: free-text tokens allowed before ``budget_exit`` is forced; None: no budget.
        budget_exit: the text forced when the budget runs out (``"\\nAnswer:"``).
        reserve_tokens: tokens kept, out of ``max_tokens``, for what follows ``budget_exit``.
    """

    grammar: tuple[tuple[str, str], ...]
    json_schema: str
    budget_tokens: int | None = None
    budget_exit: str | None = None
    reserve_tokens: int = 0


__all__ = ["Constraint"]
