"""What the central service's HTTP front end allows a client, whoever it is.

The API is reached by terminals on the public internet, and some routes (enrolment, partners'
top-ups and payments) before any terminal signature is checked, so every limit here holds
*before* authentication:

============================  =========  ==================================================
limit                         default    where it is enforced
============================  =========  ==================================================
request line and headers      10 s       :class:`LimitedH11Protocol` (the app never sees
                                         a request whose headers are incomplete); 408
request body                  30 s       :class:`BodyLimits` (an ASGI middleware); 408
idle keep-alive connection    5 s        uvicorn's ``timeout_keep_alive``
open connections              400        :class:`LimitedH11Protocol` refuses one more
                                         at once, uvicorn's ``limit_concurrency`` answers
                                         503 to requests beyond it
body size                     8 MiB      :class:`BodyLimits`, from ``Content-Length`` and
                                         again while the body streams in; 413
JSON nesting                  32 deep    :class:`BodyLimits`; 400 ``malformed``
============================  =========  ==================================================

A refusal from here is unsigned JSON ``{"error", "kind", "message", "seq"}``: it is answered
before anything is known about the caller, and signing answers for whoever asks would let a
stranger make the service sign at will.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from localpay.errors import ConfigError, SyncAuthError, SyncProtocolError

#: the largest integer the store's columns hold (SQLite INTEGER, PostgreSQL BIGINT)
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class HttpLimits:
    """The front end's limits (see the module docstring for why each default)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: int = 5
    max_connections: int = 400
    max_body_bytes: int = 8 * 1024 * 1024
    max_json_depth: int = 32

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s", "max_connections",
                     "max_body_bytes", "max_json_depth"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be more than 0, not {getattr(self, name)}")


def refusal_body(error: str, kind: str, message: str) -> bytes:
    return json.dumps({"error": error, "kind": kind, "message": message, "seq": None},
                      separators=(",", ":")).encode()


def _raw_answer(status: int, reason: str, body: bytes) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, for a request the app never saw."""
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's line and headers, and a cap
    on open connections. Set :attr:`limits` on a subclass (:func:`protocol_class`)."""

    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        _nagle_off(transport)
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            # each connection held is a descriptor: refuse it now rather than hold it
            transport.write(_raw_answer(503, "Service Unavailable", refusal_body(
                "busy", "too_many_connections", "too many open connections; try again")))
            transport.close()
            return
        # a client that connects and says nothing is a request whose headers never come
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # the first bytes of the next request on this connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s,
                                                  self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.our_state is h11.IDLE:
            self.transport.write(_raw_answer(408, "Request Timeout", refusal_body(
                "timeout", "headers_timeout",
                f"the request's headers did not arrive within "
                f"{self.limits.header_timeout_s:g} s")))
        self.transport.close()


def _nagle_off(transport: asyncio.BaseTransport) -> None:
    """Send each answer as soon as it is written. ``central serve --workers N`` hands the
    workers a listening socket uvicorn made with protocol number 0, and asyncio turns Nagle's
    algorithm off only on sockets that say TCP: on those connections an answer's body, written
    after its headers, waited for the client's delayed ACK, about 40 ms a request."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def protocol_class(limits: HttpLimits) -> type[LimitedH11Protocol]:
    """The protocol class to give uvicorn (``http=``) for these limits."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,), {"limits": limits})


# a JSON string, escapes included: what it holds is not structure (written as runs of plain
# bytes between escapes: one alternation a byte took 10 ms of the event loop a batch)
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_INNERMOST = re.compile(rb"\[\]|\{\}")
# with no backslash in the body a string is the text between two quotes, so the body can
# first shrink to its quotes and brackets (a batch's body is mostly base64 text): the
# regular expression then reads a few kilobytes instead of the whole body
_NOT_QUOTES_OR_BRACKETS = bytes(b for b in range(256) if b not in b'[]{}"')
_PLAIN_STRINGS = re.compile(rb'"[^"]*"')


def json_too_deep(body: bytes, limit: int) -> bool:
    """Whether ``body`` nests arrays and objects deeper than ``limit``, found without parsing
    it (:func:`json.loads` recurses once a level and fails with ``RecursionError`` somewhere
    near 1,000). Each pass takes away the innermost pairs; text that is not well nested is
    never valid JSON, so calling it deep refuses nothing a parser would take."""
    if b"\\" in body:
        brackets = _STRINGS.sub(b"", body).translate(None, _NOT_BRACKETS)
    else:
        # the same result: an unpaired last quote is dropped as the other way drops it
        brackets = _PLAIN_STRINGS.sub(b"", body.translate(None, _NOT_QUOTES_OR_BRACKETS)
                                      ).translate(None, b'"')
    for _ in range(limit):
        if not brackets:
            return False
        # one level a pass: both kinds at once, or "{[]}" would lose two
        brackets = _INNERMOST.sub(b"", brackets)
    return bool(brackets)


