"""The central service's logs: one JSON object a line (or plain text), and one access line
per request, each with a request id.

A request id is the caller's ``X-Request-ID`` when it is a short token (letters, digits,
``.``, ``_``, ``-``; a reverse proxy's ``$request_id``), else a new random one; it is sent
back in ``X-Request-ID`` and carried by every line logged while the request runs, in this
process's threads too (a context variable).

The access line (logger ``central.access``, at INFO whatever the service's level) says
``method``, ``path`` (without the query), ``status``, ``ms``, ``request_id`` and, once the
request's signature has authenticated it, ``terminal``. Never bodies, query strings,
headers, keys, tokens or card data: a query string can name a sale's reference and a body
holds card tokens.

``central serve`` logs JSON by default (``--log-format`` / ``LOCALPAY_LOG_FORMAT``:
``json`` or ``text``).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

LOG_FORMATS = ("json", "text")
REQUEST_ID_HEADER = "x-request-id"
_ID_OK = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: the fields a line may carry besides the message (given with ``extra=``)
FIELDS = ("request_id", "method", "path", "status", "ms", "terminal", "reason", "seq",
          "event", "client")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
access_log = logging.getLogger("central.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts`` (UTC, ms), ``level``, ``logger``, ``msg``, the
    request id when there is one, and the known extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage()}
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            doc["request_id"] = rid
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None and name != "request_id":
                doc[name] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The usual text line, with the request id and the extra fields appended."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {n: getattr(record, n) for n in FIELDS
                 if getattr(record, n, None) is not None and n != "request_id"}
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            extra = {"request_id": rid, **extra}
        return line + "".join(f" {k}={v}" for k, v in extra.items())


_FORMAT = {"json": JsonFormatter, "text": TextFormatter}
_configured: list[str] = []


def configure_logging(fmt: str, level: int | None = None) -> None:
    """Send every log line to stderr in ``fmt`` (``json`` or ``text``), replacing the root
    logger's handlers; uvicorn's own loggers are pointed at the same handler when the app
    starts (uvicorn sets them up after this runs)."""
    if fmt not in _FORMAT:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FORMAT[fmt]())
    root = logging.getLogger()
    root.handlers = [handler]
    if level is not None:
        root.setLevel(level)
    # every request's line, whatever the service's level (unconfigured, it stays quiet)
    access_log.setLevel(logging.INFO)
    _configured[:] = [fmt]


def adopt_uvicorn_loggers() -> None:
    """Let uvicorn's loggers write through the root handler (so in JSON too), once
    :func:`configure_logging` has run in this process."""
    if not _configured:
        return
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True


def new_request_id(given: str) -> str:
    return given if _ID_OK.fullmatch(given) else secrets.token_hex(8)


def set_terminal(scope: Scope, terminal_id: str) -> None:
    """Note that the request was authenticated as ``terminal_id`` (for its access line)."""
    scope.setdefault("state", {})["terminal"] = terminal_id


class AccessLog:
    """ASGI middleware: the request id, and one access line per HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        for name, value in scope.get("headers", []):
            if name == REQUEST_ID_HEADER.encode():
                given = value.decode("latin-1")
                break
        rid = new_request_id(given)
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), rid.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            ms = round((time.perf_counter() - started) * 1000, 1)
            terminal = scope.get("state", {}).get("terminal")
            access_log.info("%s %s %d", scope.get("method", ""), scope.get("path", ""),
                            status, extra={"event": "access", "method": scope.get("method"),
                                           "path": scope.get("path"), "status": status,
                                           "ms": ms, "terminal": terminal,
                                           "request_id": rid})
            request_id.reset(token)
