"""The console as an application of its own, mounted at ``/console`` of the central
service's API by :func:`central.app.create_app`: the routers of every page
(:data:`ROUTERS`; a new page's module adds its router there), the static files, and the
pages shown for a refusal, a missing session and a missing page.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import jinja2
from fastapi import APIRouter, FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from central.console import admin, cards, day, enrol, fleet, fraud, operators, programme, web
from central.console.operators import Lockout
from central.console.web import (
    HERE,
    INSECURE_ENV,
    PREFIX,
    Console,
    LoginNeeded,
    Refusal,
    base_ctx,
    login_page,
    render,
)
from central.enroll import trusted_proxies as parse_proxies
from central.service import CentralLog

log = logging.getLogger(__name__)

#: every page's router, in the order their routes are tried
ROUTERS: tuple[APIRouter, ...] = (web.router, fleet.router, cards.router, admin.router,
                                  day.router, fraud.router, programme.router, enrol.router)


def insecure_cookies() -> bool:
    """Whether the environment turned the cookies' ``Secure`` off (tests over plain HTTP
    on loopback only)."""
    return os.environ.get(INSECURE_ENV, "").strip() == "1"


def create_console(service: CentralLog, *, secure_cookies: bool | None = None,
                   trusted_proxies: Sequence[str] = (),
                   lockout: Lockout | None = None) -> FastAPI:
    """The console over ``service``, to mount at :data:`PREFIX`. ``secure_cookies``
    (default: on unless ``LOCALPAY_CONSOLE_INSECURE_COOKIES=1``); ``trusted_proxies`` as
    ``central serve --trusted-proxy`` (whose ``X-Forwarded-For`` names the client whose
    failed logins are counted); ``lockout`` the failed-login rule."""
    secure = not insecure_cookies() if secure_cookies is None else secure_cookies
    if not secure:
        log.warning("the console's cookies are not Secure (%s): plain-HTTP tests only",
                    INSECURE_ENV)
    operators.ensure_schema(service.store)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    sub = FastAPI(title="localpay console", docs_url=None, redoc_url=None, openapi_url=None)
    sub.state.console = Console(service, secure, lockout or Lockout(),
                                parse_proxies(trusted_proxies), env)
    for router in ROUTERS:
        sub.include_router(router)
    sub.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @sub.exception_handler(LoginNeeded)
    async def to_login(request: Request, err: LoginNeeded) -> Response:
        return login_page(request, nxt=request.url.path)

    @sub.exception_handler(Refusal)
    async def refused(request: Request, err: Refusal) -> Response:
        ctx = base_ctx(request)
        return render(ctx, "error.html", err.status, message=ctx.t(err.key, **err.values))

    @sub.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        ctx = base_ctx(request)
        key = "error.not_found" if err.status_code == 404 else "error.title"
        return render(ctx, "error.html", err.status_code, message=ctx.t(key))

    return sub


def mount_console(app: FastAPI, service: CentralLog, *, trusted_proxies: Sequence[str] = (),
                  secure_cookies: bool | None = None) -> None:
    """Serve the console at ``/console`` of ``app`` (``central.app.create_app`` does)."""
    app.mount(PREFIX, create_console(service, secure_cookies=secure_cookies,
                                     trusted_proxies=trusted_proxies))