def check_store_range(name: str, value: int) -> int:
    """``value`` if the store's 64-bit columns hold it, else :class:`SyncProtocolError`."""
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise SyncProtocolError(f"{name} is out of range: at most {INT64_MAX}")
    return value


def check_entry_ranges(entries: Iterable[Any]) -> None:
    """Refuse a batch whose entries hold numbers the store cannot (the wire's unsigned fields
    go up to 2^64 - 1, the store's columns to 2^63 - 1)."""
    low = -INT64_MAX - 1
    for entry in entries:
        # one test an entry (every entry of every batch passes here), the named one on a fault
        if not (low <= entry.seq <= INT64_MAX and low <= entry.ref_seq <= INT64_MAX
                and low <= entry.mono <= INT64_MAX and low <= entry.wall_ms <= INT64_MAX
                and low <= entry.amount <= INT64_MAX):
            for name in ("seq", "ref_seq", "mono", "wall_ms", "amount"):
                check_store_range(f"entry {name}", getattr(entry, name))


class BodyLimits:
    """ASGI middleware: reads each request's whole body under :class:`HttpLimits` before the
    app sees the request, then hands it on. Bodies here are a few kilobytes to a few megabytes
    and every route reads its body whole anyway, so nothing is lost by reading it first."""

    def __init__(self, app: Any, limits: HttpLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits
        too_large = (f"the request body is larger than {limits.max_body_bytes} bytes, "
                     f"the most this service reads")
        declared = dict(scope["headers"]).get(b"content-length")
        # h11 has already refused a Content-Length that is not a number
        if declared is not None and int(declared) > limits.max_body_bytes:
            await _refuse(send, 413, "too_large", "body_too_large", too_large)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.body_timeout_s
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                await _refuse(send, 408, "timeout", "body_timeout",
                              f"the request body did not arrive within "
                              f"{limits.body_timeout_s:g} s")
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limits.max_body_bytes:
                await _refuse(send, 413, "too_large", "body_too_large", too_large)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        del chunks
        if body and json_too_deep(body, limits.max_json_depth):
            await _refuse(send, 400, "malformed", "malformed_request",
                          f"the body nests deeper than {limits.max_json_depth} levels")
            return
        handed = False

        async def replay() -> dict[str, Any]:
            nonlocal handed
            if not handed:
                handed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only the client's disconnect

        await self.app(scope, replay, send)


async def _refuse(send: Any, status: int, error: str, kind: str, message: str) -> None:
    body = refusal_body(error, kind, message)
    # close: what is left of the body is never read, so this connection cannot carry another
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


#: an error class's name -> the stable code answered as ``kind`` (class names are not part of
#: the API: they change with the code and tell a caller how the service is built)
_KINDS: dict[str, str] = {
    "SyncStaleError": "stale_request",
    "SyncAuthError": "not_authenticated",
    "SyncProtocolError": "malformed_request",
    "ChainMismatchError": "chain_mismatch",
    "ProofError": "proof_failed",
    "SyncUnavailableError": "unavailable",
    "ConfigError": "config_invalid",
    "ParseError": "malformed_request",
    "PartnerAuthError": "partner_refused",
    "TopupInvalidError": "malformed_request",
    "UnknownAccountError": "unknown_account",
    "ReferenceReusedError": "reference_reused",
    "MonthlyLimitError": "over_limit",
    "PaidMismatchError": "paid_mismatch",
    "SubsidyExhaustedError": "subsidy_exhausted",
    "MpmPartnerAuthError": "partner_refused",
    "MpmInvalidError": "malformed_request",
    "MpmExpiredError": "sale_expired",
    "MpmUnknownError": "unknown_sale",
    "MpmAlreadyPaidError": "already_paid",
    "MpmAppReferenceReusedError": "reference_reused",
    "MpmAmountError": "amount_mismatch",
    "MpmFundsError": "insufficient_funds",
    "_Refused": "rate_limited",
}
#: every code ``kind`` may take (the README lists them)
KIND_CODES = frozenset(_KINDS.values()) | {"error", "not_configured", "body_too_large",
                                           "body_timeout", "headers_timeout",
                                           "too_many_connections"}


def kind_of(err: BaseException | str) -> str:
    """The ``kind`` code of an error (or of an error class's name): that of its nearest
    class in the table, else ``error``."""
    names = [err] if isinstance(err, str) else [c.__name__ for c in type(err).__mro__]
    return next((_KINDS[n] for n in names if n in _KINDS), "error")


#: the answer to an unknown terminal and to a bad signature alike: which terminal ids exist
#: is not for a stranger to find out (the log keeps the detail)
NOT_AUTHENTICATED = "request refused: unknown terminal or bad signature"


def public_message(err: Exception) -> str:
    """What an answer says of ``err``: its own words, except for an unknown terminal and a
    bad signature (:data:`NOT_AUTHENTICATED`). A stale or replayed request keeps its words:
    a terminal's clock recovery reads them (``sync.client``)."""
    text = str(err)
    if isinstance(err, SyncAuthError) and text.startswith(("unknown terminal",
                                                           "request signature of")):
        return NOT_AUTHENTICATED
    return text
