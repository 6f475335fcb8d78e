"""One process per run directory: an advisory lock on ``<run>/.lock``, released by the OS when the
process ends however it ends (``kill -9`` included), so a stale lock never blocks a resume.

The lock file holds who took it (pid, host, command, time) so the second process can name the holder.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with RunLock(folder):
    ...     try:
    ...         RunLock(folder).acquire()
    ...     except RunInUseError as e:
    ...         print(str(e).split(";")[0].startswith(f"run directory {folder} is in use by process"))
    True
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import threading
from pathlib import Path
from typing import IO

from cotune.errors import RunInUseError

LOCK_FILE = ".lock"


class RunLock:
    """Re-entrant within one `RunLock` object; exclusive across processes (and across objects)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._file: IO[str] | None = None
        self._depth = 0
        self._mutex = threading.RLock()

    @property
    def path(self) -> Path:
        return self.folder / LOCK_FILE

    def acquire(self) -> None:
        """Take the lock, or raise `RunInUseError` naming the process that holds it."""
        with self._mutex:
            if self._depth:
                self._depth += 1
                return
            try:
                import fcntl
            except ImportError:  # Windows: no advisory locks here; runs are not protected from each other
                self._depth = 1
                return
            f = self.path.open("a+", encoding="utf-8")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise RunInUseError(
                    f"run directory {self.folder} is in use by {holder}; wait for it to finish or stop it, then resume",
                    holder=holder,
                ) from None
            f.seek(0)
            f.truncate()
            command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
            f.write(
                f"process {os.getpid()} on {socket.gethostname()} ({command!r}, since {dt.datetime.now():%Y-%m-%d %H:%M:%S})"
            )
            f.flush()
            self._file, self._depth = f, 1

    def release(self) -> None:
        with self._mutex:
            if self._depth == 0:
                return
            self._depth -= 1
            if self._depth == 0 and self._file is not None:
                self._file.close()  # closing the file releases the lock
                self._file = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
