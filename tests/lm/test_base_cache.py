"""The request cache, run both ways it is offered: a backend's ``cache=`` argument and `CachedLM`
wrapped around an uncached backend (one implementation, `cotune.lm.cache.through_cache`)."""

import copy
import threading

import httpx
import pytest

from cotune.errors import ConfigError, UnknownChoiceError
from cotune.lm import CachedLM, FakeLM, GenerationConfig, RequestCache
from cotune.lm.completion import truncate_at_stop
from cotune.lm.registry import from_spec
from cotune.lm.remote.openai_compat import OpenAICompatible
from cotune.serve.models import ServedModels

MSG = [{"role": "user", "content": "hello there"}]


def built_in(answers, cache, **kwargs):
    return FakeLM(answers, cache=cache, **kwargs)


def wrapped(answers, cache, **kwargs):
    return CachedLM(FakeLM(answers, **kwargs), cache)


@pytest.fixture(params=[built_in, wrapped], ids=["cache=", "CachedLM"])
def make(request):
    """Builds a FakeLM answering with ``answers`` behind ``cache``, one way or the other."""
    return request.param


def sent(lm):
    """The requests that reached the FakeLM (a backend's own attribute: read on the wrapped LM)."""
    return lm.lm.calls if isinstance(lm, CachedLM) else lm.calls


def counting_lm(make, cache):
    return make(lambda messages, config: f"answer t={config.temperature} r={config.rollout_id}", cache)


