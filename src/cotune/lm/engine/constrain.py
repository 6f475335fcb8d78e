"""Constrained decoding for local models: a `Constraint` compiled for a tokenizer, applied per step.

The grammar engine is xgrammar, chosen by measured per-token cost on this class of CPU (see
benchmarks/archive/grammar_engines.py; it is also what vLLM and SGLang use on GPUs). `GrammarEngine` compiles a
constraint once per tokenizer (cached) and builds a logits processor for one batch: each step it
advances every row's matcher with the token just chosen and makes sure the next choice is one the
grammar allows. Filling a row's allowed-token bitmask is the costly part (~0.8 ms for Qwen's 151k-token
vocabulary on a 2-core CPU, measured), and in free text the model's own choice is almost always allowed,
so the processor first asks the matcher whether the row's proposed token (its argmax, or its sample when
it is given the batch's sampler) is accepted and fills the bitmask only for the rows it refuses — the
choice is the same as masking every row first (greedy: the argmax over allowed tokens; sampling at a
temperature: a draw from the masked distribution, by rejection). It also ends the reasoning field
(``Constraint.budget_exit``): a row is made to write the next field's label once it has generated its
budget of free text, or as soon as it would have ended the completion there (its most likely token is
end-of-text, which the grammar does not allow before the answer) — then the grammar forces the answer.

xgrammar and torch are imported when an engine is built, never when this module is imported.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from cotune.errors import ConfigError
from cotune.lm.constraint import Constraint

INSTALL_HINT = "pip install 'cotune[hf]' (it brings xgrammar)"


class GrammarEngine:
    """Compiles `Constraint`s for one tokenizer and makes batch logits processors.

    Args:
        tokenizer: the Hugging Face tokenizer of the model.
        vocab_size: the model's logits width (may exceed the tokenizer's length).
        stop_token_ids: the tokens that end generation (the model's EOS ids).
        cache_size: compiled grammars kept (least recently used dropped first).

    Raises:
        ConfigError: xgrammar is not installed.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int], cache_size: int = 64):
        try:
            import xgrammar as xgr
        except ImportError as e:
            raise ConfigError(f"constrained decoding needs xgrammar: {INSTALL_HINT}") from e
        self._xgr = xgr
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.info = _tokenizer_info(xgr, tokenizer, vocab_size, stop_token_ids)
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=1)
        self._decoded: list[bytes] = list(self.info.decoded_vocab)
        # Tokens that are never text (special, padding ids): xgrammar refuses them with a printed warning, so a
        # row that proposes one is masked without asking its matcher.
        self._never_text = frozenset(i for i, b in enumerate(self._decoded) if not b) - set(stop_token_ids)
        self._compiled: OrderedDict[Constraint, Any] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        # Time spent in the grammar's per-step work (advance, mask, apply) and the steps it ran, so its
        # cost can be stated as a share of generation (benchmarks/format_adherence.py).
        self.mask_seconds = 0.0
        self.mask_steps = 0
        # Check each row's proposed token before filling its bitmask (see the module docstring); False masks
        # every row every step (the same choices greedily; the reference the tests compare with).
        self.optimistic = True

    def compile(self, constraint: Constraint) -> Any:
        """The compiled grammar of ``constraint`` (its ``grammar`` segments, else its ``json_schema``).

        Raises:
            ConfigError: the grammar engine rejects the constraint (names the engine's reason).
        """
        with self._lock:
            hit = self._compiled.get(constraint)
            if hit is not None:
                self._compiled.move_to_end(constraint)
                return hit
        xgr = self._xgr
        try:
            if constraint.grammar:
                parts = [
                    xgr.Grammar.from_ebnf(text) if kind == "ebnf" else xgr.Grammar.from_json_schema(text)
                    for kind, text in constraint.grammar
                ]
                grammar = parts[0] if len(parts) == 1 else xgr.Grammar.concat(*parts)
            else:
                grammar = xgr.Grammar.from_json_schema(constraint.json_schema)
            compiled = self.compiler.compile_grammar(grammar)
        except Exception as e:  # xgrammar raises RuntimeError/ValueError with the grammar error
            raise ConfigError(f"the grammar engine cannot compile this output format: {e}") from e
        with self._lock:
            self._compiled[constraint] = compiled
            while len(self._compiled) > self._cache_size:
                self._compiled.popitem(last=False)
        return compiled

    def processor(
        self, constraint: Constraint, rows: int, max_tokens: int, sampler: Any = None, optimistic: bool | None = None
    ) -> Any:
        """A transformers ``LogitsProcessor`` for one batch of ``rows`` requests under ``constraint``.

        Args:
            sampler: the batch's sampler (``draw(live, scores) -> tokens``), when it samples at a temperature
                only (no top-p, no min-p): the processor then makes the choice itself, and returns scores where
                only the chosen token is finite. None: the caller picks the argmax of the returned scores (or
                runs its own sampler after this processor).
            optimistic: check each row's proposed token before filling its bitmask (the same choices, see the
                module docstring); False masks every row every step; None: the engine's ``optimistic``. Must be
                False when the caller samples from the returned scores itself.
        """
        optimistic = self.optimistic if optimistic is None else optimistic
        compiled = self.compile(constraint)
        exit_ids: list[int] = []
        limit = None
        if constraint.budget_tokens is not None and constraint.budget_exit:
            exit_ids = self.tokenizer.encode(constraint.budget_exit, add_special_tokens=False)
            room = max_tokens - constraint.reserve_tokens - len(exit_ids)
            limit = max(1, min(constraint.budget_tokens, room))
        return _masker(self, compiled, rows, exit_ids, constraint.budget_exit or "", limit, sampler, optimistic)


