"""HFLM: its contract with the engine (unit, with a tiny echo engine) and the real SmolLM2 (integration)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from cotune.errors import ConfigError, LMError, UnknownChoiceError
from cotune.lm import Completion, RequestCache
from cotune.lm.engine.batching import BatchWorker
from cotune.lm.engine.hf import HFLM
from cotune.lm.engine.hf_engine import HFEngine, resolve_dtype


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class EchoEngine:
    """Stands in for `HFEngine`: same submit/close surface, answers ``<adapter>:<last message>``."""

    path, device, dtype, decoder = "/models/echo", "cpu", "float32", "cotune"
    batch_key = HFEngine.batch_key  # the real engine's grouping: it needs only ``decoder``

    def __init__(self, fail: Exception | None = None):
        self.batches: list[tuple[tuple, list]] = []
        self.fail = fail
        self._worker = BatchWorker(self._run, max_batch_size=8, wait_ms=0)

    def _run(self, key, payloads):
        self.batches.append((key, payloads))
        if self.fail is not None:
            raise self.fail
        adapter = key[2]
        return [Completion(f"{adapter}:{messages[-1]['content']}", 3, 1) for messages, _seed, _config in payloads]

    def submit(self, key, payloads):
        return self._worker.submit(key, payloads)

    def close(self):
        self._worker.close()


def make_adapter(folder: Path, base_model: str = "echo", weights: bytes = b"w1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(weights)
    meta = {"base_model": base_model, "data_hash": "d", "hyperparameters": {}, "final_loss": 0.1}
    (folder / "cotune_adapter.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture
def echo():
    engine = EchoEngine()
    yield HFLM.from_engine(engine, name="echo", cache=False)
    engine.close()


def test_answers_in_request_order_and_spec(echo):
    out = echo.generate([user("a long question here"), user("b")])
    assert [c.text for c in out] == ["None:a long question here", "None:b"]
    assert echo.spec() == {"backend": "hf", "model": "echo", "adapter": None}
    assert echo.model_path == "/models/echo" and echo.device == "cpu" and echo.dtype == "float32"


def test_a_large_batch_is_submitted_shortest_first(echo):
    echo.generate([user("x" * 50), user("x"), user("x" * 10)])
    _, payloads = echo.engine.batches[0]
    assert [len(m[-1]["content"]) for m, _, _ in payloads] == [1, 10, 50]


def test_rollouts_share_a_batch_group_but_not_a_seed(echo):
    echo.generate([user("q")], temperature=0.7, rollout_id=0)
    echo.generate([user("q")], temperature=0.7, rollout_id=1)
    echo.generate([user("q")], temperature=0.7, rollout_id=0)
    keys = [k for k, _ in echo.engine.batches]
    seeds = [p[0][1] for _, p in echo.engine.batches]
    assert keys[0] == keys[1] == keys[2]  # rollout id does not split a batch
    assert seeds[0] != seeds[1] and seeds[0] == seeds[2]  # but it changes the sample, reproducibly


def test_requests_of_any_settings_share_a_batch_group_each_with_its_own_config(echo):
    from cotune.lm.constraint import Constraint

    settings = [
        {"max_tokens": 5},
        {"stop": ["\n"]},
        {"temperature": 0.7},
        {"constraint": Constraint(grammar=(), json_schema="{}")},
    ]
    for config in [{}, *settings]:
        echo.generate([user("q")], **config)
    keys = [k for k, _ in echo.engine.batches]
    assert len(set(keys)) == 1
    configs = [p[0][2] for _, p in echo.engine.batches]
    assert [configs[i].replace(rollout_id=0) for i in range(1, 5)] == [echo.config.replace(**c) for c in settings]


def test_the_transformers_decoder_groups_by_settings_and_greedy_ignores_top_p(echo):
    echo.engine.decoder = "transformers"  # its generate takes one config per call
    echo.generate([user("q")], top_p=0.5)
    echo.generate([user("q")], top_p=0.9)
    echo.generate([user("q")], top_p=0.9, rollout_id=3)
    echo.generate([user("q")], max_tokens=5)
    keys = [k for k, _ in echo.engine.batches]
    assert keys[0] == keys[1] == keys[2] != keys[3]


def test_with_adapter_shares_the_engine_and_changes_the_cache_key(echo, tmp_path):
    adapter = make_adapter(tmp_path / "a1")
    tuned = echo.with_adapter(adapter)
    assert tuned.engine is echo.engine
    assert tuned.adapter == str(adapter) and tuned.adapter_id.startswith(f"{adapter}#")
    assert tuned.spec() == {"backend": "hf", "model": "echo", "adapter": str(adapter)}
    assert tuned(user("q")).text == f"{adapter}:q"
    config = echo.config
    assert tuned.cache_key(user("q"), config) != echo.cache_key(user("q"), config)
    assert tuned.with_adapter(None).cache_key(user("q"), config) == echo.cache_key(user("q"), config)


def test_spec_round_trip_reuses_the_loaded_engine(echo, tmp_path):
    from cotune.lm.registry import from_spec

    tuned = echo.with_adapter(make_adapter(tmp_path / "a1"))
    restored = from_spec(tuned.spec(), like=echo)
    assert restored.spec() == tuned.spec() and restored.engine is echo.engine
    assert restored.adapter_id == tuned.adapter_id
    assert from_spec(echo.spec(), like=tuned).adapter is None


def test_a_retrained_adapter_at_the_same_path_gets_a_new_id(echo, tmp_path):
    first = echo.with_adapter(make_adapter(tmp_path / "a", weights=b"old")).adapter_id
    second = echo.with_adapter(make_adapter(tmp_path / "a", weights=b"new")).adapter_id
    assert first != second and first.split("#")[0] == second.split("#")[0]


def test_an_adapter_for_another_base_model_is_refused_naming_both(echo, tmp_path):
    adapter = make_adapter(tmp_path / "a", base_model="qwen2.5-coder-0.5b")
    with pytest.raises(ConfigError) as info:
        echo.with_adapter(adapter)
    assert "qwen2.5-coder-0.5b" in str(info.value) and "'echo'" in str(info.value)


def test_an_adapter_recorded_by_base_path_matches(echo, tmp_path):
    adapter = make_adapter(tmp_path / "a", base_model="/models/echo")
    assert echo.with_adapter(adapter).adapter == str(adapter)


@pytest.mark.parametrize(
    "missing, message", [("adapter_config.json", "not a LoRA adapter"), ("adapter_model.safetensors", "has no weights")]
)
def test_an_incomplete_adapter_folder_is_refused(echo, tmp_path, missing, message):
    adapter = make_adapter(tmp_path / "a")
    (adapter / missing).unlink()
    with pytest.raises(ConfigError, match=message):
        echo.with_adapter(adapter)


def test_cache_hits_skip_the_engine(tmp_path):
    engine = EchoEngine()
    lm = HFLM.from_engine(engine, name="echo", cache=RequestCache(tmp_path / "c.sqlite"))
    first, second = lm(user("q")), lm(user("q"))
    assert (first.cached, second.cached, second.text) == (False, True, first.text)
    assert len(engine.batches) == 1
    engine.close()


def test_engine_errors_reach_the_caller_with_their_cause():
    engine = EchoEngine(fail=RuntimeError("CUDA out of memory"))
    lm = HFLM.from_engine(engine, name="echo", cache=False)
    with pytest.raises(LMError, match="CUDA out of memory") as info:
        lm(user("q"))
    assert isinstance(info.value.__cause__, RuntimeError)
    engine.fail = ConfigError("cannot load LoRA adapter x")
    with pytest.raises(ConfigError, match="cannot load LoRA adapter"):  # cotune's own errors pass unchanged
        lm(user("q"))
    engine.close()
    with pytest.raises(LMError, match="closed"):
        lm(user("q"))


def test_unknown_dtype_lists_the_choices():
    with pytest.raises(UnknownChoiceError, match="unknown dtype 'int4'; choose one of: .*bfloat16.*float32.*int8"):
        resolve_dtype("int4", "cpu")
    assert resolve_dtype("bf16", "cpu") == "bfloat16" and resolve_dtype("fp32", "cpu") == "float32"


@pytest.mark.parametrize(
    "text, fast",
    [
        ("flags\t\t: fpu sse2 avx2 fma\n", False),
        ("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n", True),
        ("flags\t\t: fpu avx2 amx_bf16\n", True),
        ("Features\t: fp asimd sve bf16 i8mm\n", True),
        ("model name\t: bf16-less chip\nflags\t\t: avx2\n", False),
    ],
)
def test_bf16_is_chosen_on_cpus_with_bf16_instructions_only(text, fast):
    from cotune.hardware import cpu_has_bf16

    assert cpu_has_bf16(text) is fast
    assert cpu_has_bf16("processor\t: 0\n") is None  # nothing listed: unknown (then measured)


def test_importing_the_backend_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, cotune.lm.engine.hf, cotune.lm.registry; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# -- integration: the real SmolLM2-135M ----------------------------------------------------------------

QUESTIONS = [
    f"Name one fruit that is {c}." for c in ["red", "yellow", "green", "orange", "purple", "blue", "white", "brown"]
]


@pytest.fixture(scope="module")
def smol():
    """SmolLM2 in float32, no cache: float32 keeps batched and single greedy decoding identical."""
    from cotune.lm import registry

    lm = registry.load("smollm2-135m", dtype="float32", cache=False)
    yield lm
    lm.close()


@pytest.fixture
def count_generate(smol):
    """Counts the engine's batched generations from now on: ``calls()`` → (batches, requests)."""
    before = (smol.engine.stats.batches, smol.engine.stats.requests)

    class Count:
        def calls(self) -> tuple[int, int]:
            return smol.engine.stats.batches - before[0], smol.engine.stats.requests - before[1]

    return Count()