def test_cache_hit_skips_the_model(make, tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    lm = counting_lm(make, cache)
    first, second = lm(MSG), lm(MSG)
    assert len(sent(lm)) == 1
    assert second.text == first.text and second.cached and not first.cached
    usage = lm.usage
    assert usage.calls == 2 and usage.cache_hits == 1 and usage.prompt_tokens == 2 * first.prompt_tokens


def test_cache_persists_across_instances(make, tmp_path):
    path = tmp_path / "c.sqlite"
    counting_lm(make, RequestCache(path))(MSG)
    again = counting_lm(make, RequestCache(path))
    assert again(MSG).cached and sent(again) == []


@pytest.mark.parametrize(
    "change",
    [{"temperature": 0.7}, {"rollout_id": 1}, {"max_tokens": 5}, {"top_p": 0.5}],
)
def test_cache_key_covers_sampling_parameters(make, tmp_path, change):
    lm = counting_lm(make, RequestCache(tmp_path / "c.sqlite"))
    lm(MSG)
    assert not lm(MSG, **change).cached


def test_cache_key_covers_model_adapter_and_messages(make, tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    lm = counting_lm(make, cache)
    lm(MSG)
    assert not lm.with_adapter("adapters/a")(MSG).cached
    assert not make(lambda m: "x", cache, name="other")(MSG).cached
    assert not lm([{"role": "user", "content": "different"}]).cached


def test_cache_can_be_switched_off(make):
    lm = counting_lm(make, cache=None)
    lm(MSG)
    lm(MSG)
    assert len(sent(lm)) == 2 and lm.usage.cache_hits == 0


def test_cache_is_thread_safe(make, tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    lm = make(lambda m: m[0]["content"].upper(), cache)
    out = {}

    def work(i):
        for j in range(20):
            out[(i, j)] = lm([{"role": "user", "content": f"m{i}-{j % 5}"}]).text

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(v == f"M{i}-{j % 5}" for (i, j), v in out.items())
    assert len(cache) == 30


def test_batched_generate_keeps_order_and_mixes_hits(make, tmp_path):
    lm = make(lambda m: m[0]["content"][::-1], RequestCache(tmp_path / "c.sqlite"))
    lm([{"role": "user", "content": "bc"}])
    out = lm.generate([[{"role": "user", "content": s}] for s in ["ab", "bc", "cd"]])
    assert [c.text for c in out] == ["ba", "cb", "dc"]
    assert [c.cached for c in out] == [False, True, False]


# --- CachedLM: the same cache, around any LM -----------------------------------------------------------


def test_one_cache_file_answers_both_ways(tmp_path):
    # Same keys: a cache written by a backend's cache= answers the wrapper, and the other way round.
    cache = RequestCache(tmp_path / "c.sqlite")
    FakeLM(["first"], cache=cache)(MSG)
    inner = FakeLM(["second"])
    lm = CachedLM(inner, cache)
    assert lm(MSG).text == "first" and lm(MSG).cached and inner.calls == []
    assert lm.cache_key(MSG, lm.config) == FakeLM(["x"], cache=cache).cache_key(MSG, lm.config)
    other = [{"role": "user", "content": "other"}]
    assert lm(other).text == "second"
    assert FakeLM(["third"], cache=cache)(other).text == "second"


def test_usage_counts_hits_apart_and_the_inner_lm_only_what_was_sent(tmp_path):
    inner = FakeLM(["a"])
    lm = CachedLM(inner, RequestCache(tmp_path / "c.sqlite"))
    lm.generate([MSG, [{"role": "user", "content": "x"}]])
    lm(MSG)
    lm(MSG)
    assert (lm.usage.calls, lm.usage.cache_hits) == (4, 2)
    assert (inner.usage.calls, inner.usage.cache_hits) == (2, 0)


def test_the_wrapper_is_the_wrapped_lm_but_for_the_cache(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    inner = FakeLM(["a"], name="m", adapter="ad", structured_output="grammar", config=GenerationConfig(max_tokens=9))
    lm = CachedLM(inner, cache)
    assert (lm.backend, lm.model, lm.adapter, lm.adapter_id) == ("fake", "m", "ad", "ad")
    assert lm.spec() == inner.spec() and lm.capabilities == inner.capabilities
    assert lm.config.max_tokens == 9 and lm.constrained and lm.structured_output == "grammar"
    assert lm.adapter_address is inner.adapter_address and lm.adapter_ref(tmp_path) == inner.adapter_ref(tmp_path)
    assert copy.deepcopy(lm) is lm  # programs are copied, models shared
    assert repr(lm) == f"CachedLM(FakeLM('m', adapter='ad'), {cache!r})"
    tuned = lm.with_adapter("other")
    assert isinstance(tuned, CachedLM) and tuned.cache is cache and tuned.adapter == "other"
    assert CachedLM(inner, cache=False).cache is None


def test_the_wrapper_forwards_what_lm_declares_and_nothing_else(tmp_path):
    class Local(FakeLM):
        context_length = 50
        engine = "the engine"

        def count_prompt_tokens(self, messages):
            return 7

        def close(self):
            self.closed = True

    inner = Local(["a"])
    lm = CachedLM(inner, RequestCache(tmp_path / "c.sqlite"))
    assert (lm.context_length, lm.engine, lm.count_prompt_tokens(MSG), lm.served_identity()) == (
        50,
        "the engine",
        7,
        None,
    )
    lm.close()
    assert inner.closed
    with pytest.raises(AttributeError):
        _ = lm.calls  # a FakeLM's own attribute: read it on lm.lm


def test_a_wrapped_server_lm_keeps_its_cache_key_and_spec(tmp_path):
    sent = []

    def handler(request):
        if request.method == "GET":  # which model the server runs: part of the key
            return httpx.Response(200, json={"data": [{"id": "m", "root": "/models/m"}]})
        sent.append(request)
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": "hi"}}]})

    url, cache = "http://127.0.0.1:8000/v1", RequestCache(tmp_path / "c.sqlite")
    server_lm = OpenAICompatible("m", base_url=url, cache=False, transport=httpx.MockTransport(handler))
    lm = CachedLM(server_lm, cache)
    assert lm(MSG).text == "hi" and lm(MSG).cached and len(sent) == 1
    built_in_lm = OpenAICompatible("m", base_url=url, cache=cache, transport=httpx.MockTransport(handler))
    assert lm.cache_key(MSG, lm.config) == built_in_lm.cache_key(MSG, lm.config)  # base_url is in both
    restored = from_spec({**lm.spec(), "adapter": "sql"}, like=lm)
    assert isinstance(restored, CachedLM) and restored.cache is cache and restored.adapter == "sql"


def test_a_server_bypasses_the_wrappers_cache_for_samples(tmp_path):
    inner = FakeLM(["a", "b"])
    models = ServedModels(CachedLM(inner, RequestCache(tmp_path / "c.sqlite")), "m")
    uncached = models.pick("m", cached=False)
    assert [uncached(MSG).text, uncached(MSG).text] == ["a", "b"]
    assert not any(c.cached for c in uncached.generate([MSG]))


def test_generation_config_validation():
    with pytest.raises(ConfigError, match="temperature"):
        GenerationConfig(temperature=-1)
    with pytest.raises(UnknownChoiceError, match="temprature.*choose one of:.*temperature"):
        GenerationConfig().replace(temprature=0.5)
    assert GenerationConfig(stop="\n").stop == ("\n",)


def test_stop_strings_cut_text():
    assert truncate_at_stop("abc\n\ndef", ["\n\n", "zz"]) == ("abc", True)
    assert FakeLM(["one. two"])(MSG, stop=["."]).text == "one"