def _tokenizer_info(xgr: Any, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> Any:
    """xgrammar's view of the vocabulary, with special tokens (``<|im_start|>``...) as non-text.

    ``TokenizerInfo.from_huggingface`` keeps special tokens as ordinary text, so a free-text field
    would let the model write ``<|im_start|>``; xgrammar treats a token as special only when its string
    is empty, so the vocabulary is rebuilt with those strings emptied.
    """
    detected = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids)
    encoded = [""] * vocab_size
    for text, i in tokenizer.get_vocab().items():
        if i < vocab_size:
            encoded[i] = text
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
    for i in special:
        if i < vocab_size:
            encoded[i] = ""
    return xgr.TokenizerInfo(
        encoded,
        detected.vocab_type,
        vocab_size=vocab_size,
        stop_token_ids=stop_token_ids,
        add_prefix_space=detected.add_prefix_space,
    )


def _masker(
    engine: GrammarEngine,
    compiled: Any,
    rows: int,
    exit_ids: list[int],
    exit_text: str,
    limit: int | None,
    sampler: Any = None,
    optimistic: bool = True,
) -> Any:
    import torch
    from transformers import LogitsProcessor

    xgr = engine._xgr
    decoded = engine._decoded
    never_text = engine._never_text
    exit_bytes = exit_text.encode()
    stop_ids = torch.tensor(sorted(engine.info.stop_token_ids), dtype=torch.long)

    class GrammarMask(LogitsProcessor):
        def __init__(self):
            self.matchers = [xgr.GrammarMatcher(compiled) for _ in range(rows)]
            self.bitmask = xgr.allocate_token_bitmask(rows, engine.vocab_size)
            self.done = [False] * rows
            self.generated = [0] * rows
            self.text = [bytearray() for _ in range(rows)] if limit is not None else None
            self.exited = [limit is None] * rows
            self.forcing: list[list[int]] = [[] for _ in range(rows)]
            self.accepted: list[int | None] = [None] * rows  # a token the matcher took ahead of the next step
            self.first = True

        def add_rows(self, n: int) -> None:
            """``n`` rows that join the batch (`cotune.lm.engine.decode.decode_steps`' ``admit``), numbered after the
            others (the batch's sampler, if any, is given their seeds by the caller)."""
            self.matchers += [xgr.GrammarMatcher(compiled) for _ in range(n)]
            self.bitmask = xgr.allocate_token_bitmask(len(self.matchers), engine.vocab_size)
            self.done += [False] * n
            self.generated += [0] * n
            if self.text is not None:
                self.text += [bytearray() for _ in range(n)]
            self.exited += [limit is None] * n
            self.forcing += [[] for _ in range(n)]
            self.accepted += [None] * n

        def __call__(self, input_ids, scores):
            """The transformers ``generate`` interface: every row is live; the last column is each row's last token."""
            last = None if self.first else input_ids[:, -1].tolist()
            self.first = False
            return self.step(range(rows), last, scores)

        def step(self, live, last, scores):
            """Constrain ``scores`` (one row per entry of ``live``, the batch rows still decoding) after advancing
            each live row's matcher with ``last``, the token it just chose (None on the first step; an entry is None
            for a row that joined the batch at this step)."""
            t0 = time.perf_counter()
            self.sampling_seconds = 0.0
            live = list(live)
            if last is not None:
                for i, token in zip(live, last, strict=True):
                    if token is not None:
                        self._advance(i, token)
            if optimistic:
                scores = self._choose(live, scores)
            else:
                scores = self._mask_all(live, scores)
                if sampler is not None:
                    scores = _one_hot(scores, dict(enumerate(self._draw(live, scores))))
            engine.mask_seconds += time.perf_counter() - t0 - self.sampling_seconds
            engine.mask_steps += 1
            return scores

        def _draw(self, live, scores) -> list[int]:
            t0 = time.perf_counter()
            tokens = sampler.draw(live, scores)
            self.sampling_seconds += time.perf_counter() - t0
            return tokens

        def _choose(self, live, scores):
            # The argmax proposes greedily and tells which rows would stop; a sampler without a budget needs neither.
            top = scores.argmax(dim=-1) if sampler is None or limit is not None else None
            wants_stop = torch.isin(top, stop_ids).tolist() if limit is not None else None
            proposed = self._draw(live, scores) if sampler is not None else top.tolist()
            chosen: dict[int, int] = {}  # score row -> token chosen here (forced, or a sampler's draw)
            refused = []
            for j, i in enumerate(live):
                if self.done[i]:  # finished rows are padding; any token will do
                    if sampler is not None:
                        chosen[j] = proposed[j]
                    continue
                self._start_exit(i, j, wants_stop)
                matcher = self.matchers[i]
                if self.forcing[i] and matcher.accept_token(self.forcing[i][0]):
                    self.accepted[i] = chosen[j] = self.forcing[i][0]
                elif proposed[j] not in never_text and matcher.accept_token(proposed[j]):
                    self.accepted[i] = proposed[j]
                    if sampler is not None:
                        chosen[j] = proposed[j]
                else:
                    refused.append(j)
            if refused:
                for j in refused:
                    self.matchers[live[j]].fill_next_token_bitmask(self.bitmask, j)
                index = torch.tensor(refused)
                masked = scores[index]
                xgr.apply_token_bitmask_inplace(masked, self.bitmask[index], vocab_size=engine.vocab_size)
                if sampler is not None:  # a draw from the masked distribution, by rejection
                    chosen.update(zip(refused, self._draw([live[j] for j in refused], masked), strict=True))
                else:
                    scores[index] = masked
            return _one_hot(scores, chosen)

        def _mask_all(self, live, scores):
            wants_stop = None
            if limit is not None:  # which rows would end here if they could: their reasoning is done
                wants_stop = torch.isin(scores.argmax(dim=-1), stop_ids).tolist()
            # Row j of the bitmask belongs to live row live[j] (the first len(live) rows are used).
            for j, i in enumerate(live):
                if self.done[i]:
                    self.bitmask[j] = -1  # finished rows are padded by generate; any token will do
                    continue
                self.matchers[i].fill_next_token_bitmask(self.bitmask, j)
                self._start_exit(i, j, wants_stop)
                if self.forcing[i]:
                    self._force(j, self.forcing[i][0])
            bitmask = self.bitmask[: len(live)]
            xgr.apply_token_bitmask_inplace(scores, bitmask.to(scores.device), vocab_size=engine.vocab_size)
            return scores

        def _start_exit(self, i: int, j: int, wants_stop: list[bool] | None) -> None:
            """Make row ``i`` write the next field's label once its budget is spent or it would end here."""
            if not self.exited[i] and not self.forcing[i] and (self.generated[i] >= limit or wants_stop[j]):
                self.forcing[i] = list(exit_ids)

        def _advance(self, i: int, token: int) -> None:
            if self.done[i]:
                return
            matcher = self.matchers[i]
            ahead, self.accepted[i] = self.accepted[i], None
            if ahead is None and (matcher.is_terminated() or not matcher.accept_token(token)):
                self.done[i] = True
                return
            if ahead is not None and ahead != token:  # cannot happen: the choice was made from this row's scores
                raise RuntimeError(f"grammar row {i}: accepted token {ahead} ahead, but {token} was chosen")
            self.generated[i] += 1
            if self.forcing[i] and self.forcing[i][0] == token:
                self.forcing[i].pop(0)
                if not self.forcing[i]:
                    self.exited[i] = True
            if self.text is not None and not self.exited[i]:
                self.text[i] += decoded[token]
                if exit_bytes in self.text[i][-(len(exit_bytes) + 64) :]:
                    self.exited[i], self.forcing[i] = True, []
            if matcher.is_terminated():
                self.done[i] = True

        def _force(self, j: int, token: int) -> None:
            """Allow only ``token`` in bitmask row ``j`` if the grammar allows it now (else try again next step)."""
            word, bit = divmod(token, 32)
            if not (int(self.bitmask[j, word]) >> bit) & 1:
                return
            self.bitmask[j] = 0
            self.bitmask[j, word] = torch.tensor(1 << bit, dtype=torch.int64).to(torch.int32)

    def _one_hot(scores, chosen: dict[int, int]):
        """``scores`` with each row j of ``chosen`` allowing only its token (the choice already made)."""
        for j, token in chosen.items():
            scores[j].fill_(float("-inf"))
            scores[j, token] = 0.0
        return scores

    return GrammarMask()
