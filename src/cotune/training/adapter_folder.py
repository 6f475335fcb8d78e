"""The adapter folder both trainers write: PEFT's ``save_pretrained`` output with ``cotune_adapter.json``
beside it (`cotune.lm.adapters` reads it back), swapped in whole, never over a folder that is not one."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from cotune.errors import TrainingError
from cotune.files import write_dir_atomic
from cotune.lm.adapters import METADATA_FILE


def check_output_dir(output_dir: Path) -> None:
    """Refuse, before training, to overwrite a folder that holds anything but an adapter."""
    if output_dir.exists() and (
        not output_dir.is_dir() or (any(output_dir.iterdir()) and not (output_dir / "adapter_config.json").is_file())
    ):
        raise TrainingError(f"{output_dir} exists and is not an adapter folder; choose another output_dir")


def save_adapter(model: Any, metadata: dict[str, Any], output_dir: Path) -> None:
    """Write the adapter into a scratch folder, fsync it and swap it in (`write_dir_atomic`), so a killed run
    never leaves half an adapter and the old one stays whole until the new one is in place."""

    def write(scratch: Path) -> None:
        try:
            model.save_pretrained(str(scratch))
        except Exception as e:
            if not isinstance(e, OSError) and "No space left on device" in str(e):  # safetensors' own error type
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(output_dir)) from e
            raise
        (scratch / METADATA_FILE).write_text(json.dumps(metadata, indent=2))

    write_dir_atomic(output_dir, write)


def library_versions() -> dict[str, str]:
    """The versions of the libraries an adapter was trained with (saved in its metadata)."""
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


__all__ = ["check_output_dir", "library_versions", "save_adapter"]
