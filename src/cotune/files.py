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

import contextlib
import glob
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
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
        with _naming(path), tmp.open("wb") as f:
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


def write_dir_atomic(target: str | Path, write: Callable[[Path], object]) -> Path:
    """Make the folder ``target`` with ``write(scratch)``: it fills a scratch folder beside ``target``, which
    is fsynced (every file, then the folder) and swapped in by `replace_dir_atomic`. A failed write leaves
    no scratch folder and raises an `OSError` naming ``target``; scratch folders that killed processes left
    beside ``target`` are removed first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_scratch(target)
    scratch = target.with_name(f".{target.name}.saving-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        with _naming(target):
            scratch.mkdir()
            write(scratch)
            fsync_tree(scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return replace_dir_atomic(scratch, target)


def fsync_tree(folder: str | Path) -> None:
    """Flush every file under ``folder`` to disk, then the folders themselves (their entries)."""
    for root, _dirs, names in os.walk(folder, topdown=False):
        for name in names:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _remove_stale_scratch(target: Path) -> None:
    """Scratch folders of ``target`` whose process is gone (killed while saving)."""
    for path in target.parent.glob(f".{glob.escape(target.name)}.saving-*"):
        pid = path.name.rsplit("-", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else (or this platform cannot tell): keep its folder
        return True
    return True


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An `OSError` without a file name (``write()`` on a full disk: "No space left on device") gets
    ``path``, the file or folder being written, so the message says where."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


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
