"""A prefill cut into chunks (`cotune.lm.engine.prefill.Chunks`) gives the tokens of one pass, yielding between
chunks; on a tiny randomly initialized Llama (no weights loaded)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cotune.lm.engine.decode import decode, decode_steps  # noqa: E402
from cotune.lm.engine.prefill import BATCH_PASSES, DECODING, PASSES, PREFILL, UNTIMED_PASS_S, Chunks, PassTimer  # noqa: E402
from cotune.lm.engine.prefix_store import PrefixStore  # noqa: E402

PAD = 0


@pytest.fixture(scope="module")
def model(tiny_llama):
    return tiny_llama


def left_padded(prompts):
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


LONG = [(7 * i) % 90 + 3 for i in range(70)]
PROMPTS = [LONG, LONG[:9], [40, 41, 42] + LONG[5:50], [5]]


def run_steps(steps):
    """Drive a `decode_steps` generator to its end; returns (tokens, steps yielded)."""
    count = 0
    while True:
        try:
            with torch.inference_mode():
                next(steps)
        except StopIteration as done:
            return done.value, count
        count += 1


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of one column each, whatever the speed."""
    monkeypatch.setattr(Chunks, "FIRST", 1)
    monkeypatch.setattr(Chunks, "FLOOR", 1)


def test_a_chunked_prefill_gives_the_tokens_of_one_pass(model, small_chunks):
    ids, mask = left_padded(PROMPTS)
    with torch.inference_mode():
        whole = decode(model, ids, mask, max_new_tokens=8, stop_ids=[], share_prefix=False)
    steps = decode_steps(model, ids, mask, max_new_tokens=8, stop_ids=[], share_prefix=False, prefill_slice=1e-9)
    got, yielded = run_steps(steps)
    assert got == whole
    # 70 columns, one at a time: 69 passes before the last; then 7 decoding steps
    assert yielded == 69 + 7


def test_grouped_and_stored_prefixes_are_chunked_too(model, small_chunks):
    prompts = [LONG + [5, 6], LONG + [7], LONG[:40] + [8, 9, 10]]
    ids, mask = left_padded(prompts)
    with torch.inference_mode():
        whole = decode(model, ids, mask, max_new_tokens=6, stop_ids=[])
    widths = []

    def recording(**kwargs):
        widths.append(kwargs["input_ids"].shape)
        return model(**kwargs)

    recording.config = model.config
    store = PrefixStore(min_tokens=4)
    kwargs = {"max_new_tokens": 6, "stop_ids": [], "prefixes": store, "prefill_slice": 1e-9}
    chunked, _ = run_steps(decode_steps(recording, ids, mask, **kwargs))
    assert chunked == whole
    assert (1, 1) in widths  # the one-row pass of a shared prefix was cut as well
    again, _ = run_steps(decode_steps(recording, ids, mask, **kwargs))
    assert again == whole and store.stats.hits == 3  # prompts stored from chunked passes answer the same


def test_chunks_follow_the_measured_speed():
    calls = []

    def fake_model(**kwargs):
        calls.append(kwargs["input_ids"].shape[1])
        return "out"

    chunks = Chunks(0.05)
    ids = torch.zeros((2, 5000), dtype=torch.long)
    positions = torch.arange(5000)[None].expand(2, -1)
    steps = chunks.forward(fake_model, ids, None, positions, cache=None)
    with pytest.raises(StopIteration) as done:
        while True:
            next(steps)
    assert done.value.value == "out" and sum(calls) == 5000
    # the first chunk is 128 tokens (64 columns of 2 rows); a fake model is fast, so the next takes the rest
    assert calls[0] == 64 and len(calls) == 2


def test_no_slice_is_one_pass():
    calls = []
    chunks = Chunks(None)
    ids = torch.zeros((1, 3000), dtype=torch.long)
    steps = chunks.forward(lambda **kw: calls.append(kw["input_ids"].shape[1]), ids, None, ids, cache=None)
    with pytest.raises(StopIteration):
        next(steps)
    assert calls == [3000]


def test_the_slice_is_counted_in_decoding_steps_and_prefill_steps_do_not_count():
    import contextlib
    import time

    def steps():
        for pause, kind in [(0.2, PREFILL), (0.2, DECODING), (0.02, DECODING), (0.02, DECODING)]:
            time.sleep(pause)  # the first decoding step's time is the prefill's last pass
            yield kind
        return "tokens"

    timer = PassTimer()
    assert timer.slice == BATCH_PASSES * UNTIMED_PASS_S  # nothing timed yet
    run = timer.run(steps(), contextlib.nullcontext)
    with pytest.raises(StopIteration) as done:
        while True:
            next(run)
    value, seconds = done.value.value
    assert value == "tokens" and seconds >= 0.44
    assert 0.02 <= timer.pass_seconds < 0.15 and timer.slice == BATCH_PASSES * timer.pass_seconds
    timer.interactive = True  # an engine answering clients: finer slices
    assert timer.slice == max(0.2, PASSES * timer.pass_seconds)


def test_the_timer_passes_on_what_a_step_yields_and_what_is_sent_back():
    import contextlib

    from cotune.lm.engine.batching import Open

    def steps():
        first = yield Open(1)  # a batch open to joiners
        second = yield DECODING
        return [first, second]

    run = PassTimer().run(steps(), contextlib.nullcontext)
    assert next(run) == Open(1)
    assert run.send(["joiner"]) == DECODING
    with pytest.raises(StopIteration) as done:
        run.send(None)
    assert done.value.value[0] == [["joiner"], None]
