"""An OpenAI-compatible HTTP server over any cotune LM (stdlib only).

Endpoints: ``POST /v1/chat/completions`` (non-streaming, n=1), ``GET /v1/models``, ``GET /health``.
Each request runs ``lm(messages, **overrides)`` in its own thread, so a backend that coalesces
concurrent calls (the transformers backend does) turns concurrent HTTP requests into batched generation.
Adapters are served by name, like vLLM's ``--lora-modules``: a request whose ``model`` is an adapter name
runs on ``lm.with_adapter(path)``. With ``runtime_lora=True`` the server also has vLLM's runtime LoRA API
(``POST /v1/load_lora_adapter``, ``POST /v1/unload_lora_adapter``; see `cotune.lm.server_models`).

The request body checks live in `cotune.lm.server_protocol`, the served models in
`cotune.lm.server_models`, access rules and limits in `cotune.lm.server_policy`; this module is the HTTP.

Example:
    >>> from cotune.lm.fake import FakeLM
    >>> from cotune.lm.openai_compat import OpenAICompatible
    >>> with start_server(FakeLM(["Answer: 4"]), model_name="toy") as server:
    ...     client = OpenAICompatible("toy", base_url=server.url, cache=False)
    ...     client([{"role": "user", "content": "2+2?"}]).text
    'Answer: 4'
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cotune.errors import ConfigError
from cotune.events import EventSink, emit
from cotune.lm.base import LM
from cotune.lm.server_models import LORA_ENDPOINTS, ServedModels
from cotune.lm.server_policy import Refusal, ServerLimits, ServerPolicy
from cotune.lm.server_protocol import (  # noqa: F401 - response_constraint is public here too
    RequestError,
    check_max_tokens,
    completion_body,
    parse_request,
    refuse_connection,
    response_constraint,
)

logger = logging.getLogger("cotune.server")

MAX_BODY_BYTES = ServerLimits.max_body_bytes
_DIGITS = re.compile(r"[0-9]{1,12}")  # ASCII only: str.isdigit() accepts "²", which int() refuses


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so pooled clients reuse connections
    server: _Server
    timeout = 120  # seconds an idle keep-alive connection may hold a thread
    # Headers and body go out in two writes; with Nagle's algorithm on, the second waits for the client's
    # delayed ACK (~40 ms per request on Linux).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        self.timeout = self.server.policy.limits.read_timeout  # a slow or idle client cannot hold a thread
        super().setup()

    def do_GET(self) -> None:
        t0 = time.perf_counter()
        path = self.path.split("?", 1)[0].rstrip("/")
        if (refusal := self.server.policy.check(self.headers, "GET")) is not None:
            self._refuse(refusal, t0)
            return
        if path == "/health":
            status, body = 200, {"status": "ok", "models": list(self.server.models)}
        elif path == "/v1/models":
            status, body = 200, {"object": "list", "data": self.server.models.cards(int(self.server.started))}
        else:
            status, body = 404, RequestError(404, self._no_endpoint(path)).body()
        self._answer(status, body, t0)

    def do_POST(self) -> None:
        t0 = time.perf_counter()
        path = self.path.split("?", 1)[0].rstrip("/")
        name, completion = None, None
        if (refusal := self.server.policy.check(self.headers, "POST")) is not None:
            self.close_connection = True  # the body was not read
            self._refuse(refusal, t0)
            return
        headers: dict[str, str] = {}
        body: dict[str, Any] | str
        try:
            raw = self._body()
            lora = path in LORA_ENDPOINTS and self.server.models.runtime_lora
            if path != "/v1/chat/completions" and not lora:
                raise RequestError(404, self._no_endpoint(path))
            try:
                request = json.loads(raw)
            except (ValueError, RecursionError) as e:  # "[" * 100000 nests past Python's recursion limit
                raise RequestError(400, f"the request body is not valid JSON: {str(e)[:200]}") from None
            if lora:  # logged below as a server.request event with the adapter's name as its model
                status, body = 200, self.server.models.handle_lora(path, request)
                name = request["lora_name"]
            else:
                name, lm, messages, overrides = parse_request(request, self.server.models.snapshot(),
                                                              self.server.models.default)  # fmt: skip
                check_max_tokens(overrides, self.server.policy.token_cap(lm))
                lm = self.server.for_request(name, overrides)
                completion = self.server.generate(lm, messages, overrides)
                status, body = 200, completion_body(name, completion)
        except RequestError as e:
            status, body = e.status, e.body()
            headers = e.headers
        except Exception as e:  # the model failed: answer 500 so clients retry, and keep serving
            logger.exception("request to %s failed", path)
            status, body = 500, RequestError(500, f"{type(e).__name__}: {e}").body()
        self._answer(status, body, t0, headers, model=name, completion=completion)

    def _refuse(self, refusal: Refusal, t0: float) -> None:
        self._answer(refusal.status, RequestError(refusal.status, refusal.message).body(), t0, refusal.headers)

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True  # the body's end is unknown, so the connection cannot be reused
            raise RequestError(411, "send the request body with a Content-Length header")
        if not _DIGITS.fullmatch(length.strip()):
            self.close_connection = True
            raise RequestError(400, f"Content-Length must be a number of bytes, got {length[:40]!r}")
        limit = self.server.policy.limits.max_body_bytes
        if int(length) > limit:
            self.close_connection = True
            raise RequestError(413, f"request body of {int(length)} bytes is over the limit of {limit}")
        data = self.rfile.read(int(length))
        if len(data) < int(length):
            self.close_connection = True
            raise RequestError(400, f"the body ended after {len(data)} of the {int(length)} bytes announced")
        return data

    def _no_endpoint(self, path: str) -> str:
        lora = "".join(f", POST {e}" for e in LORA_ENDPOINTS) if self.server.models.runtime_lora else ""
        return (
            f"no endpoint {self.command} {path}; this server has POST /v1/chat/completions{lora}, GET /v1/models, "
            "GET /health"
        )

    def _send(self, status: int, body: dict[str, Any] | str, headers: Mapping[str, str] | None = None) -> None:
        # vLLM answers a runtime LoRA load or unload with a plain-text "Success: ..."; everything else is JSON.
        text = isinstance(body, str)
        blob = body.encode() if text else json.dumps(body, ensure_ascii=False).encode()
        try:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/json")
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob)
        except OSError:  # the client went away (or the server is closing); nothing left to tell it
            self.close_connection = True

    def _answer(self, status: int, body: Any, t0: float, headers: Mapping[str, str] | None = None, **log: Any) -> None:
        """The ``server.request`` event first, then the answer: a client holding its answer finds the event."""
        self._log(status, t0, **log)
        self._send(status, body, headers)

    def _log(self, status: int, t0: float, *, model: str | None = None, completion: Any = None) -> None:
        fields: dict[str, Any] = {"method": self.command, "path": self.path, "status": status, "model": model}
        fields["seconds"] = round(time.perf_counter() - t0, 4)
        if completion is not None:
            fields.update(prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens)
        emit(self.server.events, "server.request", **fields)

    def log_message(self, format: str, *args: Any) -> None:
        # http.server writes to stderr by default; library code reports through logging instead.
        logger.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a request stuck in the model must not keep the process alive

    def __init__(self, address: tuple[str, int], models: ServedModels, events: EventSink | None, policy: ServerPolicy):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.models, self.events, self.policy = models, events, policy
        self.started = time.time()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(policy.limits.max_concurrent)
        super().__init__(address, _Handler)

    def for_request(self, name: str, overrides: Mapping[str, Any]) -> LM:
        """The model for a request: cached only when its answer is determined (greedy, or a seeded sample);
        a seedless sample must not be the same "sample" for every client."""
        sampled = overrides.get("temperature", self.models.base.config.temperature) > 0
        return self.models.pick(name, cached=not sampled or "rollout_id" in overrides)

    def generate(self, lm: LM, messages: list[dict[str, str]], overrides: dict[str, Any]) -> Any:
        """Run one generation within the limits: a free slot (else 503) and a deadline (else 504). A generation
        past its deadline keeps its slot until it ends, so abandoned work still counts against the limit."""
        limits = self.policy.limits
        if not self._slots.acquire(blocking=False):
            raise RequestError(503, f"the server is busy ({limits.max_concurrent} requests in progress); retry",
                               headers={"Retry-After": "1"})
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                outcome["completion"] = lm(messages, **overrides)
            except BaseException as e:  # noqa: BLE001 - handed to the request's thread
                outcome["error"] = e
            finally:
                self._slots.release()
                done.set()

        threading.Thread(target=work, name="cotune-server-generate", daemon=True).start()
        if not done.wait(limits.request_timeout):
            raise RequestError(504, f"the generation took longer than the server's limit of {limits.request_timeout:g} s")
        error = outcome.get("error")
        if isinstance(error, ConfigError):  # a value the backend refuses (e.g. max_tokens over its limit)
            raise RequestError(400, str(error)) from None
        if error is not None:
            raise error
        return outcome["completion"]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            full = len(self._open) >= self.policy.limits.max_connections
            if not full:
                self._open.add(request)
        if full:  # answered here, without a thread: a flood of connections cannot start a thread each
            refuse_connection(request, self.policy.limits.max_connections)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End idle keep-alive connections, whose threads would otherwise wait for a next request."""
        with self._open_lock:
            open_now = list(self._open)
        for sock in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def build_server(
    lm: LM,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    model_name: str | None = None,
    adapters: Mapping[str, str] | None = None,
    events: EventSink | None = None,
    api_key: str | None = None,
    allowed_origins: Iterable[str] = (),
    limits: ServerLimits | None = None,
    runtime_lora: bool = False,
) -> _Server:
    """Bind a server (not yet serving). See `serve` for the arguments.

    Raises:
        ConfigError: an adapter name that clashes with the model name, a backend that cannot load adapters,
            or a non-loopback ``host`` without an API key.
        OSError: the port is taken.
    """
    policy = ServerPolicy.create(host, api_key=api_key, allowed_origins=allowed_origins, limits=limits)
    models = ServedModels(lm, model_name or lm.model, adapters, runtime_lora=runtime_lora)
    return _Server((host, port), models, events, policy)


