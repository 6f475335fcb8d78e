"""Where an API key may go, and URLs with their secrets taken out.

Two rules keep a user's key with the servers the user chose:

- ``$OPENAI_API_KEY`` (a key nobody passed explicitly) never travels over plain http to another machine:
  only over https, or to a loopback address.
- An LM rebuilt from a *saved* spec (a program file someone may have sent) gets ``$OPENAI_API_KEY`` only
  when its ``base_url`` has the origin of ``$OPENAI_BASE_URL``, the endpoint the user set for that key. A
  file cannot redirect the key to a server of its choosing.

Credentials inside a URL (``http://user:pass@host/v1``, ``?api_key=...``) are used for requests but never
written: `redact_url` is what specs, cache keys and error messages see.

Example:
    >>> redact_url("http://user:secret@10.0.0.5:8000/v1")
    'http://10.0.0.5:8000/v1'
    >>> is_loopback("http://localhost:8000/v1"), is_loopback("http://10.0.0.5/v1")
    (True, False)
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

ENV_KEY, ENV_BASE_URL = "OPENAI_API_KEY", "OPENAI_BASE_URL"
_SECRET_PARAMS = ("key", "api_key", "apikey", "token", "access_token", "password", "secret")


def redact_url(url: str) -> str:
    """``url`` without user:password and with secret-looking query values replaced by ``***``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def is_loopback(url: str) -> bool:
    """Whether ``url`` names this machine (127.0.0.0/8, ::1 or localhost)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with default ports filled in, for comparing endpoints."""
    parts = urlsplit(url.strip())
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default


def may_send_env_key(url: str) -> bool:
    """An implicit key goes over https, or over http only to this machine."""
    return urlsplit(url).scheme.lower() == "https" or is_loopback(url)


def key_for_saved_url(url: str, env: Mapping[str, str] | None = None) -> str:
    """The API key for an LM rebuilt from a saved spec pointing at ``url``: ``$OPENAI_API_KEY`` when the
    user's ``$OPENAI_BASE_URL`` has the same origin, else "" (no key)."""
    env = os.environ if env is None else env
    key, trusted = env.get(ENV_KEY, ""), env.get(ENV_BASE_URL, "")
    if key and trusted and origin(trusted) == origin(url) and may_send_env_key(url):
        return key
    return ""
