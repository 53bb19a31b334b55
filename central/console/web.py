"""The console's web foundation: a sub-application mounted at ``/console``, its sessions,
CSRF, role checks, templates and the login and audit-log pages.

Adding a page (see ``fleet.py`` and ``cards.py``)::

    router = APIRouter()

    @router.get("/things")
    async def things(ctx: AsViewer) -> Response:
        rows = await run_in_threadpool(read_things, ctx.store, ctx.municipality)
        return render(ctx, "things.html", rows=rows)

    @router.post("/things/{id}/close")
    async def close(id: str, ctx: AsOperator) -> Response:
        form, reason = await form_and_reason(ctx)   # CSRF checked by require()
        ...change through the service function the CLI uses...
        await run_in_threadpool(record_change, ctx, "thing.close", f"thing:{id}", before,
                                after, reason)
        return see_other(f"{PREFIX}/things")

and add the router to :data:`central.console.mount.ROUTERS`. ``AsViewer``,
``AsCallCentre``, ``AsOperator`` and ``AsAdmin`` are :func:`require` of that role;
:func:`require` refuses (403 page) a request without a live session, a state-changing one
whose form lacks the session's CSRF token, and an operator whose role is below the one named;
a ``GET`` without a session is answered with the login page. Every form carries
``<input type="hidden" name="csrf" value="{{ csrf }}">``.

Cookies: the session's is ``HttpOnly``, ``SameSite=Strict``, ``Secure`` and named with the
``__Host-`` prefix (the browser then refuses it from a subdomain or over plain HTTP).
``LOCALPAY_CONSOLE_INSECURE_COOKIES=1`` in the service's environment drops ``Secure`` and
the prefix, for tests over plain HTTP on loopback only; never set it in production.

The terminals' API knows nothing of these cookies (it authenticates by its signed headers
only), and nothing here reads a terminal's ``X-LP-*`` headers: neither opens the other.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from central.console import i18n, operators
from central.console.operators import (
    ConsoleAuthError,
    ConsoleError,
    LockedOutError,
    Lockout,
    Operator,
    Session,
)
from central.enroll import client_address
from central.service import CentralLog
from central.store import Store
from localpay.errors import LocalpayError

log = logging.getLogger(__name__)

PREFIX = "/console"
INSECURE_ENV = "LOCALPAY_CONSOLE_INSECURE_COOKIES"
SECURE_COOKIE = "__Host-lp_console"
PLAIN_COOKIE = "lp_console"
#: the login form's own CSRF token travels in this cookie (double submit): before login
#: there is no session to bind a token to
LOGIN_COOKIE = "lp_console_login"
HERE = Path(__file__).parent
_HEADERS = {
    # no inline script or style anywhere: a stored text can never run
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; frame-ancestors 'none'; form-action 'self'; "
                               "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class Console:
    """What every page of one service's console shares."""

    service: CentralLog
    secure: bool
    lockout: Lockout
    proxies: Any
    env: jinja2.Environment
    token_key: bytes | None = field(default=None, repr=False)

    @property
    def cookie(self) -> str:
        return SECURE_COOKIE if self.secure else PLAIN_COOKIE

    @property
    def store(self) -> Store:
        return self.service.store


class Refusal(LocalpayError):
    """A console request refused: shown as a page with ``status`` and the catalogue's
    ``key`` (filled with ``values``)."""

    def __init__(self, status: int, key: str, **values: Any) -> None:
        super().__init__(key)
        self.status, self.key, self.values = status, key, values


class LoginNeeded(LocalpayError):
    """A page asked for without a session: answered by the login page."""


@dataclass(frozen=True)
class Ctx:
    """One console request: its operator (``None`` only on the login page), language and
    CSRF token."""

    request: Request
    console: Console
    session: Session | None
    lang: str
    t: Callable[..., str]

    @property
    def operator(self) -> Operator:
        if self.session is None:
            raise LoginNeeded()
        return self.session.operator

    @property
    def municipality(self) -> str:
        return self.operator.municipality

    @property
    def csrf(self) -> str:
        return self.session.csrf if self.session is not None else ""

    @property
    def store(self) -> Store:
        return self.console.store

    @property
    def service(self) -> CentralLog:
        return self.console.service

    def when(self, ms: int | None) -> str:
        """A time (Unix ms) as the service's local time; "never" for 0 or None."""
        if not ms:
            return self.t("never")
        return dt.datetime.fromtimestamp(ms / 1000, self.service.tz).strftime(
            "%Y-%m-%d %H:%M:%S")


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _lang(request: Request) -> str:
    return i18n.pick(request.query_params.get("lang"), request.cookies.get("lang"),
                     request.headers.get("accept-language", ""))


