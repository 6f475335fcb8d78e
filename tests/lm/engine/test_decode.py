"""`decode` against transformers' ``generate`` on a tiny randomly initialized Llama (no weights loaded)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cotune.lm.engine.decode import decode  # noqa: E402
from cotune.lm.engine.prefix_groups import MIN_SHARED_PREFIX, common_prefix, prefix_groups  # noqa: E402
from cotune.lm.engine.prefix_store import PrefixStore  # noqa: E402
from cotune.lm.engine.sampling import seeded_sampler as _seeded_sampler  # noqa: E402

PAD = 0


@pytest.fixture(scope="module")
def model(tiny_llama):
    return tiny_llama


def left_padded(prompts: list[list[int]]):
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


PROMPTS = [[5, 17, 33, 2], [9, 4], [40, 41, 42, 43, 44, 45, 46], [7], [60, 61, 3]]


def reference(model, ids, mask, max_new, eos, processors=()):
    """``generate``'s new tokens, each row cut after its first end token (the rest is padding)."""
    config = transformers.GenerationConfig(max_new_tokens=max_new, do_sample=False, eos_token_id=eos or None,
                                            pad_token_id=PAD)  # fmt: skip
    kwargs = {"logits_processor": transformers.LogitsProcessorList(processors)} if processors else {}
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **kwargs)
    rows = []
    for row in out[:, ids.shape[1] :].tolist():
        end = next((i for i, t in enumerate(row) if t in eos), None)
        rows.append(row if end is None else row[: end + 1])
    return rows


def frequent_token(rows: list[list[int]]) -> int:
    """A token that some rows produce early and others late or never: as an end token, rows end apart."""
    firsts = {}
    for row in rows:
        for i, t in enumerate(row[1:], 1):
            firsts.setdefault(t, []).append(i)
    return max(firsts, key=lambda t: (len(firsts[t]) < len(rows), len(firsts[t])))


def test_greedy_equals_generate_without_an_end_token(model):
    ids, mask = left_padded(PROMPTS)
    with torch.inference_mode():
        got = decode(model, ids, mask, max_new_tokens=12, stop_ids=[])
    assert got == reference(model, ids, mask, 12, []) and all(len(r) == 12 for r in got)


def test_greedy_equals_generate_when_rows_end_at_different_steps(model):
    ids, mask = left_padded(PROMPTS)
    free = reference(model, ids, mask, 16, [])
    eos = [frequent_token(free)]
    want = reference(model, ids, mask, 16, eos)
    assert len({len(r) for r in want}) > 1  # rows really do finish at different steps
    with torch.inference_mode():
        got = decode(model, ids, mask, max_new_tokens=16, stop_ids=eos)
    assert got == want


class Recorder:
    """A processor that records which rows are live and what they chose, and bans one token."""

    def __init__(self, banned: int):
        self.banned = banned
        self.calls: list[tuple[list[int], list[int] | None]] = []

    def step(self, live, last, scores):
        self.calls.append((list(live), last))
        scores[:, self.banned] = float("-inf")
        return scores


def test_processors_see_only_live_rows_and_their_last_tokens(model):
    ids, mask = left_padded(PROMPTS)
    free = reference(model, ids, mask, 16, [])
    eos = [frequent_token(free)]
    recorder = Recorder(banned=free[0][0])
    with torch.inference_mode():
        got = decode(model, ids, mask, max_new_tokens=16, stop_ids=eos, processors=[recorder])
    assert all(row[0] != recorder.banned for row in got)
    first_live, first_last = recorder.calls[0]
    assert first_live == list(range(len(PROMPTS))) and first_last is None
    for step, (live, last) in enumerate(recorder.calls[1:], 1):
        assert last == [got[r][step - 1] for r in live]  # each live row's previous token
        assert all(len(got[r]) > step for r in live)
    assert len(recorder.calls[-1][0]) < len(PROMPTS)  # finished rows left the batch


