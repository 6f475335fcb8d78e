import threading

import pytest

from cotune.errors import ConfigError, UnknownChoiceError
from cotune.lm import FakeLM, GenerationConfig, RequestCache
from cotune.lm.base import truncate_at_stop

MSG = [{"role": "user", "content": "hello there"}]


def counting_lm(cache):
    return FakeLM(lambda messages, config: f"answer t={config.temperature} r={config.rollout_id}", cache=cache)


def test_cache_hit_skips_the_model(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    lm = counting_lm(cache)
    first, second = lm(MSG), lm(MSG)
    assert len(lm.calls) == 1
    assert second.text == first.text and second.cached and not first.cached
    usage = lm.usage
    assert usage.calls == 2 and usage.cache_hits == 1 and usage.prompt_tokens == 2 * first.prompt_tokens


def test_cache_persists_across_instances(tmp_path):
    path = tmp_path / "c.sqlite"
    counting_lm(RequestCache(path))(MSG)
    again = counting_lm(RequestCache(path))
    assert again(MSG).cached and again.calls == []


@pytest.mark.parametrize(
    "change",
    [{"temperature": 0.7}, {"rollout_id": 1}, {"max_tokens": 5}, {"top_p": 0.5}],
)
def test_cache_key_covers_sampling_parameters(tmp_path, change):
    lm = counting_lm(RequestCache(tmp_path / "c.sqlite"))
    lm(MSG)
    assert not lm(MSG, **change).cached


def test_cache_key_covers_model_adapter_and_messages(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    lm = counting_lm(cache)
    lm(MSG)
    assert not lm.with_adapter("adapters/a")(MSG).cached
    assert not FakeLM(lambda m: "x", name="other", cache=cache)(MSG).cached
    assert not lm([{"role": "user", "content": "different"}]).cached


def test_cache_can_be_switched_off():
    lm = counting_lm(cache=None)
    lm(MSG)
    lm(MSG)
    assert len(lm.calls) == 2 and lm.usage.cache_hits == 0


def test_cache_is_thread_safe(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    lm = FakeLM(lambda m: m[0]["content"].upper(), cache=cache)
    out = {}

    def work(i):
        for j in range(20):
            out[(i, j)] = lm([{"role": "user", "content": f"m{i}-{j % 5}"}]).text

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(v == f"M{i}-{j % 5}" for (i, j), v in out.items())
    assert len(cache) == 30


def test_batched_generate_keeps_order_and_mixes_hits(tmp_path):
    lm = FakeLM(lambda m: m[0]["content"][::-1], cache=RequestCache(tmp_path / "c.sqlite"))
    lm([{"role": "user", "content": "bc"}])
    out = lm.generate([[{"role": "user", "content": s}] for s in ["ab", "bc", "cd"]])
    assert [c.text for c in out] == ["ba", "cb", "dc"]
    assert [c.cached for c in out] == [False, True, False]


def test_generation_config_validation():
    with pytest.raises(ConfigError, match="temperature"):
        GenerationConfig(temperature=-1)
    with pytest.raises(UnknownChoiceError, match="temprature.*choose one of:.*temperature"):
        GenerationConfig().replace(temprature=0.5)
    assert GenerationConfig(stop="\n").stop == ("\n",)


def test_stop_strings_cut_text():
    assert truncate_at_stop("abc\n\ndef", ["\n\n", "zz"]) == ("abc", True)
    assert FakeLM(["one. two"])(MSG, stop=["."]).text == "one"
