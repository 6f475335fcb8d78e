"""One client's heavy request does not hold another's small one behind it, on the real small model: prompts
over the context are refused before they queue, and a long prompt's prefill yields to other batches."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from cotune.serve.admission import Admission
from cotune.serve.policy import ServerLimits
from cotune.serve.server import start_server

pytestmark = pytest.mark.integration

SMALL = {"model": "m", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def lm():
    pytest.importorskip("transformers")
    from cotune.lm.registry import load

    model = load("smollm2-135m", cache=False)
    yield model
    model.close()


def post(url, body, timeout=120):
    return httpx.post(url + "/chat/completions", json=body, timeout=timeout)


def test_the_prompt_is_counted_as_the_engine_counts_it(lm):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]
    assert Admission(ServerLimits()).prompt_tokens(lm, messages) == lm(messages, max_tokens=1).prompt_tokens


def test_a_prompt_over_the_context_is_refused_at_once(lm):
    words = " ".join(["apple"] * 8550)  # about 8,570 tokens: over SmolLM2's 8,192
    calls = lm.engine.generate_calls
    with start_server(lm, model_name="m") as srv:
        t0 = time.monotonic()
        r = post(srv.url, {**SMALL, "messages": [{"role": "user", "content": words}]})
        seconds = time.monotonic() - t0
    assert r.status_code == 400 and "context is 8192 tokens" in r.json()["error"]["message"]
    assert lm.engine.generate_calls == calls and seconds < 10  # never reached the model (it took 72 s to answer)


@pytest.mark.parametrize(
    "heavy",
    [
        {"messages": [{"role": "user", "content": " ".join(["apple"] * 800)}], "max_tokens": 2},
        # with a stop string: before, generate ran such a batch in one call
        {"messages": [{"role": "user", "content": "Count from 1 to 500."}], "max_tokens": 120, "stop": ["\n\n\n\n"]},
    ],
    ids=["long prompt", "long generation with a stop string"],
)
def test_a_small_request_overtakes_a_heavy_one(lm, heavy):
    done: dict[str, float] = {}
    with start_server(lm, model_name="m") as srv:
        assert post(srv.url, SMALL).status_code == 200  # warm

        def send_heavy():
            assert post(srv.url, {**SMALL, **heavy}).status_code == 200
            done["heavy"] = time.monotonic()

        calls = lm.engine.generate_calls
        thread = threading.Thread(target=send_heavy)
        thread.start()
        deadline = time.monotonic() + 30
        while lm.engine.generate_calls == calls and time.monotonic() < deadline:  # the heavy batch has begun
            time.sleep(0.005)
        assert post(srv.url, SMALL).status_code == 200
        done["small"] = time.monotonic()
        thread.join(120)
    # Before, the small request waited for the whole heavy batch; now they take turns.
    assert done["small"] < done["heavy"]