def test_seeded_sampling_equals_generate_with_the_same_sampler(model):
    ids, mask = left_padded(PROMPTS)
    seeds = [11, 22, 33, 44, 55]
    eos = [frequent_token(reference(model, ids, mask, 16, []))]
    want = reference(model, ids, mask, 16, eos, [_seeded_sampler(seeds, 1.5, 0.9, "cpu")])
    sampler = _seeded_sampler(seeds, 1.5, 0.9, "cpu")
    with torch.inference_mode():
        got = decode(model, ids, mask, max_new_tokens=16, stop_ids=eos, processors=[sampler])
    assert got == want


def decode_recording_calls(model, ids, mask, **kwargs):
    """Greedy `decode` of 10 tokens, and the input shape of every forward call it made."""
    calls = []
    hook = model.register_forward_pre_hook(lambda _m, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True)  # fmt: skip
    try:
        with torch.inference_mode():
            got = decode(model, ids, mask, max_new_tokens=10, stop_ids=[], **kwargs)
    finally:
        hook.remove()
    return got, calls


SHARED = [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27]  # 20 shared tokens


@pytest.mark.parametrize("own", [[[5, 6], [7], [30, 31, 32, 33]], [[5], [5, 6], [5, 6, 7]]])
def test_a_shared_prefix_is_computed_once_with_the_same_outputs(model, own):
    prompts = [SHARED + o for o in own]
    ids, mask = left_padded(prompts)
    assert common_prefix(ids, mask) >= MIN_SHARED_PREFIX
    got, calls = decode_recording_calls(model, ids, mask)
    assert calls[0] == (1, common_prefix(ids, mask))  # the prefix, once
    assert got == reference(model, ids, mask, 10, [])
    with torch.inference_mode():
        assert decode(model, ids, mask, max_new_tokens=10, stop_ids=[], share_prefix=False) == got


def test_common_prefix_leaves_each_row_a_token_of_its_own():
    ids, mask = left_padded([[1, 2, 3], [1, 2, 3, 4], [1, 2, 3]])
    assert common_prefix(ids, mask) == 2
    ids, mask = left_padded([[1, 2, 3], [1, 5, 3]])
    assert common_prefix(ids, mask) == 1


OTHER = [50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67]  # 18 tokens shared by another group


def test_rows_of_several_prompts_share_their_own_prefixes_with_the_same_outputs(model):
    # Two "programs" (prefixes SHARED and OTHER) interleaved in one batch, plus a row alike neither.
    prompts = [SHARED + [5, 6], OTHER + [7], SHARED + [30, 31, 32], [3, 4, 9], OTHER + [8, 9], SHARED + [5]]
    ids, mask = left_padded(prompts)
    groups = prefix_groups(ids, mask)
    assert sorted((sorted(rows), s) for rows, s in groups) == [([0, 2, 5], 20), ([1, 4], 18), ([3], 0)]
    got, calls = decode_recording_calls(model, ids, mask)
    assert sorted(calls[:2]) == [(1, 18), (1, 20)]  # each group's prefix, once
    assert calls[2] == (6, 3)  # then every row's own tokens (at most 3) in one batch
    assert got == reference(model, ids, mask, 10, [])
    with torch.inference_mode():
        assert decode(model, ids, mask, max_new_tokens=10, stop_ids=[], share_prefix=False) == got


LONG = list(range(70, 96)) + list(range(28, 42))  # 40 tokens alike no other prompt


def test_a_long_row_alike_no_other_is_prefilled_alone_not_padding_every_row_to_its_length(model):
    prompts = [SHARED + [5], SHARED + [6], SHARED + [7, 8], OTHER + [9], OTHER + [10], LONG]
    ids, mask = left_padded(prompts)
    assert sorted((sorted(rows), s) for rows, s in prefix_groups(ids, mask)) == [
        ([0, 1, 2], 20),
        ([3, 4], 18),
        ([5], 0),
    ]
    got, calls = decode_recording_calls(model, ids, mask)
    assert sorted(calls[:3]) == [(1, 18), (1, 20), (1, 39)]  # each group's prefix, and the long prompt alone
    assert calls[3] == (6, 2)  # every row's own tokens: 2 at most, not the long prompt's 40
    assert got == reference(model, ids, mask, 10, [])
    with torch.inference_mode():
        assert decode(model, ids, mask, max_new_tokens=10, stop_ids=[], share_prefix=False) == got


