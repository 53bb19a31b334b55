"""The central service's HTTP JSON API (FastAPI on uvicorn).

Every ``/v1`` route is called by a terminal and signed by it (see :mod:`sync.protocol`); every
answer, errors included, is signed by the central key. Errors are ``{"error", "message",
"seq"}`` with 400 (malformed), 401 (unknown terminal, bad signature, stale, replayed),
409 (gap, fork, tampered ledger: ``seq`` is the first bad entry) and 503 (store down).

A terminal is told only what belongs to its municipality (:mod:`central.municipalities`):
its deny list, balances, points and riders, its own config, its merchant's pockets.

Every JSON object answered, errors included, also carries ``time_ms``: the service's clock
(Unix ms) when it answered. It is inside the signed body, so a terminal with no real-time
clock can anchor its own clock on it and sign its next requests with a time the service
accepts (see ``sync.client`` and ``terminal.clock``).

One route is not a terminal's: ``POST /v1/topups`` is called by a partner selling local
currency (the issuing bank, the city's app) with its key, ``Authorization: Bearer <key>``
(:mod:`central.topups`); a terminal's signature opens nothing there. A partner belongs to
one municipality and tops up only its accounts.

``POST /v1/mpm-payments`` is likewise a partner's, the citizen's app paying a till's QR code
with an *app* partner key (:mod:`central.mpm_payments`, its own registry); the till opens
the sale with a signed ``POST /v1/mpm-open`` and waits for its payment with a signed
long-poll ``GET /v1/mpm-payments/<reference>?wait=<s>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from central import mpm_payments, pocket_snapshot
from central.config_audit import record_rejection
from central.enroll import Enroller, answer_mac
from central.incentives import points_delta
from central.municipalities import scope_points
from central.profiles import profiles_delta
from central.service import CentralLog
from central.topups import (
    MonthlyLimitError,
    PaidMismatchError,
    PartnerAuthError,
    ReferenceReusedError,
    SubsidyExhaustedError,
    TopupInvalidError,
    TopupTerms,
    UnknownAccountError,
    authenticate,
    topup,
)
from localpay.errors import (
    ChainMismatchError,
    ConfigError,
    LocalpayError,
    SyncAuthError,
    SyncProtocolError,
    SyncUnavailableError,
)
from sync.protocol import (
    H_NONCE,
    H_SIGNATURE,
    H_TERMINAL,
    H_TIME,
    b64,
    parse_batch,
    request_message,
    response_message,
    unb64,
)

log = logging.getLogger(__name__)

def _status(err: LocalpayError) -> tuple[int, str]:
    if isinstance(err, mpm_payments.MpmUnknownError):
        return 404, "unknown"
    if isinstance(err, mpm_payments.MpmInvalidError):
        return 400, "malformed"
    if isinstance(err, SyncAuthError):
        return 401, "refused"
    if isinstance(err, ChainMismatchError):
        return 409, "chain_mismatch"
    if isinstance(err, SyncUnavailableError):
        return 503, "unavailable"
    if isinstance(err, SyncProtocolError | ConfigError):
        return 400, "malformed"
    return 500, "error"


#: a top-up refusal -> its status and error code; 422: the request is well formed and
#: understood, and what it asks breaks a rule (a limit, the price, the programme's money)
_TOPUP_STATUS: tuple[tuple[type[LocalpayError], int, str], ...] = (
    (PartnerAuthError, 401, "refused"),
    (TopupInvalidError, 400, "malformed"),
    (SyncProtocolError, 400, "malformed"),
    (UnknownAccountError, 404, "unknown_account"),
    (ReferenceReusedError, 409, "reference_reused"),
    (MonthlyLimitError, 422, "over_limit"),
    (PaidMismatchError, 422, "paid_mismatch"),
    (SubsidyExhaustedError, 422, "subsidy_exhausted"),
    (SyncUnavailableError, 503, "unavailable"),
)
_TOPUP_FIELDS: dict[str, type] = {"reference": str, "account": str, "face_value": int,
                                  "paid": int}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        # json.loads would keep the last silently: which amount did the partner mean?
        raise SyncProtocolError(f"a key is given twice: {sorted(keys)}")
    return dict(pairs)


def parse_topup(body: bytes) -> dict[str, Any]:
    """A top-up request's body: exactly ``reference`` and ``account`` (text), ``face_value``
    and ``paid`` (whole numbers, never floats, strings or booleans)."""
    try:
        doc = json.loads(body, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as err:
        raise SyncProtocolError(f"the body is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise SyncProtocolError("the body must be a JSON object")
    unknown = sorted(set(doc) - set(_TOPUP_FIELDS))
    if unknown:
        raise SyncProtocolError(f"unknown keys {', '.join(unknown)} "
                                f"(known: {', '.join(_TOPUP_FIELDS)})")
    for name, kind in _TOPUP_FIELDS.items():
        if name not in doc:
            raise SyncProtocolError(f"{name} is required")
        value = doc[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            what = "text" if kind is str else "a whole number of won"
            raise SyncProtocolError(f"{name} must be {what}, not {json.dumps(value)}")
    return doc


def _bearer(request: Request, missing: LocalpayError) -> str:
    """The key of an ``Authorization: Bearer <key>`` header; ``missing`` when there is none."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise missing
    return key