@pytest.mark.integration
def test_generates_text_with_real_token_counts(smol):
    done = smol(user("What is the capital of France?"), max_tokens=12)
    assert "Paris" in done.text
    assert done.prompt_tokens > 10 and 0 < done.completion_tokens <= 12
    cut = smol(user("Write a long story about a dragon."), max_tokens=4)
    assert cut.completion_tokens == 4 and cut.finish_reason == "length"
    stopped = smol(user("What is the capital of France?"), max_tokens=12, stop=["Paris"])
    assert "Paris" not in stopped.text and stopped.finish_reason == "stop"
    assert smol.engine.model.config._attn_implementation == "cotune_grouped_sdpa"  # SmolLM2: 3 kv heads for 9


@pytest.mark.integration
def test_concurrent_calls_are_coalesced_and_match_sequential_greedy(smol, count_generate):
    sequential = [smol(user(q), max_tokens=6).text for q in QUESTIONS]
    assert count_generate.calls() == (len(QUESTIONS), len(QUESTIONS))
    barrier, results = threading.Barrier(len(QUESTIONS)), {}

    def call(i: int) -> None:
        barrier.wait()
        results[i] = smol(user(QUESTIONS[i]), max_tokens=6).text

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(QUESTIONS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    batches, requests = count_generate.calls()
    assert requests == 2 * len(QUESTIONS)
    assert batches - len(QUESTIONS) < len(QUESTIONS), f"{batches - len(QUESTIONS)} batches for {len(QUESTIONS)} calls"
    assert [results[i] for i in range(len(QUESTIONS))] == sequential


@pytest.mark.integration
def test_a_repeated_request_is_a_cache_hit(smol, count_generate, tmp_path):
    cached = HFLM.from_engine(smol.engine, name=smol.model, cache=RequestCache(tmp_path / "c.sqlite"))
    first = cached(user("Say hi."), max_tokens=4)
    again = cached(user("Say hi."), max_tokens=4)
    assert not first.cached and again.cached and again.text == first.text
    assert count_generate.calls() == (1, 1) and cached.usage.cache_hits == 1


@pytest.mark.integration
def test_sampling_is_seeded_by_the_request_not_the_batch(smol):
    question = user("Tell me a fun fact about cats.")
    alone = smol(question, max_tokens=6, temperature=1.0)
    batched = smol.generate([user("Hi."), question, user("Count to three.")], max_tokens=6, temperature=1.0)[1]
    assert batched.text == alone.text
    rollouts = {alone.text} | {smol(question, max_tokens=6, temperature=1.0, rollout_id=r).text for r in (1, 2)}
    assert len(rollouts) > 1


@pytest.fixture(scope="module")
def random_lora(smol):
    """Makes LoRA adapters with random (non-zero) weights, saved the way the trainer saves one."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(smol.model_path, dtype=torch.float32)

    def make(folder: Path, seed: int) -> Path:
        torch.manual_seed(seed)
        config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        get_peft_model(copy.deepcopy(base), config).save_pretrained(str(folder))
        meta = {"base_model": "smollm2-135m", "data_hash": "test", "hyperparameters": {"r": 4}, "final_loss": None}
        (folder / "cotune_adapter.json").write_text(json.dumps(meta))
        return folder

    return make


@pytest.mark.integration
def test_adapters_share_the_base_weights_and_change_outputs(smol, random_lora, tmp_path):
    import shutil

    question = user("What is the capital of France?")
    base_text = smol(question, max_tokens=8).text
    path = random_lora(tmp_path / "lora", seed=0)
    tuned = smol.with_adapter(path)
    assert tuned.engine is smol.engine
    assert tuned.cache_key(question, tuned.config) != smol.cache_key(question, smol.config)
    tuned_text = tuned(question, max_tokens=8).text
    assert tuned_text != base_text
    assert smol(question, max_tokens=8).text == base_text  # switching back to the bare base works
    random_lora(path, seed=1)  # retrained in place
    retrained = smol.with_adapter(path)
    assert retrained.adapter_id != tuned.adapter_id
    assert retrained(question, max_tokens=8).text != tuned_text
    other = shutil.copytree(path, tmp_path / "other")
    (other / "cotune_adapter.json").write_text(json.dumps({"base_model": "qwen2.5-coder-0.5b"}))
    with pytest.raises(ConfigError, match="qwen2.5-coder-0.5b.*'smollm2-135m'"):
        smol.with_adapter(other)


@pytest.mark.integration
def test_a_second_adapter_loads_quietly_and_leaves_the_first_intact(smol, random_lora, tmp_path, caplog):
    question = user("Name a color.")
    first = smol.with_adapter(random_lora(tmp_path / "first", seed=2))
    first_text = first(question, max_tokens=8).text
    with caplog.at_level("WARNING"):
        second_text = smol.with_adapter(random_lora(tmp_path / "second", seed=3))(question, max_tokens=8).text
    assert second_text != first_text
    assert first(question, max_tokens=8, rollout_id=1).text == first_text  # uncached, still the first adapter
    assert "LOAD REPORT" not in caplog.text and "MISSING" not in caplog.text


@pytest.mark.integration
def test_an_adapter_missing_some_of_its_weights_is_refused(smol, random_lora, tmp_path):
    from safetensors.torch import load_file, save_file

    path = random_lora(tmp_path / "partial", seed=4)
    weights = load_file(path / "adapter_model.safetensors")
    dropped = sorted(weights)[0]
    save_file({k: v for k, v in weights.items() if k != dropped}, path / "adapter_model.safetensors")
    with pytest.raises(ConfigError, match="lacks 1 of its weights"):
        smol.with_adapter(path)(user("Hi."), max_tokens=2)


@pytest.mark.parametrize("min_p, allowed", [(0.0, {0, 1, 2, 3}), (0.2, {0, 1}), (0.5, {0})])
def test_min_p_drops_the_unlikely_tail(min_p, allowed):
    torch = pytest.importorskip("torch")
    from cotune.lm.engine.sampling import seeded_sampler as _seeded_sampler

    # probabilities 0.6, 0.25, 0.1, 0.05 (at temperature 1): min_p 0.2 keeps those >= 0.12
    scores = torch.log(torch.tensor([[0.6, 0.25, 0.1, 0.05]])).repeat(200, 1)
    sampler = _seeded_sampler(list(range(200)), 1.0, 1.0, "cpu", min_p)
    picked = set(sampler(None, scores).argmax(dim=-1).tolist())
    assert picked == allowed


@pytest.mark.integration
def test_run_compute_runs_on_the_model_thread_after_queued_requests(smol):
    """Training goes through `run_compute`: on the thread every generation runs on, so the process keeps one
    team of compute threads; from that thread itself it runs at once (no deadlock)."""
    import torch

    worker = smol.run_compute(threading.current_thread)
    assert worker is not threading.current_thread() and worker.name.startswith("cotune-hf-")
    assert smol.run_compute(lambda: smol.run_compute(threading.current_thread)) is worker
    assert smol.run_compute(lambda: float(torch.ones(2, 2).sum())) == 4.0
    with pytest.raises(ZeroDivisionError):
        smol.run_compute(lambda: 1 / 0)
    assert smol(user("Say yes."), max_tokens=2).text  # the engine still answers after a failed call
