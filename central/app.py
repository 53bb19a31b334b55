"""The central service's HTTP JSON API (FastAPI on uvicorn).

Every ``/v1`` route is called by a terminal and signed by it (see :mod:`sync.protocol`); every
answer to a request that authenticated, errors included, is signed by the service's answer
key (``answer.key``, :mod:`central.keys`), never by the log key: the log key signs only the
log's checkpoints and the statement naming the answer key (``GET /v1/answer-key``, no
authentication, no nonce in it), so no answer passes for a note of the log. A request
refused before or by authentication (malformed headers, unknown terminal, bad signature,
stale, replayed) is answered unsigned: no key signs text an unauthenticated caller chose
(its nonce). Errors are ``{"error", "message", "seq"}`` with 400
(malformed), 401 (unknown terminal, bad signature, stale, replayed), 409 (gap, fork, tampered
ledger: ``seq`` is the first bad entry) and 503 (store down).

A terminal is told only what belongs to its municipality (:mod:`central.municipalities`):
its deny list, balances, points and riders, its own config, its merchant's pockets.

Every JSON object answered, errors included, also carries ``time_ms``: the service's clock
(Unix ms) when it answered. It is inside the signed body, so a terminal with no real-time
clock can anchor its own clock on it and sign its next requests with a time the service
accepts (see ``sync.client`` and ``terminal.clock``); the unsigned ``time_ms`` of a stale
refusal is only a hint for signing the one retry, never an anchor.

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
import datetime as dt
import inspect
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from central import metrics as meters
from central import mpm_payments, observe, pocket_snapshot, terminal_reports
from central.batch_gate import BatchGate
from central.config_audit import record_rejection
from central.console.mount import mount_console
from central.enroll import Enroller, answer_mac, client_address
from central.enroll import trusted_proxies as enroll_proxies
from central.http_limits import (
    BodyLimits,
    HttpLimits,
    check_entry_ranges,
    check_store_range,
    kind_of,
    protocol_class,
    public_message,
)
from central.incentives import points_delta, points_delta_in
from central.keys import load_answer_signer
from central.municipalities import of_terminal, scope_points, scope_points_in
from central.profiles import profiles_delta, profiles_delta_in
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
from localpay.encoding import KINDS
from localpay.errors import (
    ChainMismatchError,
    ConfigError,
    LocalpayError,
    SyncAuthError,
    SyncProtocolError,
    SyncUnavailableError,
)
from sync.checkpoint import NoteSigner
from sync.protocol import (
    ANSWER_KEY_PATH,
    H_ANSWER_KEY,
    H_NONCE,
    H_SIGNATURE,
    H_TERMINAL,
    H_TIME,
    answer_key_name,
    answer_key_text,
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


def _check_totals(day: Any, totals: dict[str, tuple[int, int]]) -> None:
    """A terminal's day totals name a real day, written YYYY-MM-DD, and only the kinds of
    entry a ledger holds (:data:`localpay.encoding.KINDS`): what ``central report`` compares
    and prints is never free text."""
    real = False
    if isinstance(day, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        try:
            real = dt.date.fromisoformat(day).isoformat() == day
        except ValueError:
            pass
    if not real:
        shown = json.dumps(day, ensure_ascii=False)[:40]
        raise SyncProtocolError(f"totals day {shown} is not a real date written YYYY-MM-DD")
    odd = sorted(k for k in totals if k not in KINDS)
    if odd:
        shown = json.dumps(odd[0], ensure_ascii=False)[:40]
        raise SyncProtocolError(f"totals kind {shown} is not a kind of entry "
                                f"(known: {', '.join(KINDS)})")


def _bearer(request: Request, missing: LocalpayError) -> str:
    """The key of an ``Authorization: Bearer <key>`` header; ``missing`` when there is none."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise missing
    return key


