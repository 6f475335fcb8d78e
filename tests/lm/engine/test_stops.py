"""Stop strings in cotune's decoding loop: a row ends after writing one, as transformers' ``generate`` ends it,
and a batch with stop strings takes turns with others instead of running in one call."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from cotune.lm.engine.stops import stop_processor  # noqa: E402

END = 0


class Letters:
    """A tokenizer whose token i decodes to the i-th letter (0 is the end token, decoded as nothing)."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join("" if i == END else chr(ord("a") + i - 1) for i in ids)


def test_a_row_that_writes_a_stop_string_writes_its_end_token_next():
    stops = stop_processor(Letters(), ["cd"], END)
    scores = torch.zeros((2, 8))
    assert torch.equal(stops.step([0, 1], None, scores.clone()), scores)  # nothing written yet
    for step in [[3, 1], [4, 2]]:  # row 0 writes "c", "d"; row 1 "a", "b"
        out = stops.step([0, 1], step, scores.clone())
    assert out[0].argmax() == END and out[0].isinf().sum() == 7  # row 0 must end
    assert torch.equal(out[1], scores[1])  # row 1 goes on
    # Later steps see only the live rows; row 1 writes "c", "d" across them.
    stops.step([1], [3], scores[:1].clone())
    assert stops.step([1], [4], scores[:1].clone())[0].argmax() == END


@pytest.mark.integration
def test_stop_strings_end_rows_as_generate_does():
    from cotune.lm.engine.hf import HFLM
    from cotune.lm.registry import model_folder

    folder = model_folder("smollm2-135m")
    ours = HFLM(folder, name="smollm2-135m", cache=False)
    theirs = HFLM(folder, name="smollm2-135m", cache=False, decoder="transformers")
    prompts = ["Count from 1 to 20.", "List three fruits, one per line.", "What is the capital of France?"]
    batch = [[{"role": "user", "content": p}] for p in prompts]
    stopped = 0
    for stop in (["\n"], ["5", "Paris"], [" is"]):
        got = ours.generate(batch, max_tokens=40, stop=stop)
        stopped += sum(c.finish_reason == "stop" for c in got)
        want = theirs.generate(batch, max_tokens=40, stop=stop)
        assert [(c.text, c.completion_tokens, c.finish_reason) for c in got] == [
            (c.text, c.completion_tokens, c.finish_reason) for c in want
        ], stop
    assert stopped >= 5  # most rows did meet a stop string
    ours.close()
    theirs.close()
