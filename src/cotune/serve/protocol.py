"""The chat-completions request and reply of `cotune serve`: checking a request body, shaping a reply.

Errors are OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``) and name the bad field.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from cotune.lm.base import LM
from cotune.lm.constraint import Constraint

ROLES = ("system", "user", "assistant")
_DIGITS = re.compile(r"[0-9]{1,12}")  # ASCII only: str.isdigit() accepts "²", which int() refuses


class RequestError(Exception):
    """A request the server refuses; becomes an OpenAI-shaped JSON error."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        kind: str | None = None,
    ):
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers, self.kind = dict(headers or {}), kind
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        kind = self.kind or ("invalid_request_error" if self.status < 500 else "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def read_body(headers: Any, rfile: BinaryIO, limit: int, *, late: Callable[[], bool], read_timeout: float) -> bytes:
    """The request body, framed by exactly one Content-Length header.

    Args:
        headers: the request's headers (an ``email.message.Message``: repeated headers are all kept).
        rfile: the connection's input.
        limit: the most bytes accepted.
        late: whether the connection was cut for missing its deadline (the read then ended early).
        read_timeout: that deadline, for the message.

    Raises:
        RequestError: 411 no Content-Length; 400 a malformed or repeated one, a Transfer-Encoding (its framing
            and Content-Length's could disagree: the leftover bytes would be read as a next request), or a body
            that ended early; 413 a body over ``limit``; 408 one that did not arrive in time. After any of them
            the connection must be closed: where the next request starts is unknown.
    """
    lengths = headers.get_all("Content-Length") or []
    if headers.get("Transfer-Encoding") is not None:
        raise RequestError(400, "Transfer-Encoding is not accepted here; send the body with a Content-Length header")
    if not lengths:
        raise RequestError(411, "send the request body with a Content-Length header")
    if len(lengths) > 1:
        raise RequestError(400, f"send one Content-Length header, got {len(lengths)}: {', '.join(lengths)[:80]}")
    length = lengths[0]
    if not _DIGITS.fullmatch(length.strip()):
        raise RequestError(400, f"Content-Length must be a number of bytes, got {length[:40]!r}")
    size = int(length)
    if size > limit:
        raise RequestError(413, f"request body of {size} bytes is over the limit of {limit}")
    try:
        data = rfile.read(size)
    except TimeoutError:  # no byte for read_timeout seconds
        data = None
    if data is None or (len(data) < size and late()):
        raise RequestError(408, f"the request body did not arrive within {read_timeout:g} s")
    if len(data) < size:
        raise RequestError(400, f"the body ended after {len(data)} of the {size} bytes announced")
    return data


def internal_error(logger: logging.Logger, what: str) -> RequestError:
    """The 500 for a failure inside the server: logged with its traceback under an id that the client gets,
    never its text (it can hold paths, parts of prompts, or the model's internals). Call it in an ``except``."""
    ref = uuid.uuid4().hex[:12]
    logger.exception("%s failed (error id %s)", what, ref)
    return RequestError(500, f"the server failed to answer this request (error id {ref}); its log has the details")


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
            400,
            '\'response_format\' must be {"type": "text" | "json_object" | "json_schema", ...}',
            param="response_format",
        )
    if fmt["type"] == "text":
        return None
    if lm.capabilities.structured_output != "grammar":
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


def completion_body(name: str, completion: Any) -> dict[str, Any]:
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


def refuse_connection(sock: socket.socket, limit: int) -> None:
    """Answer 503 on a connection over the limit, without reading it (and without a thread)."""
    message = f"too many open connections (limit {limit}); retry"
    blob = json.dumps(RequestError(503, message).body()).encode()
    head = (
        f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(blob)}\r\n"
        "Retry-After: 1\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        sock.settimeout(1.0)
        sock.sendall(head + blob)
    except OSError:
        pass
