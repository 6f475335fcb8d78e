"""`ServerHandle`: a `cotune serve` server running in a background thread (`cotune.serve.server.start_server`)."""

from __future__ import annotations

import threading
from typing import Any

from cotune.events import emit


def bind_of(server: Any) -> str:
    """What the socket is bound to, as given: "0.0.0.0:8000" means every interface."""
    host, port = server.server_address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url_of(server: Any) -> str:
    host, port = server.server_address[:2]
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1" if host != "::" else "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/v1"


class ServerHandle:
    """A server running in a background thread. ``url`` is the base URL for OpenAI clients (ends in /v1)."""

    def __init__(self, server: Any):
        self._server = server
        self.host, self.port = server.server_address[:2]
        self.url = url_of(server)
        self._closed = False
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.name = f"cotune-server-{self.port}"
        self._thread.start()

    @property
    def models(self) -> list[str]:
        """The names served now (the base model first; adapters loaded at runtime included)."""
        return list(self._server.models)

    @property
    def requests_by_model(self) -> dict[str, int]:
        """Chat-completion requests answered or attempted so far, per model name they named."""
        return dict(self._server.models.requests)

    def close(self) -> None:
        """Stop serving, close the socket and idle connections; requests in progress are abandoned."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        self._server.close_connections()
        emit(self._server.events, "server.stop", url=self.url)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServerHandle(url={self.url!r}, models={self.models!r})"