def base_ctx(request: Request, session: Session | None = None) -> Ctx:
    lang = _lang(request)
    return Ctx(request, console_of(request), session, lang, i18n.translator(lang))


def require(role: str) -> Callable[..., Any]:
    """A dependency giving the request's :class:`Ctx` once it has a live session, a role
    at least ``role`` and, for anything but GET and HEAD, the session's CSRF token in its
    form (field ``csrf``) or ``X-CSRF-Token`` header."""
    operators.check_role(role)

    async def dependency(request: Request) -> Ctx:
        console = console_of(request)
        sid = request.cookies.get(console.cookie, "")
        session = await run_in_threadpool(operators.session, console.store, sid) if sid \
            else None
        if session is None:
            if request.method in ("GET", "HEAD"):
                raise LoginNeeded()
            raise Refusal(403, "error.session")
        if request.method not in ("GET", "HEAD"):
            form = await request.form()
            given = str(form.get("csrf", "") or request.headers.get("x-csrf-token", ""))
            if not operators.csrf_ok(sid, given):
                log.info("console %s %s refused: no valid CSRF token (operator %s)",
                         request.method, request.url.path, session.operator.name)
                raise Refusal(403, "error.csrf")
        ctx = base_ctx(request, session)
        if not session.operator.may(role):
            log.info("console %s %s refused: %s is %s, %s needed", request.method,
                     request.url.path, session.operator.name, session.operator.role, role)
            raise Refusal(403, "error.forbidden", role=ctx.t(f"role.{role}"))
        return ctx

    return dependency


#: a route's parameter ``ctx: AsViewer`` (and so on) admits that role and every one above it
AsViewer = Annotated[Ctx, Depends(require("viewer"))]
AsCallCentre = Annotated[Ctx, Depends(require("callcentre"))]
AsOperator = Annotated[Ctx, Depends(require("operator"))]
AsAdmin = Annotated[Ctx, Depends(require("admin"))]


async def form_and_reason(ctx: Ctx, *, required: bool = True) -> tuple[FormData, str]:
    """A change's form (its session, CSRF token and role checked by :func:`require`) and
    its ``reason`` as the audit log keeps it (:func:`operators.check_reason`); a reason
    missing (when ``required``) or too long is refused with a 400 page saying so."""
    form = await ctx.request.form()
    try:
        return form, operators.check_reason(str(form.get("reason", "") or ""),
                                            required=required)
    except ConsoleError as err:
        raise Refusal(400, "error.invalid", detail=str(err)) from err


def download(ctx: Ctx, name: str, body: bytes, media_type: str) -> Response:
    """A file to save (a settlement file), with every page's headers."""
    return _harden(Response(body, media_type=media_type, headers={
        "Content-Disposition": f'attachment; filename="{name}"'}), ctx)


def _harden(resp: Response, ctx: Ctx | None = None) -> Response:
    for name, value in _HEADERS.items():
        resp.headers[name] = value
    if ctx is not None and ctx.request.query_params.get("lang") in i18n.LANGS:
        resp.set_cookie("lang", ctx.lang, max_age=365 * 86400, path=PREFIX,
                        secure=ctx.console.secure, httponly=True, samesite="strict")
    return resp


def render(ctx: Ctx, template: str, status: int = 200, **values: Any) -> Response:
    """``template`` (in ``central/console/templates``) rendered with ``values`` and what
    every page has: ``t`` (the catalogue in the page's language), ``lang``, ``op`` (the
    operator or None), ``csrf``, ``when`` (ms -> local time), ``won`` (amount -> text),
    ``may`` (role -> bool), ``prefix`` and ``path``."""
    op = ctx.session.operator if ctx.session is not None else None
    html = ctx.console.env.get_template(template).render(
        t=ctx.t, lang=ctx.lang, op=op, csrf=ctx.csrf, when=ctx.when, prefix=PREFIX,
        path=ctx.request.url.path, won=lambda n: ctx.t("won", n=f"{int(n):,}"),
        may=(lambda role: op is not None and op.may(role)), **values)
    return _harden(HTMLResponse(html, status), ctx)


