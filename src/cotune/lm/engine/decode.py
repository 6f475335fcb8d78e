"""A lean batched decoding loop for local models: rows leave the batch as soon as they finish.

transformers' ``generate`` keeps every row of a batch in every step until the longest one ends (finished
rows are padded, their attention still computed) and runs a general-purpose step around each forward
pass. cotune's calls need less: greedy or seeded sampling, logits processors that know which rows are
still live (`cotune.lm.engine.constrain`), end-of-text tokens and a token limit. `decode` does exactly that:

- one prefill of the left-padded prompts, keeping only the last position's logits; rows whose prompts
  start alike (a predictor's instruction and demos) are grouped, each group's shared tokens are computed
  once and their KV cache shared by its rows (`prefix_groups`: a batch that mixes several programs' calls,
  e.g. prompt candidates evaluated side by side, computes each candidate's demos once, not once per row);
- each step: processors, argmax, then rows that produced an end token (or reached the limit) are dropped
  from the token batch, the attention mask and the KV cache, and padding columns no live row needs any
  more are cut from the left;
- prompts and shared prefixes computed here are kept across calls (`cotune.lm.engine.prefix_store`): a prompt sent
  again (the next round of rollouts, a re-run teacher) starts from its stored keys and values;
- the KV cache grows in place (room for more steps is allocated ahead), where transformers' dynamic
  cache copies the whole cache at every step to append one token;
- explicit position ids, so a row's positions never depend on which others share its batch;
- requests that arrive while the batch decodes may join it at a step boundary (continuous batching, ``admit``):
  they are prefilled on their own, then their keys and values are placed beside the batch's, right-aligned, and
  they decode with it; their tokens are the ones they would get alone.

The processors see float32 logits of the live rows only and are called as
``step(live, last, scores) -> scores``, where ``live`` lists the original batch rows of the scores' rows
and ``last`` the token each of them chose in the previous step (None on the first; an entry is None for a row
that joined the batch at this step).

torch and transformers are imported when `decode` runs, never when this module is imported.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Generator, Hashable, Sequence
from typing import Any

from cotune.lm.engine.batching import Finished, Open
from cotune.lm.engine.counters import EngineCounters
from cotune.lm.engine.kv_cache import append_rows, growing, is_growing, trim_left_padding
from cotune.lm.engine.prefill import DECODING, PREFILL, Chunks
from cotune.lm.engine.prefix_groups import bound_own_width, prefix_groups
from cotune.lm.engine.prefix_store import KV, PrefixStore


def decode(model: Any, input_ids: Any, attention_mask: Any, **kwargs: Any) -> list[list[int]]:
    """`decode_steps` run to its end: the new tokens of each row."""
    steps = decode_steps(model, input_ids, attention_mask, **kwargs)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def decode_steps(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    *,
    max_new_tokens: int | Sequence[int],
    stop_ids: Sequence[int],
    processors: Sequence[Any] = (),
    share_prefix: bool = True,
    prefixes: PrefixStore | None = None,
    namespace: Hashable = None,
    prefill_slice: float | None = None,
    counters: EngineCounters | None = None,
    admit: Callable[[Any], tuple[Any, ...]] | None = None,
    finished: bool = False,
) -> Generator[Any, Any, list[list[int]]]:
    """Generate up to ``max_new_tokens`` tokens for each row of a left-padded batch, yielding between steps
    (``PREFILL`` after a prefill chunk, ``DECODING`` before each decoding step's pass), so one thread can take
    turns between batches (`cotune.lm.engine.batching.BatchWorker`). Nothing here holds a context (``torch.inference_mode``) across a yield:
    the caller enters it around each step.

    Args:
        model: a transformers causal LM (called with ``past_key_values`` and ``position_ids``).
        input_ids, attention_mask: the left-padded prompts, ``[batch, length]``.
        max_new_tokens: the most tokens per row: one limit for every row, or each row's own.
        stop_ids: tokens that end a row (kept as its last token, like ``generate`` does).
        processors: objects with ``step(live, last, scores) -> scores``, applied in order.
        share_prefix: compute the tokens every prompt starts with (instruction, demos) once for the batch.
        prefixes: a `PrefixStore` of earlier calls' prompt prefixes (under ``namespace``: the weights'
            identity): a row starts from the longest stored prefix of its prompt, and the prefixes and prompts
            computed here are stored for later calls.
        prefill_slice: cut the prefill into chunks of about this many seconds each (sized from the speed of
            the chunks before), with a step between them: a long prompt then holds the thread a slice at a time.
            None: one pass (each of a grouped prefill's passes).
        counters: an `EngineCounters` that adds up what this batch computes.
        admit: takes more rows into the running batch (continuous batching): before each decoding step's pass the
            batch yields `Open` (rows decoding) instead of ``DECODING``, and a value sent back there (the
            driver's new requests) is given to ``admit``, which returns their prompts ``(input_ids,
            attention_mask)``, left-padded, and each joiner's token limit as a third item where
            ``max_new_tokens`` is not one limit for every row. They are prefilled after that step's pass and
            decode with the batch from then on, numbered after the rows before them (``processors`` see them in ``live``, with
            None as their ``last`` token the first time: ``admit`` extends the processors' per-row state).
            None, or a model whose cache layers are not plain dynamic ones (sliding windows): no joiners.
        finished: yield `Finished` with the new tokens of the rows that end while others go on (by row), so
            their callers need not wait for the batch's longest row.

    Returns:
        The new tokens of each row, in batch order, joiners after (a finished row's list ends with its stop token).
    """
    import torch

    stops = set(stop_ids)
    # This batch's own counts (other batches take turns with it), added to ``counters`` when it ends.
    mine = EngineCounters() if counters is not None else None
    chunks = Chunks(prefill_slice, mine)
    prefill = functools.partial(_prefill, model, share_prefix=share_prefix, prefixes=prefixes, namespace=namespace)
    out, mask, positions, cache = yield from prefill(input_ids, attention_mask, chunks)
    joinable = admit is not None and all(is_growing(layer) for layer in cache.layers)
    logits, next_pos = out.logits[:, -1, :], positions[:, -1:] + 1
    batch = input_ids.shape[0]
    limits = [max_new_tokens] * batch if isinstance(max_new_tokens, int) else list(max_new_tokens)
    prompt_lengths = attention_mask.sum(dim=1).tolist()
    rows = list(range(batch))  # the prompt in each row of the cache
    alive = list(range(batch))  # the cache rows still decoding
    new: list[list[int]] = [[] for _ in range(batch)]
    last: list[int | None] | None = None
    while True:
        scores = (logits if len(alive) == len(rows) else logits[alive]).float()
        live = [rows[p] for p in alive]
        for p in processors:
            scores = p.step(live, last, scores)
        chosen = scores.argmax(dim=-1).tolist()
        keep, ended = [], []
        for p, row, token in zip(alive, live, chosen, strict=True):
            new[row].append(token)
            if token not in stops and len(new[row]) < limits[row]:
                keep.append(p)
            else:
                ended.append(row)
        if not keep:
            break
        if finished and ended:
            yield Finished({row: new[row] for row in ended})
        last = [new[rows[p]][-1] for p in keep]
        alive = keep
        # Finished rows stay in the batch (fed their last token, their output unread) until half of it is
        # done: removing rows copies every layer's keys and values, and a decoding step costs about the same
        # with a few more rows. GSM8K chain of thought, 50 rows: one compaction per finished row had them ~7%.
        if len(alive) <= len(rows) // 2:
            index = torch.tensor(alive, device=input_ids.device)
            cache.batch_select_indices(index)
            mask, next_pos = mask[index], next_pos[index]
            rows, alive = [rows[p] for p in alive], list(range(len(alive)))
            mask = trim_left_padding(mask, cache)
        tokens = torch.tensor([new[row][-1] for row in rows], device=input_ids.device)
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        sent = yield Open(len(alive)) if joinable else DECODING
        t0 = time.perf_counter()
        out = model(
            input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache, use_cache=True
        )
        if mine is not None:
            mine.decode_steps += 1
            mine.decode_rows += len(rows)
            mine.decode_seconds += time.perf_counter() - t0
        logits, next_pos = out.logits[:, -1, :], next_pos + 1
        if sent:
            ids, join_mask, *joiner_limits = admit(sent)
            if not joiner_limits and not isinstance(max_new_tokens, int):
                raise TypeError("admit must return the joiners' token limits where max_new_tokens is per row")
            limits += joiner_limits[0] if joiner_limits else [max_new_tokens] * ids.shape[0]
            prompt_lengths += join_mask.sum(dim=1).tolist()
            join_out, join_mask, join_positions, join_cache = yield from prefill(ids, join_mask, chunks)
            # The rows still decoding, then the joiners: their keys and values right-aligned, their own positions.
            index = torch.tensor(alive, device=input_ids.device)
            mask = append_rows(cache, index, mask, join_cache, join_mask)
            logits = torch.cat([logits[index], join_out.logits[:, -1, :]])
            next_pos = torch.cat([next_pos[index], join_positions[:, -1:] + 1])
            rows = [rows[p] for p in alive] + list(range(len(new), len(new) + ids.shape[0]))
            new += [[] for _ in range(ids.shape[0])]
            alive, last = list(range(len(rows))), last + [None] * ids.shape[0]
            if mine is not None:
                mine.joined_rows += ids.shape[0]
                mine.join_steps += 1
    if counters is not None:
        counters.add_batch(mine, prompt_lengths, sum(map(len, new)))
    return new


def _prefill(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    chunks: Chunks,
    *,
    share_prefix: bool,
    prefixes: PrefixStore | None,
    namespace: Hashable,
):
    """Prefill a left-padded batch (grouped by shared prefixes, from stored ones where found) into a new cache;
    returns (model output, attention mask, position ids, cache); a generator (see `decode_steps`)."""
    from transformers import DynamicCache

    batch = input_ids.shape[0]
    cache = DynamicCache(config=model.config)
    cache.layers = [growing(layer) for layer in cache.layers]
    if share_prefix and batch > 1:
        blocks = _plan(input_ids, attention_mask, prefix_groups(input_ids, attention_mask), prefixes, namespace)
        blocks = bound_own_width(blocks, attention_mask.sum(dim=1).tolist())
    else:
        blocks = _plan(input_ids, attention_mask, [(list(range(batch)), 0)], prefixes, namespace)
    reused_before = prefixes.stats.reused_tokens if prefixes is not None else 0
    if any(shared for _, shared, _ in blocks):
        args = (model, input_ids, attention_mask, blocks, cache, prefixes, namespace, chunks)
        out, mask, positions = yield from _prefill_grouped(*args)
    else:
        mask = attention_mask
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        out = yield from chunks.forward(model, input_ids, mask, positions, cache)
    if chunks.counters is not None and prefixes is not None:
        chunks.counters.reused_tokens += prefixes.stats.reused_tokens - reused_before
    if prefixes is not None and prefixes.max_bytes:
        _keep_prompts(input_ids, attention_mask, mask, cache, prefixes, namespace)
    return out, mask, positions, cache


def _plan(
    input_ids: Any,
    attention_mask: Any,
    groups: list[tuple[list[int], int]],
    prefixes: PrefixStore | None,
    namespace: Hashable,
) -> list[tuple[list[int], int, KV | None]]:
    """Where each row's prefix comes from: ``[(rows, prefix length, stored keys and values or None), ...]``.

    A row whose prompt starts with a stored prefix at least as long as its group's shared tokens starts from
    it (rows on the same stored prefix form one block); the others keep their group, whose shared tokens are
    computed unless they are stored too.
    """
    if prefixes is None or not len(prefixes):
        return [(rows, shared, None) for rows, shared in groups]
    starts = (attention_mask.shape[1] - attention_mask.sum(dim=1)).tolist()
    blocks: list[tuple[list[int], int, KV | None]] = []
    stored: dict[int, tuple[list[int], int, KV | None]] = {}
    for rows, shared in groups:
        computed = []
        for r in rows:
            tokens = input_ids[r, starts[r] :].tolist()
            found = prefixes.longest(namespace, tokens, len(tokens) - 1)
            if found is None or found[0] < shared:
                computed.append(r)
                continue
            n, kv = found
            prefixes.stats.hits += 1
            prefixes.stats.reused_tokens += n
            if id(kv) not in stored:
                stored[id(kv)] = ([], n, kv)
                blocks.append(stored[id(kv)])
            stored[id(kv)][0].append(r)
        if computed:
            first = computed[0]
            kv = (
                prefixes.get(namespace, input_ids[first, starts[first] : starts[first] + shared].tolist())
                if shared
                else None
            )
            blocks.append((computed, shared, kv))
    return blocks


def _prefill_grouped(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    blocks: list[tuple[list[int], int, KV | None]],
    cache: Any,
    prefixes: PrefixStore | None = None,
    namespace: Hashable = None,
    chunks: Chunks | None = None,
):
    """Prefill each block's shared tokens once (one row, unless stored), then every row's own tokens on top, in
    one batch.

    The rows are laid out as [padding | their block's shared tokens | padding | own tokens]: the shared KV of
    each block is right-aligned in a block as wide as the longest, the mask hides the padding and the
    position ids continue from the block's prefix, so each row sees exactly its own prompt.
    Returns (model output, attention mask, position ids) as a plain prefill would; a generator (see `decode_steps`).
    """
    chunks = chunks or Chunks(None)
    import torch
    from transformers import DynamicCache

    batch = input_ids.shape[0]
    starts = (attention_mask.shape[1] - attention_mask.sum(dim=1)).tolist()
    shared_of = [0] * batch
    width_shared = max(s for _, s, _ in blocks)
    keys: list[Any] = []  # per layer: (batch, heads, width_shared, dim)
    values: list[Any] = []
    prefix_mask = attention_mask.new_zeros((batch, width_shared))
    for rows, s, kv in blocks:
        for r in rows:
            shared_of[r] = s
        if not s:
            continue
        if kv is None:
            prefix = input_ids[rows[0] : rows[0] + 1, starts[rows[0]] : starts[rows[0]] + s]
            own_cache = DynamicCache(config=model.config)
            positions = torch.arange(s, device=prefix.device)[None]
            yield from chunks.forward(model, prefix, None, positions, own_cache)
            yield PREFILL
            kv = [(layer.keys[0], layer.values[0]) for layer in own_cache.layers]
            if prefixes is not None and prefixes.max_bytes:
                prefixes.put(namespace, prefix[0].tolist(), kv, _nbytes(kv))
        index = torch.tensor(rows, device=input_ids.device)
        for i, (k, v) in enumerate(kv):
            if len(keys) <= i:
                keys.append(k.new_zeros((batch, k.shape[0], width_shared, k.shape[-1])))
                values.append(v.new_zeros((batch, v.shape[0], width_shared, v.shape[-1])))
            keys[i][index, :, width_shared - s :] = k
            values[i][index, :, width_shared - s :] = v
        prefix_mask[rows, width_shared - s :] = 1
    for i in range(len(keys)):
        cache.update(keys[i], values[i], i)
    # Own tokens, left-padded: dropping each row's first ``shared`` real tokens keeps the layout.
    own_mask = attention_mask.clone()
    for i, st in enumerate(starts):
        own_mask[i, st : st + shared_of[i]] = 0
    width = int(own_mask.sum(dim=1).max())
    own_ids, own_mask = input_ids[:, -width:], own_mask[:, -width:]
    mask = torch.cat([prefix_mask, own_mask], dim=1)
    offset = torch.tensor(shared_of, device=own_mask.device)[:, None]
    positions = (offset + own_mask.long().cumsum(-1) - 1).clamp(min=0)
    positions = torch.maximum(positions, offset)
    out = yield from chunks.forward(model, own_ids, mask, positions, cache)
    return out, mask, positions


def _keep_prompts(
    input_ids: Any, attention_mask: Any, mask: Any, cache: Any, prefixes: PrefixStore, namespace: Hashable
) -> None:
    """Store each prompt but its last token (a later call of the same prompt then computes one token) from the
    prefilled cache, whose real columns of a row are its prompt's tokens in order (``mask``)."""
    starts = (attention_mask.shape[1] - attention_mask.sum(dim=1)).tolist()
    seen = set()
    for row, st in enumerate(starts):
        tokens = tuple(input_ids[row, st:-1].tolist())
        if len(tokens) < prefixes.min_tokens or tokens in seen or prefixes.get(namespace, tokens) is not None:
            continue
        seen.add(tokens)
        columns = mask[row].nonzero().squeeze(-1)[:-1]
        kv = [(layer.keys[row][:, columns], layer.values[row][:, columns]) for layer in cache.layers]
        prefixes.put(namespace, tokens, kv, _nbytes(kv))


def _nbytes(kv: KV) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
