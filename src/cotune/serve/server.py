"""An OpenAI-compatible HTTP server over any cotune LM (stdlib only).

Endpoints: ``POST /v1/chat/completions`` (non-streaming, n=1), ``GET /v1/models``, ``GET /health``.
Each request runs ``lm(messages, **overrides)`` in its own thread, so a backend that coalesces
concurrent calls (the transformers backend does) turns concurrent HTTP requests into batched generation.
Adapters are served by name, like vLLM's ``--lora-modules``: a request whose ``model`` is an adapter name
runs on ``lm.with_adapter(path)``. With ``runtime_lora=True`` the server also has vLLM's runtime LoRA API
(``POST /v1/load_lora_adapter``, ``POST /v1/unload_lora_adapter``; see `cotune.serve.models`).

The request body checks live in `cotune.serve.protocol`, the served models in
`cotune.serve.models`, access rules and limits in `cotune.serve.policy`, what a request may cost
before it reaches the model in `cotune.serve.admission`, running it in `cotune.serve.runner`, and
connection deadlines in `cotune.serve.connections`; this module is the HTTP.

Example:
    >>> from cotune.lm.fake import FakeLM
    >>> from cotune.lm.remote.openai_compat import OpenAICompatible
    >>> with start_server(FakeLM(["Answer: 4"]), model_name="toy") as server:
    ...     client = OpenAICompatible("toy", base_url=server.url, cache=False)
    ...     client([{"role": "user", "content": "2+2?"}]).text
    'Answer: 4'
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cotune.events import EventSink, emit
from cotune.lm.base import LM
from cotune.serve.admission import Admission
from cotune.serve.connections import ConnectionTable
from cotune.serve.handle import ServerHandle, bind_of, url_of
from cotune.serve.models import LORA_ENDPOINTS, ServedModels
from cotune.serve.policy import ServerLimits, ServerPolicy
from cotune.serve.protocol import (  # noqa: F401 - response_constraint is public here too
    RequestError,
    check_max_tokens,
    completion_body,
    internal_error,
    parse_request,
    read_body,
    refuse_connection,
    response_constraint,
)
from cotune.serve.runner import Runner

logger = logging.getLogger("cotune.server")

MAX_BODY_BYTES = ServerLimits.max_body_bytes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so pooled clients reuse connections
    server: _Server
    timeout = 120  # seconds an idle keep-alive connection may hold a thread
    # Headers and body go out in two writes; with Nagle's algorithm on, the second waits for the client's
    # delayed ACK (~40 ms per request on Linux).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        self.timeout = self.server.policy.limits.read_timeout  # each read; the whole request has a deadline too
        super().setup()

    def handle_one_request(self) -> None:
        self.server.connections.waiting(self.connection)  # the next head has head_timeout seconds to arrive
        super().handle_one_request()

    def _admit(self, t0: float) -> bool:
        """After the head: the access checks, then the body's deadline. False when the request is done with:
        refused (and the connection closed, so a caller without access holds no thread), or already cut."""
        refusal = self.server.policy.check(self.headers, self.command)
        if not self.server.connections.reading_body(self.connection, trusted=refusal is None):
            self.close_connection = True  # its head came too late, or its place went to a new connection
            return False
        if refusal is not None:
            self.close_connection = True
            self._answer(refusal.status, RequestError(refusal.status, refusal.message).body(), t0, refusal.headers)
            return False
        return True

    def do_GET(self) -> None:
        t0 = time.perf_counter()
        path = self.path.split("?", 1)[0].rstrip("/")
        if not self._admit(t0):
            return
        self.server.connections.busy(self.connection)
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
        if not self._admit(t0):
            return
        headers: dict[str, str] = {}
        body: dict[str, Any] | str
        try:
            try:
                raw = read_body(
                    self.headers,
                    self.rfile,
                    self.server.policy.limits.max_body_bytes,
                    late=lambda: self.server.connections.expired(self.connection),
                    read_timeout=self.server.policy.limits.read_timeout,
                )
            except RequestError:
                self.close_connection = True  # where the next request would start is unknown
                raise
            self.server.connections.busy(self.connection)
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
                name, lm, messages, overrides = parse_request(
                    request, self.server.models.snapshot(), self.server.models.default
                )
                check_max_tokens(overrides, self.server.policy.token_cap(lm))
                self.server.admission.check(lm, messages, overrides)  # before it takes a slot or the model's time
                lm = self.server.for_request(name, overrides)
                completion = self.server.runner.generate(lm, messages, overrides)
                status, body = 200, completion_body(name, completion)
        except RequestError as e:
            status, body = e.status, e.body()
            headers = e.headers
        except Exception:  # the model failed: answer 500 so clients retry, and keep serving
            status, body = 500, internal_error(logger, f"POST {path}").body()
        self._answer(status, body, t0, headers, model=name, completion=completion)

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
            if self.close_connection:  # tell the client not to reuse it
                self.send_header("Connection", "close")
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
        limits = policy.limits
        self.connections = ConnectionTable(limits.max_connections, limits.head_timeout, limits.read_timeout)
        # socketserver's listen backlog is 5: under a burst of connections the kernel drops the rest, and their
        # clients (one with the key among them) retry after seconds
        self.request_queue_size = max(64, limits.max_connections)
        self.admission = Admission(limits, models.base)
        self.runner = Runner(self.admission)
        super().__init__(address, _Handler)

    def for_request(self, name: str, overrides: Mapping[str, Any]) -> LM:
        """The model for a request: cached only when its answer is determined (greedy, or a seeded sample);
        a seedless sample must not be the same "sample" for every client."""
        sampled = overrides.get("temperature", self.models.base.config.temperature) > 0
        return self.models.pick(name, cached=not sampled or "rollout_id" in overrides)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.admit(request):  # answered without a thread: a flood cannot start one each
            refuse_connection(request, self.policy.limits.max_connections)
            super().shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.connections.remove(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints the traceback to stderr; a connection that broke mid-request is routine here.
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)

    def server_close(self) -> None:
        self.connections.close()
        super().server_close()

    def close_connections(self) -> None:
        """End idle keep-alive connections, whose threads would otherwise wait for a next request."""
        for sock in self.connections.sockets():
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
    server = build_server(
        lm,
        host,
        port,
        model_name=model_name,
        adapters=adapters,
        events=events,
        api_key=api_key,
        allowed_origins=allowed_origins,
        limits=limits,
        runtime_lora=runtime_lora,
    )
    emit(
        events,
        "server.start",
        url=url_of(server),
        bind=bind_of(server),
        models=list(server.models),
        api_key=bool(server.policy.api_key),
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.close_connections()
        emit(events, "server.stop", url=url_of(server))


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
    server = build_server(
        lm,
        host,
        port,
        model_name=model_name,
        adapters=adapters,
        events=events,
        api_key=api_key,
        allowed_origins=allowed_origins,
        limits=limits,
        runtime_lora=runtime_lora,
    )
    handle = ServerHandle(server)
    emit(
        events,
        "server.start",
        url=handle.url,
        bind=bind_of(server),
        models=handle.models,
        api_key=bool(server.policy.api_key),
    )
    return handle