def test_groups_are_cut_where_sharing_saves_tokens():
    # Alike only in 16 tokens: one group of 16 would save 16, two groups save more.
    base = list(range(100, 116))
    prompts = [base + [1] * 30 + [2], base + [1] * 30 + [3], base + [7] * 30 + [4], base + [7] * 30 + [5]]
    ids, mask = left_padded(prompts)
    assert sorted((sorted(rows), s) for rows, s in prefix_groups(ids, mask)) == [([0, 1], 46), ([2, 3], 46)]
    ids, mask = left_padded([[1, 2, 3], [4, 5, 6]])  # nothing in common
    assert prefix_groups(ids, mask) == [([0], 0), ([1], 0)]


def test_prompts_sent_again_start_from_their_stored_prefixes_with_the_same_outputs(model):
    store = PrefixStore(min_tokens=MIN_SHARED_PREFIX)
    prompts = [SHARED + [5, 6], OTHER + [7], SHARED + [30, 31, 32], [3, 4, 9]]
    ids, mask = left_padded(prompts)
    first, _ = decode_recording_calls(model, ids, mask, prefixes=store, namespace="base")
    assert first == reference(model, ids, mask, 10, [])
    # Kept: SHARED (the group's prefix) and every prompt but its last token that is long enough.
    assert store.get("base", SHARED) is not None and store.get("base", SHARED + [5]) is not None
    assert store.get("base", OTHER) is not None and store.get("base", [3, 4]) is None  # too short to keep
    # The same prompts again, in another order with a new one: stored rows compute their last token only.
    again = [prompts[2], SHARED + [40, 41], prompts[0], prompts[1]]
    ids2, mask2 = left_padded(again)
    got, calls = decode_recording_calls(model, ids2, mask2, prefixes=store, namespace="base")
    assert got == reference(model, ids2, mask2, 10, [])
    assert calls[0] == (4, 2)  # no prefix call: SHARED and the prompts come from the store; own tokens ≤ 2
    assert store.stats.hits == 4 and store.stats.reused_tokens == 22 + 20 + 21 + 18
    # Another namespace (other weights) finds nothing.
    _, calls = decode_recording_calls(model, ids2, mask2, prefixes=store, namespace="adapter")
    assert calls[0] == (1, 20)


def test_the_store_keeps_the_most_recently_used_within_its_bytes():
    store = PrefixStore(max_bytes=100, min_tokens=2)
    for i in range(5):
        store.put("ns", [i, i, i], [("k", "v")], nbytes=30)
    assert len(store) == 3 and store.bytes == 90 and store.stats.evicted == 2
    assert store.get("ns", [2, 2, 2]) is not None  # now the most recently used
    store.put("ns", [9, 9, 9], [("k", "v")], nbytes=30)
    assert store.get("ns", [3, 3, 3]) is None and store.get("ns", [2, 2, 2]) is not None
    assert store.longest("ns", [2, 2, 2, 2], limit=3)[0] == 3 and store.longest("ns", [2, 2, 2, 2], limit=2) is None
    store.put("ns", [7] * 5, [("k", "v")], nbytes=101)  # larger than the whole store: not kept
    assert store.get("ns", [7] * 5) is None and PrefixStore(max_bytes=0).max_bytes == 0


def test_counters_count_the_padding_the_prefill_computes_and_the_steps(model):
    from cotune.lm.engine.counters import EngineCounters

    ids, mask = left_padded(PROMPTS)
    counters = EngineCounters()
    with torch.inference_mode():
        got = decode(model, ids, mask, max_new_tokens=6, stop_ids=[], share_prefix=False, counters=counters)
    lengths = [len(p) for p in PROMPTS]
    assert counters.batches == 1 and counters.batch_sizes == {len(PROMPTS): 1}
    assert counters.prompt_tokens == sum(lengths)
    assert counters.prefill_tokens == len(PROMPTS) * max(lengths)  # padding included
    assert counters.decode_steps == 5 and counters.decode_rows == 5 * len(PROMPTS)  # the first token needs no step
    assert counters.new_tokens == sum(map(len, got)) == 6 * len(PROMPTS)
    assert counters.history == [(len(PROMPTS), sum(lengths), max(lengths), len(PROMPTS) * max(lengths), 5, 30)]
