"""The open connections of `cotune serve`: how long each may take to send its request, and which one goes
when the table is full.

Every connection is in one phase:

- **head**: waiting for a request head (a new connection, or a kept-alive one between requests). It must
  arrive whole within ``head_timeout`` seconds, however it trickles in (a per-read timeout would let a
  client that sends a byte every few seconds hold its thread forever);
- **body**: the head was read and the caller passed the access checks; the body must arrive within
  ``read_timeout`` seconds;
- **busy**: the request is being answered (generation has its own deadline).

A reaper thread closes connections past their deadline. A body that is late is cut on the read side only,
so the handler can still answer 408. When every place is taken, a new connection takes the place of the
oldest one still waiting for its head, preferring one that has not yet sent a request the server accepted:
clients that never send a key cannot keep one that does out. Only when every connection is past its head
is a new one refused.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass

logger = logging.getLogger("cotune.server")

HEAD, BODY, BUSY = "head", "body", "busy"


@dataclass
class _Entry:
    phase: str
    deadline: float | None  # monotonic seconds; None: no deadline in this phase
    since: float
    trusted: bool = False  # a request on this connection passed the access checks
    expired: bool = False


class ConnectionTable:
    """Open connections, their phases and deadlines; see the module docstring.

    Args:
        capacity: the most open connections.
        head_timeout: seconds a connection has to send a whole request head.
        read_timeout: seconds it then has to send the body.
        tick: how often the reaper looks for connections past their deadline.
    """

    def __init__(self, capacity: int, head_timeout: float, read_timeout: float, *, tick: float = 0.1):
        self.capacity, self.head_timeout, self.read_timeout = capacity, head_timeout, read_timeout
        self._entries: dict[socket.socket, _Entry] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.evicted = 0  # connections closed to make room for a new one
        self.timed_out = 0  # connections closed for missing a deadline
        self._reaper = threading.Thread(target=self._reap, args=(tick,), name="cotune-server-reaper", daemon=True)
        self._reaper.start()

    def admit(self, sock: socket.socket) -> bool:
        """Take a new connection, making room by closing the oldest one waiting for its head if need be;
        False when every place is held by a connection past its head."""
        now = time.monotonic()
        with self._lock:
            victim = None
            if len(self._entries) >= self.capacity:
                waiting = [(e.trusted, e.since, s) for s, e in self._entries.items() if e.phase == HEAD]
                if not waiting:
                    return False
                victim = min(waiting, key=lambda w: w[:2])[2]
                del self._entries[victim]
                self.evicted += 1
            self._entries[sock] = _Entry(HEAD, now + self.head_timeout, now)
        if victim is not None:
            logger.debug("connection table full: closed the oldest connection waiting for a request head")
            _shutdown(victim, socket.SHUT_RDWR)
        return True

    def waiting(self, sock: socket.socket) -> None:
        """``sock`` waits for its next request head."""
        self._set(sock, HEAD, self.head_timeout)

    def reading_body(self, sock: socket.socket, *, trusted: bool) -> bool:
        """``sock`` sent a head; ``trusted``: it passed the access checks. False when it was cut meanwhile
        (its head arrived at its deadline, or its place went to a new connection): drop it."""
        return self._set(sock, BODY, self.read_timeout, trusted=trusted)

    def busy(self, sock: socket.socket) -> None:
        """``sock``'s request is being answered."""
        self._set(sock, BUSY, None)

    def expired(self, sock: socket.socket) -> bool:
        """Whether ``sock`` was cut for missing its deadline (or to make room)."""
        with self._lock:
            entry = self._entries.get(sock)
            return entry is None or entry.expired

    def remove(self, sock: socket.socket) -> None:
        with self._lock:
            self._entries.pop(sock, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def sockets(self) -> list[socket.socket]:
        with self._lock:
            return list(self._entries)

    def close(self) -> None:
        """Stop the reaper."""
        self._stop.set()

    def _set(self, sock: socket.socket, phase: str, timeout: float | None, *, trusted: bool = False) -> bool:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(sock)
            if entry is None or entry.expired:
                return False
            entry.phase, entry.since = phase, now
            entry.deadline = None if timeout is None else now + timeout
            entry.trusted = entry.trusted or trusted
            return True

    def _reap(self, tick: float) -> None:
        while not self._stop.wait(tick):
            now = time.monotonic()
            cut: list[tuple[socket.socket, str]] = []
            with self._lock:
                for sock, entry in self._entries.items():
                    if not entry.expired and entry.deadline is not None and now > entry.deadline:
                        entry.expired = True
                        cut.append((sock, entry.phase))
                self.timed_out += len(cut)
            for sock, phase in cut:
                # A late head is dropped; a late body is cut on the read side only, so its handler answers 408.
                logger.debug("closing a connection that missed its %s deadline", phase)
                _shutdown(sock, socket.SHUT_RD if phase == BODY else socket.SHUT_RDWR)


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:  # already closed by its handler
        pass
