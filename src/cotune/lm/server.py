"""An OpenAI-compatible HTTP server over any cotune LM (stdlib only).

Endpoints: ``POST /v1/chat/completions`` (non-streaming, n=1), ``GET /v1/models``, ``GET /health``.
Each request runs ``lm(messages, **overrides)`` in its own thread, so a backend that coalesces
concurrent calls (the transformers backend does) turns concurrent HTTP requests into batched generation.
Adapters are served by name, like vLLM's ``--lora-modules``: a request whose ``model`` is an adapter name
runs on ``lm.with_adapter(path)``.

Example:
    >>> from cotune.lm.fake import FakeLM
    >>> from cotune.lm.openai_compat import OpenAICompatible
    >>> with start_server(FakeLM(["Answer: 4"]), model_name="toy") as server:
    ...     client = OpenAICompatible("toy", base_url=server.url, cache=False)
    ...     client([{"role": "user", "content": "2+2?"}]).text
    'Answer: 4'
"""

from __future__ import annotations

import copy
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cotune.errors import ConfigError
from cotune.events import EventSink, emit
from cotune.lm.base import LM
from cotune.lm.server_policy import Refusal, ServerLimits, ServerPolicy
from cotune.program.grammar import Constraint

logger = logging.getLogger("cotune.server")

MAX_BODY_BYTES = ServerLimits.max_body_bytes
_DIGITS = re.compile(r"[0-9]{1,12}")  # ASCII only: str.isdigit() accepts "²", which int() refuses
ROLES = ("system", "user", "assistant")


