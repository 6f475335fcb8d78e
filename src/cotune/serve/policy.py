"""Who may use `cotune serve`, and how much: access checks and limits, apart from the protocol code.

- **API key.** Binding anything but a loopback address needs one; every request must then carry
  ``Authorization: Bearer <key>``.
- **Browsers.** A web page can send a "simple" cross-origin POST (``text/plain``) to a local server without
  asking first. So requests with an ``Origin`` header are refused unless that origin was allowed, POST bodies
  must be ``application/json``, and a server on loopback answers only to loopback ``Host`` names (a
  DNS-rebinding page would send its own host name).
- **Limits.** Body size, generated tokens (capped at the model's context), output schema size and depth,
  requests in progress, open connections, and seconds per generation, per request head and per body.

Example:
    >>> policy = ServerPolicy.create("127.0.0.1")
    >>> policy.check({"Host": "127.0.0.1:8000", "Content-Type": "application/json"}, "POST") is None
    True
    >>> policy.check({"Host": "127.0.0.1:8000", "Content-Type": "text/plain"}, "POST").status
    415
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cotune.errors import ConfigError

API_KEY_ENV = "COTUNE_SERVER_API_KEY"
_KEY = re.compile(r"[\x21-\x7e]+")  # what a client can send after "Bearer " and the server compare as sent
DEFAULT_MAX_TOKENS = 8192  # when the model does not say its context length


@dataclass(frozen=True)
class ServerLimits:
    """How much one server accepts.

    Attributes:
        max_body_bytes: largest request body; larger ones get 413.
        max_tokens: most tokens a request may ask for; None: the model's context length (or 8192).
        max_concurrent: generations in progress at once; more get 503 with Retry-After (clients retry).
        max_connections: open connections (one thread each); more get 503 and are closed.
        request_timeout: seconds a generation may take before the client gets 504.
        head_timeout: seconds a connection has to send a whole request head (new, or kept alive between
            requests), however slowly it trickles in; then it is closed.
        read_timeout: seconds a client then has to send the body (else 408).
        max_schema_bytes: largest ``response_format`` JSON schema (its grammar is compiled per request).
        max_schema_depth: deepest nesting of JSON containers in that schema (compile time grows about with
            the cube of the depth: 0.03 s at 101 levels, 1 s at 301, 25 s at 901 on a 2-core CPU).
    """

    max_body_bytes: int = 4 * 1024 * 1024
    max_tokens: int | None = None
    max_concurrent: int = 32
    max_connections: int = 128
    request_timeout: float = 600.0
    head_timeout: float = 10.0
    read_timeout: float = 30.0
    max_schema_bytes: int = 64 * 1024
    max_schema_depth: int = 64

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_concurrent", "max_connections", "max_schema_bytes", "max_schema_depth"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1 or None, got {self.max_tokens}")
        for name in ("request_timeout", "head_timeout", "read_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)}")


class Refusal(Exception):
    """A request refused before it reaches the model: HTTP status, message, extra headers."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        self.status, self.message, self.headers = status, message, dict(headers or {})
        super().__init__(message)


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    header = header.strip()
    if header.startswith("["):  # [::1]:8000
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


@dataclass(frozen=True)
class ServerPolicy:
    """Access rules of one server; see the module docstring."""

    api_key: str | None = None
    loopback: bool = True
    allowed_origins: frozenset[str] = field(default_factory=frozenset)
    limits: ServerLimits = field(default_factory=ServerLimits)

    @classmethod
    def create(
        cls,
        host: str,
        *,
        api_key: str | None = None,
        allowed_origins: Iterable[str] = (),
        limits: ServerLimits | None = None,
    ) -> ServerPolicy:
        """The policy for a server bound to ``host``; ``api_key`` None reads ``$COTUNE_SERVER_API_KEY``.

        Raises:
            ConfigError: ``host`` is not a loopback address and there is no API key.
        """
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        if key and not _KEY.fullmatch(key):
            bad = next(i for i, c in enumerate(key) if not _KEY.fullmatch(c))
            what = (
                "is blank"
                if not key.strip()
                else f"has a space or a non-ASCII or control character (character {bad + 1})"
            )
            raise ConfigError(
                f"the API key {what}: a key is printable ASCII without spaces (clients send it as "
                f"'Authorization: Bearer KEY'); pass another with --api-key (api_key=) or ${API_KEY_ENV}"
            )
        loopback = is_loopback_host(host)
        if not loopback and not key:
            raise ConfigError(
                f"binding {host!r} exposes the model to the network, so it needs an API key: pass --api-key KEY "
                f"(api_key=) or set ${API_KEY_ENV}; or bind a loopback address (127.0.0.1, ::1, localhost)"
            )
        origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        return cls(key, loopback, origins, limits or ServerLimits())

    def check(self, headers: Mapping[str, Any], method: str) -> Refusal | None:
        """The refusal for a request with these headers, or None when it may go on."""
        host = headers.get("Host") or ""
        if self.loopback and not is_loopback_host(_host_name(host)):
            return Refusal(
                403,
                f"Host {host!r} is not accepted: this server answers only to 127.0.0.1, ::1 and "
                "localhost (a web page reaching it through another name is refused)",
            )
        origin = headers.get("Origin")
        if origin is not None and origin.rstrip("/").lower() not in self.allowed_origins:
            allowed = ", ".join(sorted(self.allowed_origins)) or "none"
            return Refusal(403, f"requests from web pages are refused (Origin {origin!r}); allowed origins: {allowed}")
        if self.api_key:
            sent = headers.get("Authorization") or ""
            if not hmac.compare_digest(sent.encode(), f"Bearer {self.api_key}".encode()):
                what = "a wrong API key" if sent else "no API key"
                return Refusal(
                    401, f"{what}: send the server's key as 'Authorization: Bearer KEY'", {"WWW-Authenticate": "Bearer"}
                )
        if method == "POST":
            kind = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            if kind != "application/json":
                return Refusal(415, f"Content-Type {kind or 'missing'!r} is not accepted; send application/json")
        return None

    def token_cap(self, lm: Any) -> int:
        """Most tokens a request may ask for: the configured cap, never above the model's context."""
        context = context_length(lm)
        caps = [c for c in (self.limits.max_tokens, context) if c]
        return min(caps) if caps else DEFAULT_MAX_TOKENS


def context_length(lm: Any) -> int | None:
    """The model's context length where the backend tells it (``LM.context_length``); None otherwise."""
    value = lm.context_length
    return int(value) if isinstance(value, int) and value > 0 else None
