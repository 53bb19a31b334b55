"""The Enrolment and config page: which terminals run which config version; issue an
enrolment code; publish a config bundle.

A code is :func:`central.console_data.issue_enrolment_code` (what ``central enroll`` runs)
and is shown once, in the answer to the form's POST: never in a URL, never logged, never
in the audit log (which records its id, the hash the store keeps, and what it enrols). A
bundle is :func:`central.console_data.publish_config` (``central config SOURCE
[--sign-for ID]``), for a terminal of the operator's own municipality only. Reading needs a
viewer; acting an operator.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from central.console.day import terminal_is_mine
from central.console.web import (
    PREFIX,
    AsOperator,
    AsViewer,
    Ctx,
    Refusal,
    form_and_reason,
    record_change,
    render,
    see_other,
)
from central.console_data import config_versions, issue_enrolment_code, publish_config
from firmware_cfg import bundle as bundles
from firmware_cfg import provision
from localpay.errors import ConfigError

router = APIRouter()

ROLES = ("till", "validator")
#: what the form offers for a code's life, in hours (central.enroll allows 1 min to 30 days)
TTL_HOURS = (1, 24, 72, 168, 720)
#: the largest config text the form takes (a terminal.toml is a few kilobytes)
MAX_CONFIG = 256 * 1024


@router.get("/enrol")
async def enrol_page(ctx: AsViewer) -> Response:
    versions = await run_in_threadpool(config_versions, ctx.store, ctx.municipality)
    q = ctx.request.query_params
    published = ({"terminal": q.get("published", "")[:100], "version": q.get("v", "")[:12]}
                 if q.get("published") else None)
    return render(ctx, "enrol.html", versions=versions, roles=ROLES, ttls=TTL_HOURS,
                  published=published)


@router.post("/enrol/code")
async def issue_code(ctx: AsOperator) -> Response:
    form, reason = await form_and_reason(ctx, required=False)
    tid, role = str(form.get("terminal_id", "")).strip(), str(form.get("role", ""))
    place = str(form.get("place", "")).strip()
    hours = str(form.get("ttl_hours", "24"))
    if role and role not in ROLES:
        raise Refusal(400, "error.invalid", detail="role: till or validator")
    if not hours.isdigit() or not 1 <= int(hours) <= 720:
        raise Refusal(400, "error.invalid", detail="expiry: 1 to 720 hours")

    def issue() -> tuple[str, int]:
        got = issue_enrolment_code(ctx.service, terminal_id=tid, role=role, place=place,
                                   ttl_s=int(hours) * 3600, municipality=ctx.municipality)
        # the audit log names the code by the id the store keeps, never by the code
        code_id = provision.code_id(got.code)
        record_change(ctx, "enrolment.issue", f"enrolment_code:{code_id}", None,
                      {"terminal_id": tid, "role": role, "place": place,
                       "expires_ms": got.expires_ms}, reason)
        return got.code, got.expires_ms

    try:
        code, expires = await run_in_threadpool(issue)
    except ConfigError as err:
        raise Refusal(400, "error.invalid", detail=str(err)) from err
    return render(ctx, "enrol_code.html", code=code, expires=expires, tid=tid, role=role,
                  place=place)


async def _config_text(ctx: Ctx) -> tuple[str, str]:
    form = await ctx.request.form()
    upload = form.get("file")
    data = b""
    if isinstance(upload, UploadFile):
        data = await upload.read(MAX_CONFIG + 1)
    text = data.decode("utf-8", "replace") if data else str(form.get("text", ""))
    if not text.strip():
        raise Refusal(400, "error.invalid", detail="no config: paste it or choose a file")
    if len(text) > MAX_CONFIG or (data and b"\x00" in data):
        raise Refusal(400, "error.invalid", detail="config: a text file up to 256 KiB")
    return text.replace("\r\n", "\n"), str(form.get("sign_for", "")).strip()


@router.post("/enrol/config")
async def publish(ctx: AsOperator) -> Response:
    text, sign_for = await _config_text(ctx)
    _, reason = await form_and_reason(ctx, required=False)

    def change() -> tuple[str, int]:
        tid = sign_for or bundles.peek(text.encode("utf-8"))[0]
        # publish_config files a bundle under any registered terminal: only the
        # operator's own municipality's here
        if not terminal_is_mine(ctx.store, tid, ctx.municipality):
            raise Refusal(404, "enrol.unknown_terminal", id=tid)
        before = int(ctx.service.latest_config(tid)["version"])
        version = publish_config(ctx.service, text, sign_for=sign_for or None)
        record_change(ctx, "config.publish", f"terminal:{tid}", {"version": before},
                      {"version": version, "signed_here": bool(sign_for)}, reason)
        return tid, version

    try:
        tid, version = await run_in_threadpool(change)
    except ConfigError as err:
        raise Refusal(400, "error.invalid", detail=str(err)) from err
    return see_other(f"{PREFIX}/enrol?{urlencode({'published': tid, 'v': version})}")
