"""Continuous batching in `decode_steps`: requests that join a running batch at a step boundary get the tokens
they get alone (tiny randomly initialized Llama, float32)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cotune.lm.engine.batching import Finished, Open  # noqa: E402
from cotune.lm.engine.counters import EngineCounters  # noqa: E402
from cotune.lm.engine.decode import decode, decode_steps  # noqa: E402
from cotune.lm.engine.prefix_store import PrefixStore  # noqa: E402
from cotune.lm.engine.sampling import seeded_sampler  # noqa: E402

PAD = 0
SHARED = list(range(8, 28))  # 20 tokens: joiners that share them are prefilled as a group
PROMPTS = [[5, 17, 33, 2], [9, 4], [40, 41, 42, 43, 44, 45, 46], [7], [60, 61, 3]]
LONG = [70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83]  # wider than the running batch


@pytest.fixture(scope="module")
def model(tiny_llama):
    return tiny_llama


def left_padded(prompts: list[list[int]]):
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def with_joiners(model, first, joins, *, on_admit=None, limits=None, **kwargs):
    """`decode_steps` on ``first``, sending ``joins[k]`` (prompts) at its k-th open step; the new tokens, and the
    kind of every step it yielded. ``limits``: each prompt's token limit (by its tokens), else ``max_new_tokens``."""
    joins = dict(joins)
    if limits is not None:
        kwargs["max_new_tokens"] = [limits[tuple(p)] for p in first]

    def admit(prompts):
        if on_admit is not None:
            on_admit(prompts)
        if limits is not None:
            return (*left_padded(prompts), [limits[tuple(p)] for p in prompts])
        return left_padded(prompts)

    ids, mask = left_padded(first)
    steps = decode_steps(model, ids, mask, admit=admit, **kwargs)
    kinds, opened, sent = [], 0, None
    with torch.inference_mode():
        try:
            while True:
                kind = steps.send(sent)
                kinds.append(kind)
                sent = None
                if isinstance(kind, Open):
                    sent, opened = joins.pop(opened, None), opened + 1
        except StopIteration as done:
            assert not joins, f"joins never sent: {joins}"  # the test must really have joined them
            return done.value, kinds


def alone(model, prompt, **kwargs):
    ids, mask = left_padded([prompt])
    with torch.inference_mode():
        return decode(model, ids, mask, **kwargs)[0]


def test_rows_that_join_get_the_tokens_they_get_alone(model):
    first = PROMPTS[:3]
    joins = {2: [PROMPTS[3]], 5: [PROMPTS[4], LONG]}  # one narrower than the batch, one wider
    got, kinds = with_joiners(model, first, joins, max_new_tokens=12, stop_ids=[])
    prompts = first + joins[2] + joins[5]
    assert got == [alone(model, p, max_new_tokens=12, stop_ids=[]) for p in prompts]
    assert all(len(r) == 12 for r in got)
    assert all(isinstance(k, Open) for k in kinds)  # every decoding step was open to joiners


def test_joiners_as_rows_end_at_different_steps(model):
    free = [alone(model, p, max_new_tokens=16, stop_ids=[]) for p in PROMPTS + [LONG]]
    stop = free[1][2]  # ends row 1 at its third token, the others later or never
    want = [alone(model, p, max_new_tokens=16, stop_ids=[stop]) for p in PROMPTS + [LONG]]
    assert len({len(r) for r in want}) > 1
    # Joins after rows of the batch have ended (and the batch was compacted), and into a batch of one.
    got, kinds = with_joiners(
        model,
        PROMPTS[:2],
        {3: [PROMPTS[2]], 6: [PROMPTS[3], LONG], 9: [PROMPTS[4]]},
        max_new_tokens=16,
        stop_ids=[stop],
    )
    assert got == [want[i] for i in (0, 1, 2, 3, 5, 4)]
    rows = [k.rows for k in kinds if isinstance(k, Open)]
    assert max(rows) > 2  # the joiners really ran with the batch


def test_each_row_ends_at_its_own_token_limit_joiners_too(model):
    limits = {tuple(p): n for p, n in zip(PROMPTS + [LONG], [3, 9, 5, 2, 7, 4], strict=True)}
    got, _ = with_joiners(model, PROMPTS[:3], {1: [PROMPTS[3], LONG], 4: [PROMPTS[4]]}, limits=limits, stop_ids=[])
    prompts = PROMPTS[:3] + [PROMPTS[3], LONG, PROMPTS[4]]
    assert [len(r) for r in got] == [limits[tuple(p)] for p in prompts]
    assert got == [alone(model, p, max_new_tokens=limits[tuple(p)], stop_ids=[]) for p in prompts]


def test_per_row_limits_need_the_joiners_limits(model):
    with pytest.raises(TypeError, match="joiners' token limits"):
        with_joiners(model, PROMPTS[:2], {0: [PROMPTS[2]]}, max_new_tokens=[4, 4], stop_ids=[])