class RequestError(Exception):
    """A request the server refuses; becomes an OpenAI-shaped JSON error."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = dict(headers or {})
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def parse_request(body: Any, models: Mapping[str, LM], default: str) -> tuple[str, LM, list[dict[str, str]], dict]:
    """Check a chat-completions body; returns (model name, LM, messages, generation overrides).

    Only fields the request sets are passed on, so the LM's own defaults apply to the rest. Fields that
    cotune has no use for (``user``, ``logit_bias``, ...) are ignored, as most servers do.

    Raises:
        RequestError: 400 naming the bad field, or 404 for a model that is not served.
    """
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    name = body.get("model", default)
    if not isinstance(name, str):
        raise RequestError(400, f"'model' must be a string, got {name!r}", param="model")
    if name not in models:
        raise RequestError(
            404,
            f"model {name!r} is not served here; choose one of: {', '.join(models)}",
            param="model",
            code="model_not_found",
        )
    if body.get("stream"):
        raise RequestError(400, "'stream' is not supported; send stream=false", param="stream")
    n = body.get("n", 1)
    if n is not None and n != 1:
        raise RequestError(400, f"'n' must be 1, got {n!r}", param="n")
    messages = _messages(body.get("messages"))
    overrides: dict[str, Any] = {}
    if (t := body.get("temperature")) is not None:
        overrides["temperature"] = _number(t, "temperature", low=0.0, high=2.0)
    if (p := body.get("top_p")) is not None:
        overrides["top_p"] = _number(p, "top_p", low=0.0, high=1.0, open_low=True)
    if (p := body.get("min_p")) is not None:
        overrides["min_p"] = _number(p, "min_p", low=0.0, high=0.999)
    for field in ("max_tokens", "max_completion_tokens"):  # the newer name wins when both are sent
        if (m := body.get(field)) is not None:
            if not _is_int(m) or m < 1:
                raise RequestError(400, f"'{field}' must be an integer >= 1, got {m!r}", param=field)
            overrides["max_tokens"] = m
    if (stop := body.get("stop")) is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise RequestError(
                400, f"'stop' must be a string or a list of non-empty strings, got {stop!r}", param="stop"
            )
        if stop:
            overrides["stop"] = tuple(stop)
    if (seed := body.get("seed")) is not None:
        if not _is_int(seed):
            raise RequestError(400, f"'seed' must be an integer, got {seed!r}", param="seed")
        lm = models[name]
        # cotune's sampling identity is the rollout id (part of the cache key); a greedy request has one
        # answer whatever the seed, so the seed only counts when sampling.
        if overrides.get("temperature", lm.config.temperature) > 0:
            overrides["rollout_id"] = seed
    if (fmt := body.get("response_format")) is not None:
        rule = response_constraint(fmt, models[name])
        if rule is not None:
            overrides["constraint"] = rule
    return name, models[name], messages, overrides


def response_constraint(fmt: Any, lm: LM) -> Constraint | None:
    """The `Constraint` of an OpenAI ``response_format``: a JSON schema (``{"type": "json_schema",
    "json_schema": {"schema": {...}}}``) or any JSON object (``{"type": "json_object"}``); None for text.

    Raises:
        RequestError: 400 for a malformed format, or one this model cannot constrain to.
    """
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise RequestError(
            400, "'response_format' must be {\"type\": \"text\" | \"json_object\" | \"json_schema\", ...}",
            param="response_format",
        )  # fmt: skip
    if fmt["type"] == "text":
        return None
    if getattr(lm, "structured_output", None) != "grammar":
        raise RequestError(400, f"model {lm.model!r} cannot constrain its output here", param="response_format")
    schema: Any = {"type": "object"}
    if fmt["type"] == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise RequestError(
                400, "'response_format.json_schema.schema' must be a JSON schema object", param="response_format"
            )
    return Constraint(grammar=(), json_schema=json.dumps(schema, sort_keys=True))


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RequestError(400, "'messages' must be a non-empty list of {role, content} objects", param="messages")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(400, f"'{where}' must be an object, got {m!r}", param=where)
        role = m.get("role")
        if role not in ROLES:
            raise RequestError(
                400, f"'{where}.role' must be one of: {', '.join(ROLES)}; got {role!r}", param=f"{where}.role"
            )
        content = m.get("content")
        if isinstance(content, list):  # OpenAI's content parts; only text parts mean anything here
            if not all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
            ):
                raise RequestError(400, f"'{where}.content' parts must all be text parts", param=f"{where}.content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise RequestError(400, f"'{where}.content' must be a string, got {content!r}", param=f"{where}.content")
        out.append({"role": role, "content": content})
    return out


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(x: Any, field: str, *, low: float, high: float, open_low: bool = False) -> float:
    ok = isinstance(x, int | float) and not isinstance(x, bool) and (x > low if open_low else x >= low) and x <= high
    if not ok:
        bounds = f"{'(' if open_low else '['}{low:g}, {high:g}]"
        raise RequestError(400, f"'{field}' must be a number in {bounds}, got {x!r}", param=field)
    return float(x)


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
            created = int(self.server.started)
            data = [{"id": n, "object": "model", "created": created, "owned_by": "cotune"} for n in self.server.models]
            status, body = 200, {"object": "list", "data": data}
        else:
            status, body = 404, RequestError(404, self._no_endpoint(path)).body()
        self._send(status, body)
        self._log(status, t0)

    def do_POST(self) -> None:
        t0 = time.perf_counter()
        path = self.path.split("?", 1)[0].rstrip("/")
        name, completion = None, None
        if (refusal := self.server.policy.check(self.headers, "POST")) is not None:
            self.close_connection = True  # the body was not read
            self._refuse(refusal, t0)
            return
        headers: dict[str, str] = {}
        try:
            raw = self._body()
            if path != "/v1/chat/completions":
                raise RequestError(404, self._no_endpoint(path))
            try:
                request = json.loads(raw)
            except (ValueError, RecursionError) as e:  # "[" * 100000 nests past Python's recursion limit
                raise RequestError(400, f"the request body is not valid JSON: {str(e)[:200]}") from None
            name, lm, messages, overrides = parse_request(request, self.server.models, self.server.default)
            check_max_tokens(overrides, self.server.policy.token_cap(lm))
            lm = self.server.for_request(name, overrides)
            completion = self.server.generate(lm, messages, overrides)
            status, body = 200, _completion_body(name, completion)
        except RequestError as e:
            status, body = e.status, e.body()
            headers = e.headers
        except Exception as e:  # the model failed: answer 500 so clients retry, and keep serving
            logger.exception("request to %s failed", path)
            status, body = 500, RequestError(500, f"{type(e).__name__}: {e}").body()
        self._send(status, body, headers)
        self._log(status, t0, model=name, completion=completion)

    def _refuse(self, refusal: Refusal, t0: float) -> None:
        self._send(refusal.status, RequestError(refusal.status, refusal.message).body(), refusal.headers)
        self._log(refusal.status, t0)

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
        return (
            f"no endpoint {self.command} {path}; this server has POST /v1/chat/completions, GET /v1/models, GET /health"
        )

    def _send(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        blob = json.dumps(body, ensure_ascii=False).encode()
        try:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob)
        except OSError:  # the client went away (or the server is closing); nothing left to tell it
            self.close_connection = True

    def _log(self, status: int, t0: float, *, model: str | None = None, completion: Any = None) -> None:
        fields: dict[str, Any] = {"method": self.command, "path": self.path, "status": status, "model": model}
        fields["seconds"] = round(time.perf_counter() - t0, 4)
        if completion is not None:
            fields.update(prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens)
        emit(self.server.events, "server.request", **fields)

    def log_message(self, format: str, *args: Any) -> None:
        # http.server writes to stderr by default; library code reports through logging instead.
        logger.debug("%s " + format, self.address_string(), *args)


def _completion_body(name: str, completion: Any) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "finish_reason": completion.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        },
    }


def check_max_tokens(overrides: dict[str, Any], cap: int) -> None:
    """Refuse a request asking for more tokens than ``cap`` (the model's context or the server's limit).

    Raises:
        RequestError: 400 naming the field and the limit.
    """
    asked = overrides.get("max_tokens")
    if asked is not None and asked > cap:
        raise RequestError(400, f"'max_tokens' must be at most {cap} on this server, got {asked}", param="max_tokens")


def _uncached(lm: LM) -> LM:
    """The same model (weights, batcher, adapter) with its request cache bypassed."""
    if lm.cache is None:
        return lm
    new = copy.copy(lm)  # shallow: shares the loaded model; LM.__deepcopy__ keeps deep copies away too
    new.cache = None
    return new


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a request stuck in the model must not keep the process alive

    def __init__(
        self, address: tuple[str, int], models: dict[str, LM], default: str, events: EventSink | None,
        policy: ServerPolicy,
    ):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.models, self.default, self.events, self.policy = models, default, events, policy
        self.uncached = {name: _uncached(lm) for name, lm in models.items()}
        self.started = time.time()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(policy.limits.max_concurrent)
        super().__init__(address, _Handler)

    def for_request(self, name: str, overrides: Mapping[str, Any]) -> LM:
        """The model for a request: cached only when its answer is determined (greedy, or a seeded sample);
        a seedless sample must not be the same "sample" for every client."""
        lm = self.models[name]
        sampled = overrides.get("temperature", lm.config.temperature) > 0
        return self.uncached[name] if sampled and "rollout_id" not in overrides else lm

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
            _refuse_connection(request, self.policy.limits.max_connections)
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


def _refuse_connection(sock: socket.socket, limit: int) -> None:
    message = f"too many open connections (limit {limit}); retry"
    blob = json.dumps(RequestError(503, message).body()).encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(blob)}\r\n"
            "Retry-After: 1\r\nConnection: close\r\n\r\n").encode()
    try:
        sock.settimeout(1.0)
        sock.sendall(head + blob)
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
) -> _Server:
    """Bind a server (not yet serving). See `serve` for the arguments.

    Raises:
        ConfigError: an adapter name that clashes with the model name, a backend that cannot load adapters,
            or a non-loopback ``host`` without an API key.
        OSError: the port is taken.
    """
    policy = ServerPolicy.create(host, api_key=api_key, allowed_origins=allowed_origins, limits=limits)
    name = model_name or lm.model
    models: dict[str, LM] = {name: lm}
    for adapter_name, path in (adapters or {}).items():
        if adapter_name in models:
            raise ConfigError(f"adapter name {adapter_name!r} is already the served model's name; pick another")
        # Built up front so a backend without adapter support (or a bad path) fails at start, not per request.
        models[adapter_name] = lm.with_adapter(path)
    return _Server((host, port), models, name, events, policy)


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
    """
    server = build_server(lm, host, port, model_name=model_name, adapters=adapters, events=events,
                          api_key=api_key, allowed_origins=allowed_origins, limits=limits)
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
        self.models = list(server.models)
        self._closed = False
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.name = f"cotune-server-{self.port}"
        self._thread.start()

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
) -> ServerHandle:
    """Like `serve`, but in a background thread; returns a handle with ``url``, ``port`` and ``close()``."""
    server = build_server(lm, host, port, model_name=model_name, adapters=adapters, events=events,
                          api_key=api_key, allowed_origins=allowed_origins, limits=limits)
    handle = ServerHandle(server)
    emit(events, "server.start", url=handle.url, bind=_bind(server), models=handle.models,
         api_key=bool(server.policy.api_key))
    return handle
