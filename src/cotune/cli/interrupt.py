"""Ctrl-C at the command line: stop within a second, whatever is in flight.

The first Ctrl-C raises `KeyboardInterrupt` as usual, so the command keeps what it finished (an
evaluation writes its finished rows, a run keeps its finished steps). What it abandoned may still be
running in worker threads (an HTTP request waiting out a 60 s read timeout, a generation), and Python
joins every such thread before it exits: `exit_interrupted` ends the process without that wait. A
second Ctrl-C while the first is being handled exits at once, instead of interrupting Python's own
shutdown with a traceback.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import Any, NoReturn

CODE = 130  # 128 + SIGINT, what shells report for a Ctrl-C


class SigInt:
    """The SIGINT handler `main` installs: the first signal raises `KeyboardInterrupt`, later ones exit."""

    def __init__(self) -> None:
        self.received = False
        self.previous: Any = None

    def install(self) -> SigInt:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self)
        return self

    def uninstall(self) -> None:
        """Put back the handler `install` replaced (for a caller that runs `main` in its own process)."""
        if self.previous is not None and signal.getsignal(signal.SIGINT) is self:
            signal.signal(signal.SIGINT, self.previous)

    def __call__(self, signum: int, frame: Any) -> None:
        if self.received:
            _exit_now(signum, frame)
        self.received = True
        raise KeyboardInterrupt


def interrupted(console: Any) -> NoReturn:
    """Say so on ``console`` and exit with 130, without waiting for requests still in flight."""
    console.print("[yellow]interrupted[/]")
    exit_interrupted(CODE)


def exit_interrupted(code: int = CODE) -> NoReturn:
    """Exit with ``code`` now. With worker threads still running, skip the interpreter's wait for them:
    run the exit handlers, flush, and end the process."""
    if not _abandoned_threads():
        raise SystemExit(code)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _exit_now)  # a Ctrl-C during the exit handlers: no traceback
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _exit_now(signum: int, frame: Any) -> NoReturn:
    _write_stderr("interrupted again: exiting now\n")
    os._exit(CODE)


def _abandoned_threads() -> list[threading.Thread]:
    main = threading.main_thread()
    return [t for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()]


def _write_stderr(text: str) -> None:
    try:
        os.write(2, text.encode())
    except OSError:
        pass