def create_app(service: CentralLog, *, topup_terms: TopupTerms | None = None) -> FastAPI:
    """The API over one :class:`CentralLog`; ``topup_terms`` opens ``POST /v1/topups``
    (without them it answers 503)."""
    app = FastAPI(title="localpay central", docs_url=None, redoc_url=None)
    signer = service.signer

    def answer(status: int, payload: Any, nonce: str) -> Response:
        if isinstance(payload, dict):
            payload = {**payload, "time_ms": int(time.time() * 1000)}
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        sig = signer.private_key.sign(response_message(nonce, status, body))
        return Response(body, status, {H_SIGNATURE: b64(sig)}, "application/json")

    async def handle(request: Request, work: Any) -> Response:
        nonce = request.headers.get(H_NONCE, "")
        try:
            body = await request.body()
            terminal = request.headers.get(H_TERMINAL, "")
            try:
                time_ms = int(request.headers.get(H_TIME, ""))
            except ValueError:
                raise SyncAuthError(f"request lacks a valid {H_TIME} header") from None
            if not terminal:
                raise SyncAuthError(f"request lacks the {H_TERMINAL} header")
            signature = unb64(request.headers.get(H_SIGNATURE, ""), "request signature")
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            message = request_message(request.method, path, time_ms, nonce, body)
            await run_in_threadpool(service.authenticate, terminal, time_ms, nonce, signature,
                                    message)
            # a coroutine (a long-poll) waits without holding one of the pool's threads
            result = (await work(terminal, body) if inspect.iscoroutinefunction(work)
                      else await run_in_threadpool(work, terminal, body))
            return answer(200, result, nonce)
        except LocalpayError as err:
            status, code = _status(err)
            if status >= 500:
                log.warning("%s %s: %s", request.method, request.url.path, err)
            else:
                log.info("%s %s refused: %s", request.method, request.url.path, err)
            seq = getattr(err, "seq", None)
            return answer(status, {"error": code, "kind": type(err).__name__,
                                   "message": str(err), "seq": seq}, nonce)

    def query_int(request: Request, name: str, default: int | None = None) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            if default is None:
                raise SyncProtocolError(f"query parameter {name!r} is required")
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SyncProtocolError(f"query parameter {name!r} must be a number") from None
        if value < 0:
            raise SyncProtocolError(f"query parameter {name!r} must not be negative")
        return value

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "origin": service.origin}

    @app.post("/v1/batches")
    async def post_batch(request: Request) -> Response:
        def work(terminal: str, body: bytes) -> Any:
            terminal_id, entries = parse_batch(body)
            if terminal_id != terminal:
                raise SyncAuthError(f"terminal {terminal!r} cannot send {terminal_id!r}'s batch")
            return service.ingest(terminal_id, entries).to_json()

        return await handle(request, work)

    @app.get("/v1/checkpoint")
    async def get_checkpoint(request: Request) -> Response:
        size = request.query_params.get("size")
        return await handle(request, lambda t, b: {
            "checkpoint": service.checkpoint(query_int(request, "size") if size else None)})

    @app.get("/v1/consistency")
    async def get_consistency(request: Request) -> Response:
        def work(terminal: str, body: bytes) -> Any:
            m, n = query_int(request, "from"), query_int(request, "to")
            return {"from": m, "to": n,
                    "proof": [b64(p) for p in service.consistency_proof(m, n)]}

        return await handle(request, work)

    @app.get("/v1/deny")
    async def get_deny(request: Request) -> Response:
        return await handle(request, lambda t, b: service.deny_delta(
            query_int(request, "since", 0), terminal=t))

    @app.get("/v1/balances")
    async def get_balances(request: Request) -> Response:
        return await handle(request, lambda t, b: service.balances_delta(
            query_int(request, "since", 0), terminal=t))

    @app.get("/v1/pockets")
    async def get_pockets(request: Request) -> Response:
        # the terminal's merchant and municipality come from the registry, never the request
        return await handle(request, lambda t, b: pocket_snapshot.delta(
            service.store, t, query_int(request, "since", 0)))

    @app.get("/v1/points")
    async def get_points(request: Request) -> Response:
        def work(terminal: str, body: bytes) -> Any:
            # the programme of the terminal's own municipality: its weeks, rules, riders
            municipality = service.terminal_municipality(terminal)
            doc = points_delta(service.store, query_int(request, "since", 0),
                               municipality=municipality)
            # Riders' profile changes go to a terminal that asks for them (riders_since):
            # one that predates them gets the answer it knows, not every profile each time.
            if "riders_since" in request.query_params:
                doc["riders"] = profiles_delta(service.store,
                                               query_int(request, "riders_since"),
                                               municipality=municipality)
            # only the cards the terminal's municipality may see (central.municipalities)
            return scope_points(service.store, terminal, doc)

        return await handle(request, work)

    @app.get("/v1/config")
    async def get_config(request: Request) -> Response:
        return await handle(request, lambda t, b: service.latest_config(t))

    @app.post("/v1/config/rejected")
    async def post_config_rejected(request: Request) -> Response:
        # a terminal's report of a bundle it refused; `central report` lists it
        return await handle(request, lambda t, b: record_rejection(service, t, b))

    enroller = None
    if service.data_dir is not None:
        enroller = Enroller(service, service.data_dir)

    @app.post("/v1/enroll")
    async def post_enroll(request: Request) -> Response:
        # Not signed by a registered terminal (there is none yet): the code is the credential.
        nonce = request.headers.get(H_NONCE, "")
        if enroller is None:
            return answer(404, {"error": "refused", "kind": "SyncAuthError", "seq": None,
                                "message": "this service does not enrol terminals"}, nonce)
        body = await request.body()
        client = request.client.host if request.client else ""
        status, payload, ckey = await run_in_threadpool(enroller.handle, request.headers, body,
                                                        client)
        resp = answer(status, payload, nonce)
        if ckey is not None:
            resp.headers["X-LP-Enroll"] = answer_mac(ckey, nonce, status, bytes(resp.body))
        return resp

    @app.post("/v1/totals")
    async def post_totals(request: Request) -> Response:
        def work(terminal: str, body: bytes) -> Any:
            try:
                doc = json.loads(body)
                day = doc["day"]
                totals = {str(k): (int(v[0]), int(v[1])) for k, v in doc["totals"].items()}
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
                raise SyncProtocolError(f"totals must be {{day, totals}}: {err}") from err
            if not isinstance(day, str) or len(day) != 10:
                raise SyncProtocolError("totals day must be YYYY-MM-DD")
            service.report_totals(terminal, day, totals)
            return {"ok": True}

        return await handle(request, work)

    @app.post("/v1/topups")
    async def post_topup(request: Request) -> Response:
        # Never through handle(): a terminal's signature must not open this route.
        nonce = request.headers.get(H_NONCE, "")
        try:
            key = _bearer(request, PartnerAuthError("a partner key is required: "
                                                     "Authorization: Bearer <key>"))
            # the key first: who is not a partner learns nothing, not even the configuration
            # the key names the partner, the partner its one municipality: it credits only
            # that municipality's accounts, at that municipality's terms
            partner = await run_in_threadpool(authenticate, service.store, key.strip())
            if topup_terms is None:
                return answer(503, {"error": "not_configured", "kind": "ConfigError",
                                    "message": "top-ups are not configured", "seq": None},
                              nonce)
            doc = parse_topup(await request.body())
            done = await run_in_threadpool(
                lambda: topup(service.store, topup_terms, doc["account"], doc["face_value"],
                              doc["reference"], partner=partner.name, paid=doc["paid"],
                              municipality=partner.municipality))
            return answer(200, done.as_json(), nonce)
        except LocalpayError as err:
            status, code = next(((s, c) for kind, s, c in _TOPUP_STATUS
                                 if isinstance(err, kind)), (500, "error"))
            if status >= 500:
                log.warning("POST /v1/topups: %s", err)
            else:
                log.info("POST /v1/topups refused: %s", err)
            return answer(status, {"error": code, "kind": type(err).__name__,
                                   "message": str(err), "seq": None}, nonce)

    mpm_payments.ensure_schema(service.store)

    @app.post("/v1/mpm-open")
    async def post_mpm_open(request: Request) -> Response:
        def work(terminal: str, body: bytes) -> Any:
            doc = _mpm_body(body, _MPM_OPEN_FIELDS)
            return mpm_payments.open_sale(service.store, terminal, doc["reference"],
                                          doc["amount"])

        return await handle(request, work)

    @app.post("/v1/mpm-close")
    async def post_mpm_close(request: Request) -> Response:
        def work(terminal: str, body: bytes) -> Any:
            doc = _mpm_body(body, {"reference": str})
            return mpm_payments.close_sale(service.store, terminal, doc["reference"])

        return await handle(request, work)

    # the long-polls waiting in this process, woken when it takes a payment
    waiting: set[asyncio.Event] = set()
    loops: list[asyncio.AbstractEventLoop] = []

    def wake_waiting() -> None:
        for paid in list(waiting):
            paid.set()

    def wake_all() -> None:  # called from the paying thread
        for loop in loops:
            loop.call_soon_threadsafe(wake_waiting)

    mpm_payments.listen(wake_all)

    @app.get("/v1/mpm-payments/{reference}")
    async def get_mpm_payment(request: Request, reference: str) -> Response:
        async def work(terminal: str, body: bytes) -> Any:
            # A long-poll that holds no thread while it waits (the pool is small and many
            # tills wait at once): the store is read again as soon as this process takes a
            # payment, and every POLL_S for one another worker took.
            wait = min(query_int(request, "wait", 0), mpm_payments.MAX_WAIT_S)
            deadline = time.monotonic() + wait
            if not loops:
                loops.append(asyncio.get_running_loop())
            paid = asyncio.Event()
            waiting.add(paid)
            try:
                while True:
                    paid.clear()  # before the read: a payment after it still wakes us
                    doc = await run_in_threadpool(mpm_payments.sale_status, service.store,
                                                  terminal, reference)
                    left = deadline - time.monotonic()
                    if doc["status"] == "paid" or left <= 0:
                        return doc
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(paid.wait(), min(left, mpm_payments.POLL_S))
            finally:
                waiting.discard(paid)

        return await handle(request, work)

    @app.post("/v1/mpm-payments")
    async def post_mpm_payment(request: Request) -> Response:
        # Never through handle(): a terminal's signature must not pay a sale.
        nonce = request.headers.get(H_NONCE, "")
        try:
            key = _bearer(request, mpm_payments.MpmPartnerAuthError(
                "an app partner key is required: Authorization: Bearer <key>"))
            partner = await run_in_threadpool(mpm_payments.authenticate, service.store,
                                              key.strip())
            doc = _mpm_body(await request.body(), _MPM_PAY_FIELDS)
            done = await run_in_threadpool(
                mpm_payments.pay, service.store, partner, doc["reference"], doc["amount"],
                doc["payer"], doc["app_reference"])
            return answer(200, done.as_json(), nonce)
        except LocalpayError as err:
            status, code = next(((s, c) for kind, s, c in _MPM_STATUS
                                 if isinstance(err, kind)), (500, "error"))
            (log.warning if status >= 500 else log.info)("POST /v1/mpm-payments: %s", err)
            payload = {"error": code, "kind": type(err).__name__, "message": str(err),
                       "seq": None}
            if isinstance(err, mpm_payments.MpmAlreadyPaidError):
                payload["payment"] = err.payment
            return answer(status, payload, nonce)

    return app