def json_answer(ctx: Ctx, doc: Any) -> Response:
    """A JSON answer for the page's script (session-authenticated like the page)."""
    return _harden(JSONResponse(doc), ctx)


def see_other(url: str) -> Response:
    """After a POST: go to ``url`` with a GET (303)."""
    return _harden(RedirectResponse(url, 303))


def record_change(ctx: Ctx, action: str, obj: str, before: Any, after: Any,
                  reason: str) -> str:
    """Record in the console's audit log that the request's operator did ``action`` to
    ``obj`` (``kind:id``), the state ``before`` and ``after`` (anything JSON encodes) and
    why; call it (in a thread: ``run_in_threadpool``) after the change succeeded."""
    return operators.record_change(ctx.store, ctx.operator.name, action, obj, before, after,
                                   reason, municipality=ctx.municipality)


# -- login, logout, the audit log -----------------------------------------------------------------

router = APIRouter()


def login_page(request: Request, status: int = 200, error: str = "",
                nxt: str = "") -> Response:
    ctx = base_ctx(request)
    token = secrets.token_urlsafe(24)
    resp = render(ctx, "login.html", status, error=error, login_csrf=token,
                  next=_safe_next(nxt))
    resp.set_cookie(LOGIN_COOKIE, token, max_age=1800, path=PREFIX, httponly=True,
                    secure=ctx.console.secure, samesite="strict")
    return resp


def _safe_next(nxt: str) -> str:
    """Only a path of the console itself (never another site) is gone to after login."""
    if nxt.startswith(PREFIX + "/") and not nxt.startswith("//") and "\\" not in nxt:
        return nxt
    return PREFIX + "/fleet"


@router.get("/login")
async def login_form(request: Request) -> Response:
    return login_page(request, nxt=request.query_params.get("next", ""))


@router.post("/login")
async def login_post(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, str(form.get("csrf", ""))):
        raise Refusal(403, "error.csrf")
    address = client_address(request.client.host if request.client else "",
                             request.headers.get("x-forwarded-for", ""), console.proxies)
    # the name as logged: only what could be an operator's name (a password typed in the
    # name field by mistake is not written to the log)
    said = str(form.get("name", ""))
    said = said if operators.NAME_RE.fullmatch(said) else "(not a name)"
    t = base_ctx(request).t
    try:
        sid, session = await run_in_threadpool(
            operators.login, console.store, str(form.get("name", "")),
            str(form.get("password", "")), address, lockout=console.lockout)
    except LockedOutError as err:
        log.warning("console login refused (locked) for %r from %s", said, address)
        return login_page(request, 429, t("login.locked", minutes=int(err.wait_s // 60) + 1),
                           str(form.get("next", "")))
    except ConsoleAuthError:
        log.info("console login failed for %r from %s", said, address)
        return login_page(request, 401, t("login.failed"), str(form.get("next", "")))
    resp = see_other(_safe_next(str(form.get("next", ""))))
    resp.set_cookie(console.cookie, sid, max_age=operators.SESSION_S, path="/",
                    secure=console.secure, httponly=True, samesite="strict")
    resp.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    log.info("console login: %s from %s", session.operator.name, address)
    return resp


@router.post("/logout")
async def logout(ctx: AsViewer) -> Response:
    sid = ctx.request.cookies.get(ctx.console.cookie, "")
    await run_in_threadpool(operators.logout, ctx.store, sid)
    resp = see_other(PREFIX + "/login")
    resp.delete_cookie(ctx.console.cookie, path="/", secure=ctx.console.secure,
                       httponly=True, samesite="strict")
    return resp


@router.get("/")
async def home(ctx: AsViewer) -> Response:
    return see_other(PREFIX + "/fleet")


@router.get("/audit")
async def audit_page(ctx: AsViewer) -> Response:
    q = ctx.request.query_params
    rows = await run_in_threadpool(
        lambda: operators.audit_rows(ctx.store, municipality=ctx.municipality,
                                     operator=q.get("operator") or None,
                                     obj=q.get("object") or None, limit=500))
    shown = [{"when": ctx.when(r.at_ms), "operator": r.operator, "action": r.action,
              "object": r.object, "before": _short(r.before), "after": _short(r.after),
              "reason": r.reason} for r in rows]
    return render(ctx, "audit.html", rows=shown)


def _short(doc: Any) -> str:
    return "" if doc is None else json.dumps(doc, ensure_ascii=False, sort_keys=True)
