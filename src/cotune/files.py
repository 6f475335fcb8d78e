"""Atomic file writes: a reader (or a run resumed after ``kill -9``) sees the old file or the new one, never half.

Each write goes to a temporary file beside the target, is flushed to disk (fsync), and is renamed over the
target; the folder is fsynced too so the rename itself survives a power cut. A folder (an adapter) is
replaced the same way: the new one is renamed in before the old one is deleted.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a" / "x.json"
    >>> _ = write_json_atomic(path, {"score": 0.5}); path.read_text()
    '{\\n  "score": 0.5\\n}'
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its renames are durable enough for us
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def replace_dir_atomic(new: str | Path, target: str | Path) -> Path:
    """Move the finished folder ``new`` to ``target``, replacing what is there without a moment where
    neither exists: the old folder is renamed aside first, the new one renamed in, then the old one deleted.
    A crash between the two renames leaves ``target.old-*`` beside a missing target, never a torn folder."""
    new, target = Path(new), Path(target)
    aside = None
    if target.exists():
        aside = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, aside)
    os.replace(new, target)
    _fsync_dir(target.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return target