def test_rows_that_end_before_the_batch_are_yielded_at_once(model):
    limits = {tuple(p): n for p, n in zip(PROMPTS, [3, 9, 5, 2, 6], strict=True)}
    joins = {1: [PROMPTS[3]], 2: [PROMPTS[4]]}
    got, kinds = with_joiners(model, PROMPTS[:3], joins, limits=limits, stop_ids=[], finished=True)
    assert [len(r) for r in got] == [3, 9, 5, 2, 6]
    early = [k.results for k in kinds if isinstance(k, Finished)]
    # rows 0, 3 (a joiner) and 2 end on their own; 1 and 4 at the batch's last step, returned with it
    assert early == [{0: got[0]}, {3: got[3]}, {2: got[2]}]
    _, kinds = with_joiners(model, PROMPTS[:3], joins, limits=limits, stop_ids=[])
    assert not any(isinstance(k, Finished) for k in kinds)  # only when asked for


def test_joiners_sharing_a_prefix_are_grouped_and_stored(model):
    store = PrefixStore(min_tokens=16)
    joiners = [SHARED + [5, 6], SHARED + [30, 31, 32]]
    calls = []
    hook = model.register_forward_pre_hook(lambda _m, args, kw: calls.append(kw["input_ids"].shape), with_kwargs=True)
    try:
        got, _ = with_joiners(
            model, PROMPTS[:2], {1: joiners}, max_new_tokens=8, stop_ids=[], prefixes=store, namespace="base"
        )
    finally:
        hook.remove()
    assert (1, len(SHARED)) in calls  # the joiners' shared tokens, once
    assert store.get("base", SHARED) is not None and store.get("base", SHARED + [5]) is not None
    assert got == [alone(model, p, max_new_tokens=8, stop_ids=[]) for p in PROMPTS[:2] + joiners]


def test_a_chunked_joiner_prefill_yields_prefill_steps_and_keeps_the_tokens(model):
    long_prompt = [1 + i % 95 for i in range(240)]  # over chunks of the smallest size (128 tokens)
    got, kinds = with_joiners(model, PROMPTS[:2], {1: [long_prompt]}, max_new_tokens=6, stop_ids=[], prefill_slice=1e-9)
    assert "prefill" in kinds[2:]  # the joiner's prefill was cut into chunks, with steps between them
    assert got == [alone(model, p, max_new_tokens=6, stop_ids=[]) for p in PROMPTS[:2] + [long_prompt]]


def test_sampled_joiners_draw_from_their_own_seeds(model):
    seeds = {tuple(p): s for p, s in zip(PROMPTS, [11, 22, 33, 44, 55], strict=True)}
    sampler = seeded_sampler([11, 22], 1.5, 0.9, "cpu")

    def add(prompts):
        sampler.add_rows([seeds[tuple(p)] for p in prompts])

    got, _ = with_joiners(
        model,
        PROMPTS[:2],
        {2: PROMPTS[2:4], 4: [PROMPTS[4]]},
        on_admit=add,
        max_new_tokens=10,
        stop_ids=[],
        processors=[sampler],
    )
    for p, tokens in zip(PROMPTS, got, strict=True):
        own = seeded_sampler([seeds[tuple(p)]], 1.5, 0.9, "cpu")
        assert tokens == alone(model, p, max_new_tokens=10, stop_ids=[], processors=[own])


class Recorder:
    def __init__(self):
        self.calls: list[tuple[list[int], list[int | None] | None]] = []

    def step(self, live, last, scores):
        self.calls.append((list(live), None if last is None else list(last)))
        return scores


def test_processors_see_joiners_with_no_last_token_at_first(model):
    recorder = Recorder()
    got, _ = with_joiners(model, PROMPTS[:2], {2: PROMPTS[2:4]}, max_new_tokens=6, stop_ids=[], processors=[recorder])
    live, last = recorder.calls[3]  # the step after the third pass: the joiners' first
    assert live == [0, 1, 2, 3] and last == [got[0][2], got[1][2], None, None]
    live, last = recorder.calls[4]
    assert last == [got[0][3], got[1][3], got[2][0], got[3][0]]


def test_counters_count_joined_rows_and_join_steps(model):
    counters = EngineCounters()
    got, _ = with_joiners(
        model,
        PROMPTS[:2],
        {1: [PROMPTS[2]], 3: PROMPTS[3:5]},
        max_new_tokens=6,
        stop_ids=[],
        counters=counters,
        share_prefix=False,
    )
    assert counters.joined_rows == 3 and counters.join_steps == 2
    assert counters.batches == 1 and counters.batch_sizes == {5: 1}
    assert counters.prompt_tokens == sum(map(len, PROMPTS))
    assert counters.new_tokens == sum(map(len, got)) == 30
    assert counters.prefill_passes == 3  # the batch's prefill and one per join


def test_a_batch_without_admit_is_closed_to_joiners(model):
    ids, mask = left_padded(PROMPTS)
    steps = decode_steps(model, ids, mask, max_new_tokens=4, stop_ids=[])
    with torch.inference_mode():
        assert list(steps) == ["decoding"] * 3