def _bind(server: _Server) -> str:
    """What the socket is bound to, as given: "0.0.0.0:8000" means every interface."""
    host, port = server.server_address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _url(server: _Server) -> str:
    host, port = server.server_address[:2]
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1" if host != "::" else "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/v1"


def serve(
    lm: LM,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    model_name: str | None = None,
    adapters: Mapping[str, str] | None = None,
    events: EventSink | None = None,
    api_key: str | None = None,
    allowed_origins: Iterable[str] = (),
    limits: ServerLimits | None = None,
    runtime_lora: bool = False,
) -> None:
    """Serve ``lm`` over OpenAI's chat-completions API until interrupted (Ctrl-C).

    Args:
        lm: any cotune LM; it keeps its own cache setting (pass one built with ``cache=False`` to always
            run the model).
        host: the address to bind; the default answers only this machine.
        port: the port to bind; 0 picks a free one.
        model_name: the name clients send as ``model``; defaults to ``lm.model``.
        adapters: adapter name -> adapter path; requests naming an adapter run on ``lm.with_adapter(path)``.
        events: sink for ``server.start``, ``server.request`` (one per request) and ``server.stop`` events.
        api_key: the key every request must send (``Authorization: Bearer KEY``); None reads
            ``$COTUNE_SERVER_API_KEY``. Required for a host that is not loopback.
        allowed_origins: web origins (``https://app.example``) whose pages may call the server; none by default.
        limits: body size, tokens, concurrency and time limits (`ServerLimits`).
        runtime_lora: also answer vLLM's ``POST /v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``, so
            clients can load adapter folders *from this machine's disk* while it serves; off by default,
            as vLLM keeps it off without ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``.
    """
    server = build_server(lm, host, port, model_name=model_name, adapters=adapters, events=events,
                          api_key=api_key, allowed_origins=allowed_origins, limits=limits, runtime_lora=runtime_lora)
    emit(events, "server.start", url=_url(server), bind=_bind(server), models=list(server.models),
         api_key=bool(server.policy.api_key))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.close_connections()
        emit(events, "server.stop", url=_url(server))


class ServerHandle:
    """A server running in a background thread. ``url`` is the base URL for OpenAI clients (ends in /v1)."""

    def __init__(self, server: _Server):
        self._server = server
        self.host, self.port = server.server_address[:2]
        self.url = _url(server)
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


def start_server(
    lm: LM,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    model_name: str | None = None,
    adapters: Mapping[str, str] | None = None,
    events: EventSink | None = None,
    api_key: str | None = None,
    allowed_origins: Iterable[str] = (),
    limits: ServerLimits | None = None,
    runtime_lora: bool = False,
) -> ServerHandle:
    """Like `serve`, but in a background thread; returns a handle with ``url``, ``port`` and ``close()``."""
    server = build_server(lm, host, port, model_name=model_name, adapters=adapters, events=events,
                          api_key=api_key, allowed_origins=allowed_origins, limits=limits, runtime_lora=runtime_lora)
    handle = ServerHandle(server)
    emit(events, "server.start", url=handle.url, bind=_bind(server), models=handle.models,
         api_key=bool(server.policy.api_key))
    return handle