def create_app(service: CentralLog, *, topup_terms: TopupTerms | None = None,
               trusted_proxies: Sequence[str] = (),
               limits: HttpLimits | None = None) -> FastAPI:
    """The API over one :class:`CentralLog`; ``topup_terms`` opens ``POST /v1/topups``
    (without them it answers 503); ``trusted_proxies`` (addresses or networks) are the
    reverse proxies whose ``X-Forwarded-For`` names an enrolling client; ``limits`` bound
    every request's body before any route reads it (:mod:`central.http_limits`)."""
    # no API description served: it would map every route for whoever asks
    app = FastAPI(title="localpay central", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimits, limits=limits or HttpLimits())
    # answers are signed by their own key, named by the log key's one statement
    answerer = (load_answer_signer(service.data_dir, service.signer)
                if service.data_dir is not None
                else NoteSigner(answer_key_name(service.signer.name),
                                Ed25519PrivateKey.generate()))
    answer_key_id = answerer.verifier.id.hex()
    answer_statement = service.signer.sign(answer_key_text(answerer.verifier))
    # request ids and access lines (central.observe); /metrics, /healthz, /readyz below
    app.add_middleware(observe.AccessLog)
    meter = meters.Metrics(service)
    gate = BatchGate(service)
    ready = meters.Readiness()
    app.router.lifespan_context = ready.wrap(app.router.lifespan_context)
    metrics_token = meters.configured_token()

    def answer(status: int, payload: Any, nonce: str, *, signed: bool = True) -> Response:
        """The JSON answer, signed by the answer key over the caller's nonce unless
        ``signed`` is False: a caller that did not authenticate is never given a signature
        over text it chose (its nonce). The log key signs no answer."""
        if isinstance(payload, dict):
            payload = {**payload, "time_ms": int(time.time() * 1000)}
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        if not signed:
            return Response(body, status, media_type="application/json")
        sig = answerer.private_key.sign(response_message(nonce, status, body))
        return Response(body, status, {H_SIGNATURE: b64(sig), H_ANSWER_KEY: answer_key_id},
                        "application/json")

    async def handle(request: Request, work: Any) -> Response:
        nonce = request.headers.get(H_NONCE, "")
        authenticated = False
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
            authenticated = True
            observe.set_terminal(request.scope, terminal)
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
            # refused before or by authentication (malformed headers, unknown terminal, bad
            # signature, stale, replayed): unsigned
            return answer(status, {"error": code, "kind": kind_of(err),
                                   "message": public_message(err), "seq": seq}, nonce,
                          signed=authenticated)

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
        return check_store_range(f"query parameter {name!r}", value)

    def plain(status: int, doc: dict[str, Any]) -> Response:
        return Response(json.dumps(doc, separators=(",", ":")), status,
                        media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        # 503 when the store does not answer: this worker can take nothing then
        ok, store = await run_in_threadpool(meters.store_check, service)
        return plain(200 if ok else 503, {"ok": ok, "origin": service.origin, "store": store})

    @app.get("/readyz")
    async def readyz() -> Response:
        ok, store = await run_in_threadpool(meters.store_check, service)
        ok = ok and ready.started
        return plain(200 if ok else 503, {"ready": ok, "started": ready.started,
                                          "store": store["ok"]})

    @app.get("/metrics")
    async def get_metrics(request: Request) -> Response:
        if not meters.token_ok(metrics_token, request.headers.get("authorization", "")):
            return Response("a metrics token is required: Authorization: Bearer <token>\n",
                            401, {"WWW-Authenticate": "Bearer"}, "text/plain")
        return Response(await run_in_threadpool(meter.render), 200,
                        media_type=meters.CONTENT_TYPE)

    @app.get(ANSWER_KEY_PATH)
    async def get_answer_key() -> Response:
        # unauthenticated and the same for everyone: a signed note by the log key with no
        # caller's text in it, which the terminal checks with the log key it trusts
        return plain(200, {"answer_key": answerer.verifier.text(),
                           "note": answer_statement})

    @app.post("/v1/batches")
    async def post_batch(request: Request) -> Response:
        seen = meters.BatchSeen()

        def take(terminal: str, body: bytes) -> Any:
            terminal_id, entries = parse_batch(body)
            check_entry_ranges(entries)
            seen.entries = len(entries)
            if terminal_id != terminal:
                raise SyncAuthError(f"terminal {terminal!r} cannot send {terminal_id!r}'s batch")
            receipt = service.ingest(terminal_id, entries, follow=False)
            seen.new = receipt.accepted
            return receipt.to_json()

        async def work(terminal: str, body: bytes) -> Any:
            done = await gate.take(take, terminal, body)
            await gate.follow()  # credited before its answer, as ever
            return done

        started = time.perf_counter()
        resp = await handle(request, work)
        meter.batch_done(resp.status_code, bytes(resp.body), seen,
                         time.perf_counter() - started, request.headers.get(H_TERMINAL, ""))
        return resp

    @app.get("/v1/checkpoint")
    async def get_checkpoint(request: Request) -> Response:
        size = request.query_params.get("size")
        return await handle(request, lambda t, b: {
            "checkpoint": service.checkpoint(query_int(request, "size") if size else None)})

    @app.get("/v1/consistency")
    async def get_consistency(request: Request) -> Response:
        def work(terminal: str, body: bytes) -> Any:
            m, n = query_int(request, "from"), query_int(request, "to")
            if m > n:
                raise SyncProtocolError(f"no consistency proof from size {m} to size {n}: "
                                        f"from is after to")
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

    @app.get("/v1/round")
    async def get_round(request: Request) -> Response:
        # A round's fetches in one request: each part is the answer its own route gives for
        # the same since (deny, balances, points with riders, pockets, config), so a round
        # authenticates once instead of five times. A part that has more to tell is asked
        # for again on its own route.
        # The parts that only read are read in one transaction (they were seven, each a
        # pool checkout and two more round trips); the pockets' part may refresh its
        # snapshot, a write, and keeps its own.
        def work(terminal: str, body: bytes) -> Any:
            with service.store.tx(write=False) as tx:
                municipality = of_terminal(tx, terminal)
                if municipality is None:
                    raise SyncAuthError(f"unknown terminal {terminal!r}")
                points = points_delta_in(tx, query_int(request, "points_since", 0),
                                         municipality=municipality)
                points["riders"] = profiles_delta_in(
                    tx, query_int(request, "riders_since", 0), municipality=municipality)
                doc = {"deny": service.deny_delta_in(
                           tx, query_int(request, "deny_since", 0), municipality),
                       "balances": service.balances_delta_in(
                           tx, query_int(request, "balances_since", 0), municipality),
                       "points": scope_points_in(tx, terminal, points),
                       "config": service.latest_config_in(tx, terminal)}
            doc["pockets"] = pocket_snapshot.delta(service.store, terminal,
                                                   query_int(request, "pockets_since", 0))
            return doc

        return await handle(request, work)

    @app.post("/v1/status")
    async def post_status(request: Request) -> Response:
        # the terminal's software version and the faults it shows (sync.status_report)
        return await handle(request, lambda t, b: terminal_reports.record(
            service.store, t, service.terminal_municipality(t), b))

    @app.post("/v1/config/rejected")
    async def post_config_rejected(request: Request) -> Response:
        # a terminal's report of a bundle it refused; `central report` lists it
        return await handle(request, lambda t, b: record_rejection(service, t, b))

    enroller = None
    if service.data_dir is not None:
        enroller = Enroller(service, service.data_dir)
    proxies = enroll_proxies(trusted_proxies)

    @app.post("/v1/enroll")
    async def post_enroll(request: Request) -> Response:
        # Not signed by a registered terminal (there is none yet): the code is the credential.
        nonce = request.headers.get(H_NONCE, "")
        if enroller is None:
            return answer(404, {"error": "refused", "kind": "not_authenticated", "seq": None,
                                "message": "this service does not enrol terminals"}, nonce,
                          signed=False)
        body = await request.body()
        client = client_address(request.client.host if request.client else "",
                                request.headers.get("x-forwarded-for", ""), proxies)
        status, payload, ckey = await run_in_threadpool(enroller.handle, request.headers, body,
                                                        client)
        if ckey is not None and status == 200 and isinstance(payload, dict):
            # the new terminal checks this answer's signature with the key it names
            payload = {**payload, "answer_key_note": answer_statement}
        # only an enrolment the code and the key authenticated is signed (and MAC'd)
        resp = answer(status, payload, nonce, signed=ckey is not None)
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
            _check_totals(day, totals)
            service.report_totals(terminal, day, totals)
            return {"ok": True}

        return await handle(request, work)

    # The partners' routes, never through handle(): a terminal's signature opens neither.
    # One rule signs their answers: the partner a request's key opened is noted on the
    # request (open_partner), and only then is an answer signed (partner_answer); a caller
    # whose key did not open gets no signature over the nonce it chose.
    async def open_partner(request: Request, authenticate_key: Callable[..., Any],
                           missing: LocalpayError) -> Any:
        """The partner ``authenticate_key(store, key)`` finds for the request's bearer key
        (``missing`` without one), noted on the request."""
        key = _bearer(request, missing)
        request.state.partner = await run_in_threadpool(authenticate_key, service.store,
                                                        key.strip())
        return request.state.partner

    def partner_answer(request: Request, status: int, payload: Any) -> Response:
        opened = getattr(request.state, "partner", None) is not None
        return answer(status, payload, request.headers.get(H_NONCE, ""), signed=opened)

    @app.post("/v1/topups")
    async def post_topup(request: Request) -> Response:
        try:
            # the key first: who is not a partner learns nothing, not even the configuration
            # the key names the partner, the partner its one municipality: it credits only
            # that municipality's accounts, at that municipality's terms
            partner = await open_partner(request, authenticate, PartnerAuthError(
                "a partner key is required: Authorization: Bearer <key>"))
            if topup_terms is None:
                return partner_answer(request, 503, {
                    "error": "not_configured", "kind": "not_configured",
                    "message": "top-ups are not configured", "seq": None})
            doc = parse_topup(await request.body())
            done = await run_in_threadpool(
                lambda: topup(service.store, topup_terms, doc["account"], doc["face_value"],
                              doc["reference"], partner=partner.name, paid=doc["paid"],
                              municipality=partner.municipality))
            return partner_answer(request, 200, done.as_json())
        except LocalpayError as err:
            status, code = next(((s, c) for kind, s, c in _TOPUP_STATUS
                                 if isinstance(err, kind)), (500, "error"))
            if status >= 500:
                log.warning("POST /v1/topups: %s", err)
            else:
                log.info("POST /v1/topups refused: %s", err)
            return partner_answer(request, status, {"error": code, "kind": kind_of(err),
                                                    "message": str(err), "seq": None})

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
        # a partner's route (see open_partner): a terminal's signature must not pay a sale
        try:
            partner = await open_partner(
                request, mpm_payments.authenticate, mpm_payments.MpmPartnerAuthError(
                    "an app partner key is required: Authorization: Bearer <key>"))
            doc = _mpm_body(await request.body(), _MPM_PAY_FIELDS)
            done = await run_in_threadpool(
                mpm_payments.pay, service.store, partner, doc["reference"], doc["amount"],
                doc["payer"], doc["app_reference"])
            return partner_answer(request, 200, done.as_json())
        except LocalpayError as err:
            status, code = next(((s, c) for kind, s, c in _MPM_STATUS
                                 if isinstance(err, kind)), (500, "error"))
            (log.warning if status >= 500 else log.info)("POST /v1/mpm-payments: %s", err)
            payload = {"error": code, "kind": kind_of(err), "message": str(err),
                       "seq": None}
            if isinstance(err, mpm_payments.MpmAlreadyPaidError):
                payload["payment"] = err.payment
            return partner_answer(request, status, payload)

    # the operator's console: its own sessions and CSRF; no terminal key opens it, and no
    # console cookie opens a /v1 route (they authenticate by their signed headers only)
    mount_console(app, service, trusted_proxies=trusted_proxies)
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
          log_level: str = "warning", *, topup_terms: TopupTerms | None = None,
          trusted_proxies: Sequence[str] = (), limits: HttpLimits | None = None) -> None:
    """Run the API until interrupted, under ``limits`` (:mod:`central.http_limits`)."""
    import uvicorn

    limits = limits or HttpLimits()
    # proxy_headers off: uvicorn would believe X-Forwarded-For from any local peer; the
    # enrolment route believes it only from trusted_proxies (central.enroll.client_address)
    # limit_concurrency one above: uvicorn answers 503 at ">=", the protocol refuses at ">"
    uvicorn.run(create_app(service, topup_terms=topup_terms, trusted_proxies=trusted_proxies,
                           limits=limits),
                host=host, port=port, log_level=log_level, access_log=False,
                proxy_headers=False, http=protocol_class(limits),
                timeout_keep_alive=limits.keep_alive_s,
                limit_concurrency=limits.max_connections + 1)