_MPM_OPEN_FIELDS: dict[str, type] = {"reference": str, "amount": int}
_MPM_PAY_FIELDS: dict[str, type] = {"reference": str, "amount": int, "payer": str,
                                    "app_reference": str}
_MPM_STATUS: tuple[tuple[type[LocalpayError], int, str], ...] = (
    (mpm_payments.MpmPartnerAuthError, 401, "refused"),
    (mpm_payments.MpmInvalidError, 400, "malformed"),
    (SyncProtocolError, 400, "malformed"),
    (mpm_payments.MpmExpiredError, 410, "expired"),
    (mpm_payments.MpmUnknownError, 404, "unknown"),
    (mpm_payments.MpmAlreadyPaidError, 409, "already_paid"),
    (mpm_payments.MpmAppReferenceReusedError, 409, "reference_reused"),
    (mpm_payments.MpmAmountError, 422, "amount_mismatch"),
    (mpm_payments.MpmFundsError, 422, "insufficient_funds"),
    (SyncUnavailableError, 503, "unavailable"),
)


def _mpm_body(body: bytes, fields: dict[str, type]) -> dict[str, Any]:
    """Exactly ``fields``, text or whole numbers (never floats, strings or booleans)."""
    try:
        doc = json.loads(body, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as err:
        raise SyncProtocolError(f"the body is not JSON: {err}") from None
    if not isinstance(doc, dict) or set(doc) != set(fields):
        raise SyncProtocolError(f"the body must be an object of exactly {', '.join(fields)}")
    for name, kind in fields.items():
        if isinstance(doc[name], bool) or not isinstance(doc[name], kind):
            raise SyncProtocolError(f"{name} must be {'text' if kind is str else 'won'}")
    return doc


def serve(service: CentralLog, host: str = "127.0.0.1", port: int = 8470,
          log_level: str = "warning", *, topup_terms: TopupTerms | None = None) -> None:
    """Run the API until interrupted."""
    import uvicorn

    uvicorn.run(create_app(service, topup_terms=topup_terms), host=host, port=port,
                log_level=log_level, access_log=False)
