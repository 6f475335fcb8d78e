"""LoRA adapter folders: checking one belongs to a base model, and naming its exact contents.

The folder contract (shared with `cotune.training.lora`): PEFT's ``save_pretrained`` output
(``adapter_config.json`` + ``adapter_model.safetensors``) plus ``cotune_adapter.json`` recording
``base_model`` (a registry name or a path), ``base_model_path``, ``data_hash``, ``hyperparameters`` and
``final_loss``. Folders without ``cotune_adapter.json`` (plain PEFT adapters) load without the base check.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cotune.errors import ConfigError

METADATA_FILE = "cotune_adapter.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_weights(path: str | Path) -> Path:
    """The weight file of the adapter folder ``path``.

    Raises:
        ConfigError: ``path`` is not a folder holding ``adapter_config.json`` and adapter weights.
    """
    folder = Path(path)
    if not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"{folder} is not a LoRA adapter folder: adapter_config.json is missing")
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"adapter folder {folder} has no weights (expected one of: {', '.join(WEIGHT_FILES)})")


def adapter_id(path: str | Path) -> str:
    """``<path>#<first 12 hex of the weights' sha256>``: a retrained adapter at the same path gets a new id,
    so cached completions of the old weights are not reused."""
    digest = hashlib.sha256()
    with adapter_weights(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"{path}#{digest.hexdigest()[:12]}"


def check_base_model(path: str | Path, *, name: str, model_path: str) -> None:
    """Refuse an adapter trained on another base model.

    The adapter matches when its recorded ``base_model`` equals this model's registry name or path, or its
    ``base_model_path`` is the same folder as ``model_path``.

    Raises:
        ConfigError: the adapter's ``cotune_adapter.json`` names a different base model (both are named),
            or cannot be read.
    """
    meta_file = Path(path) / METADATA_FILE
    if not meta_file.is_file():
        return
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {meta_file}: {e}") from e
    base, base_path = meta.get("base_model"), meta.get("base_model_path")
    if not base and not base_path:
        return
    if base in (name, model_path) or _same_path(base, model_path) or _same_path(base_path, model_path):
        return
    raise ConfigError(
        f"adapter {path} was trained on base model {base or base_path!r}, but this LM is {name!r}"
        f" ({model_path}); load the adapter with its own base model"
    )


def _same_path(a: str | None, b: str) -> bool:
    if not a:
        return False
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def relative_adapter(adapter: str | None, base_dir: str | Path) -> str | None:
    """The adapter path to save in a file in ``base_dir``: relative to it (so the folder can move)."""
    if adapter is None:
        return None
    return os.path.relpath(os.path.abspath(adapter), os.path.abspath(base_dir))
