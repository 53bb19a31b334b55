"""The console's Day, Fraud, Programme and Enrolment pages, through the real application
(``central.app.create_app``) and FastAPI's TestClient over ``https://`` against real
PostgreSQL, the state built by the product's own paths (signed batches ingested with the
balance and fraud hooks, crediting and posting following; payouts, allowances and
settlements run by their functions). Each figure of money on a page is set against an
independent computation written out here; each change is refused to a viewer and to a form
without its CSRF token, and is found in the audit log under its operator's name."""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import accounts, allowances, municipalities
from central.console import fraud, i18n, operators
from central.enroll import load_operator_key
from central.payouts import fund_points, payout
from central.service import CentralLog
from central.settlement import settle
from firmware_cfg import bundle as bundles
from firmware_cfg import provision
from firmware_cfg.config import DEFAULT, dumps
from firmware_cfg.keys import public_hex
from localpay.cli import cli
from tests.console_fixtures import (  # noqa: F401 - console_svc: a fixture
    add_staff,
    client,
    console_svc,
    csrf_of,
    log_in,
    table,
)
from tests.payout_world import A_CARD, B_CARD, NOV_2, payout_world
from tests.pg_fixtures import pg_cluster  # noqa: F401 - fixture
from tests.test_allowances import spend as spend_allowance
from tests.test_console_data import DAY, HELD, october_rides, round_burst, sample_day
from tests.test_settlement import LATER

#: the shipped rules' yearly points budget (central/incentive_rules.toml)
SHIPPED_BUDGET = 2_000_000_000


@pytest.fixture
def svc(pg_cluster: Any) -> Iterator[CentralLog]:  # noqa: F811
    """A service crediting and posting to the books as batches arrive (books checked to
    balance afterwards), with a viewer, a call centre and an operator."""
    for service in payout_world(pg_cluster.new_schema()):
        add_staff(service.store, "vera", "carl", "opal")
        yield service


# -- reading pages -------------------------------------------------------------------------------


def won(n: int, lang: str) -> str:
    return f"{n:,}원" if lang == "ko" else f"{n:,} won"


def pts(n: int, lang: str) -> str:
    return f"{n:,}포인트" if lang == "ko" else f"{n:,} points"


def hrefs(fragment: str, cls: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(rf'<a href="([^"]+)" class="{cls}"', fragment)]


def section(page: str, section_id: str) -> str:
    found = re.search(rf'<section class="panel flag" id="{section_id}">(.*?)</section>', page,
                      re.S)
    assert found, section_id
    return found.group(1)


def audit(svc: CentralLog, action: str) -> list[operators.AuditRow]:
    return [r for r in operators.audit_rows(svc.store) if r.action == action]


# -- a day ---------------------------------------------------------------------------------------


def test_day_page_totals_differences_and_problems_link_to_entries(svc: CentralLog) -> None:
    sample = sample_day(svc)
    taps, kinds = sample.taps, sample.kinds
    paid_cash, owed = sample.paid_cash, sample.owed
    tap_sum = sum(e.amount for e in taps)

    assert i18n.missing() == {}
    with client(svc) as c:
        log_in(c, "vera")
        for lang, no_pocket in (("ko", "(포켓 없음: 계정 미수금)"),
                                ("en", "(no pocket: owed by the account)")):
            page = c.get(f"/console/day?day={DAY}&lang={lang}")
            assert page.status_code == 200 and f'<html lang="{lang}">' in page.text
            assert 'class="error"' in page.text.split('id="clean"', 1)[1][:20]  # not clean
            assert table(page.text, "kinds") == [
                [k, str(n), won(a, lang)] for k, (n, a) in sorted(kinds.items())]
            assert table(page.text, "merchants") == [
                ["LF01", "Shop LF01", "payment", "2", won(12_000 + 10_000, lang)],
                ["LF01", "Shop LF01", "refund", "1", won(12_000, lang)]]
            assert table(page.text, "pockets") == [
                [no_pocket, "1", won(owed, lang), won(0, lang), won(owed, lang)],
                ["cash", "2", won(paid_cash, lang), won(12_000, lang),
                 won(paid_cash - 12_000, lang)]]
            diff, = table(page.text, "differences")
            assert diff[:4] == ["BUS-7", "tap", f"{len(taps)} · {won(tap_sum, lang)}",
                                f"1 · {won(1_500, lang)}"]
            problems = table(page.text, "problems")
            shown = {(row[0], row[1], row[2]) for row in problems}
            word = {"ko": ("잔액 초과", "포켓 잔액 초과"), "en": ("overdraft", "pocket overdraft")}
            assert (word[lang][0], "BUS-7", "1") in shown
            assert (word[lang][1], "T-LF01", "2") in shown

        # the links: the difference's entries, the overdraft's entry, the pocket overdraft's
        page = c.get(f"/console/day?day={DAY}&lang=en").text
        diff_link, = hrefs(page.split('id="differences"')[1].split("</table>")[0],
                           "entries-link")
        listed = c.get(diff_link)
        assert listed.status_code == 200
        assert [(r[1], r[2], r[4]) for r in table(listed.text, "entries")] == [
            (str(i + 1), "tap", won(e.amount, "en")) for i, e in enumerate(taps)]
        links = dict(zip([(r[0], r[1], r[2]) for r in table(page, "problems")],
                         hrefs(page.split('id="problems"')[1].split("</table>")[0],
                               "entries-link"), strict=True))
        over, = table(c.get(links[("overdraft", "BUS-7", "1")]).text, "entries")
        assert (over[1], over[2], over[4]) == ("1", "tap", won(taps[0].amount, "en"))
        short, = table(c.get(links[("pocket overdraft", "T-LF01", "2")]).text, "entries")
        assert (short[1], short[2], short[4]) == ("2", "payment", won(10_000, "en"))

        # today in Seoul by default; a day with nothing; a bad day; a terminal not ours
        today = datetime.now(ZoneInfo("Asia/Seoul")).strftime("%Y-%m-%d")
        assert f'value="{today}"' in c.get("/console/day").text
        quiet = c.get("/console/day?day=2026-01-05&lang=en").text
        assert "No entries that day." in quiet and "No differences." in quiet
        assert c.get("/console/day?day=2026-13-01").status_code == 400
        assert c.get("/console/entries?terminal_id=NOPE&day=" + DAY).status_code == 404
        municipalities.add(svc.store, "north", "North", "North Pay")
        svc.add_terminal("BUS-N", bytes.fromhex(public_hex(Ed25519PrivateKey.generate())),
                         municipality="north")
        assert c.get("/console/entries?terminal_id=BUS-N").status_code == 404

        # the shop's day settled: payments less the refund (the shop has no fee rate)
        settle(svc.store, DAY, now_ms=LATER)
        gross, refunds = 12_000 + 10_000, 12_000
        net = gross - refunds
        for lang, pending in (("ko", "대기"), ("en", "pending")):
            page = c.get(f"/console/programme?year=2026&lang={lang}").text
            assert f'<a href="/console/programme/settlements/{DAY}">' in page
            day, = table(page, "settlements")
            assert day[:6] == [DAY, "1", won(gross, lang), won(0, lang), won(net, lang),
                               won(0, lang)]
            assert day[7] == f"{pending} 1 · {won(net, lang)}"
            detail = c.get(f"/console/programme/settlements/{DAY}?lang={lang}")
            assert detail.status_code == 200
            shop_row, = table(detail.text, "settlement")
            assert shop_row[:6] == ["LF01", pending, won(gross, lang), won(refunds, lang),
                                    won(0, lang), won(net, lang)]
        assert c.get("/console/programme/settlements/2026-11-21").status_code == 404


# -- fraud ---------------------------------------------------------------------------------------


def test_fraud_page_confirm_denies_dismiss_does_not_and_once_only(
        svc: CentralLog, monkeypatch: pytest.MonkeyPatch) -> None:
    cards, sent = round_burst(svc)  # the round-burst rule flags payments 5, 6 and 7
    with client(svc) as op, client(svc) as viewer, client(svc) as callc:
        log_in(op, "opal")
        log_in(viewer, "vera")
        log_in(callc, "carl")
        for lang, rule in (("ko", "정액 결제 집중"), ("en", "burst of round amounts")):
            page = viewer.get(f"/console/fraud?lang={lang}")
            assert page.status_code == 200 and f'<html lang="{lang}">' in page.text
            ids = re.findall(r'<section class="panel flag" id="flag-([^"]+)"', page.text)
            assert [i.rsplit("-", 1)[0] for i in ids] == sorted(
                [i.rsplit("-", 1)[0] for i in ids], key=int, reverse=True)  # newest first
            assert len(ids) == 3 and page.text.count(rule) == 3
            assert 'class="decide"' not in page.text  # a viewer reads only
        newest = section(page.text, f"flag-{ids[0]}")
        behind = table(newest, "")
        # the flagged payment (the seventh) first, then the six round payments before it
        assert [(r[1], r[4]) for r in behind] == [("7", won(sent[6].amount, "en"))] + [
            (str(i + 1), won(e.amount, "en")) for i, e in enumerate(sent[:6])]
        seventh, sixth, fifth = ids

        page = op.get("/console/fraud?lang=en").text
        assert page.count('class="decide"') == 6
        token = csrf_of(page)
        # a viewer and the call centre are refused by role, a form without its token by CSRF
        for who in (viewer, callc):
            mine = csrf_of(who.get("/console/fraud").text)
            for action in ("confirm", "dismiss"):
                refused = who.post(f"/console/fraud/{seventh}/{action}?lang=en",
                                   data={"reason": "not mine", "csrf": mine})
                assert refused.status_code == 403 and "role needed: operator" in refused.text
        for action in ("confirm", "dismiss"):
            refused = op.post(f"/console/fraud/{seventh}/{action}?lang=en",
                              data={"reason": "forged"})
            assert refused.status_code == 403 and "forged" in refused.text
        assert op.post(f"/console/fraud/{seventh}/confirm",
                       data={"reason": "  ", "csrf": token}).status_code == 400
        assert svc.deny_delta(0)["add"] == {}
        assert audit(svc, "fraud.confirm") == audit(svc, "fraud.dismiss") == []

        done = op.post(f"/console/fraud/{seventh}/confirm?lang=en",
                       data={"reason": "cash-out ring, checked with the shop", "csrf": token})
        assert done.status_code == 200 and f"Flag {seventh} decided." in done.text
        assert svc.deny_delta(0)["add"] == {cards[6]: "fraud:round_burst:confirmed"}
        done = op.post(f"/console/fraud/{sixth}/dismiss?lang=en",
                       data={"reason": "a school's bulk order", "csrf": token})
        assert done.status_code == 200
        assert svc.deny_delta(0)["add"] == {cards[6]: "fraud:round_burst:confirmed"}
        shown = section(done.text, f"flag-{sixth}")
        assert "dismissed · opal" in shown and "a school&#39;s bulk order" in shown
        assert "confirmed (card denied) · opal" in section(done.text, f"flag-{seventh}")

        # a second decision: a clear refusal page, nothing changed
        for flag, action in ((seventh, "dismiss"), (seventh, "confirm"), (sixth, "confirm")):
            again = op.post(f"/console/fraud/{flag}/{action}?lang=en",
                            data={"reason": "again", "csrf": token})
            assert again.status_code == 409
            assert "This flag was decided already" in again.text and "by opal" in again.text
        again = op.post(f"/console/fraud/{seventh}/confirm?lang=ko",
                        data={"reason": "again", "csrf": token})
        assert again.status_code == 409 and "이미 결정되었습니다" in again.text
        assert cards[5] not in svc.deny_delta(0)["add"]
        for bad in ("999999-round_burst", "1-clock", "nonsense"):
            assert op.post(f"/console/fraud/{bad}/confirm",
                           data={"reason": "x", "csrf": token}).status_code == 404

        # the undecided filter and the next page
        left = op.get("/console/fraud?undecided=1").text
        assert re.findall(r'id="flag-([^"]+)"', left) == [fifth]
        older = op.get(f"/console/fraud?before={seventh}").text
        assert re.findall(r'id="flag-([^"]+)"', older) == [sixth, fifth]
        assert op.get("/console/fraud?before=nonsense").status_code == 400
        monkeypatch.setattr(fraud, "PAGE", 2)  # pages of two: the link to the older ones
        first = op.get("/console/fraud").text
        assert re.findall(r'id="flag-([^"]+)"', first) == [seventh, sixth]
        link = re.search(r'<a href="([^"]+)" id="older">', first)
        assert link and re.findall(r'id="flag-([^"]+)"',
                                   op.get(html.unescape(link.group(1))).text) == [fifth]

    confirmed, = audit(svc, "fraud.confirm")
    assert (confirmed.operator, confirmed.object, confirmed.before, confirmed.reason) == (
        "opal", f"fraud_flag:{seventh}", {"decision": None},
        "cash-out ring, checked with the shop")
    assert (confirmed.after["decision"], confirmed.after["card"], confirmed.after["denied"],
            confirmed.after["operator"]) == ("confirmed", cards[6], True, "opal")
    assert confirmed.after["deny_version"] is not None
    dismissed, = audit(svc, "fraud.dismiss")
    assert (dismissed.operator, dismissed.object, dismissed.after["decision"],
            dismissed.after["denied"]) == ("opal", f"fraud_flag:{sixth}", "dismissed", False)


# -- the programme -------------------------------------------------------------------------------


def test_programme_page_points_payouts_and_allowances(svc: CentralLog) -> None:
    october_rides(svc)
    # the bus rule by hand: a weekday's first ride gives its fare (1,500) back, at most
    # 2,900 points a week: A three weekdays -> 2,900; HELD the same; B one weekday -> 1,500
    earned = {A_CARD: 2_900, HELD: 2_900, B_CARD: 1_500}
    fund_points(svc.store, 10_000, "2026-10", at_ms=NOV_2)
    payout(svc.store, "2026-10", NOV_2)
    paid = earned[A_CARD] + earned[B_CARD]  # HELD has no account: held for a later run
    credited, held = sum(earned.values()), earned[HELD]

    # allowances: 10,000 to each of two, one spends 3,500 and the other all; the rest expires
    with svc.store.tx() as tx:
        accounts.link(tx, "alice", "c-alice")
        accounts.link(tx, "bob", "c-bob")
    allowances.fund(svc.store, "youth", 100_000, "f1")
    allowances.issue(svc.store, "youth", "recipient\nalice\nbob\n", 10_000, "2026-11-30",
                     "2026-11")
    spend_allowance(svc.store, "alice", "youth", 3_500, "pay-1")
    spend_allowance(svc.store, "bob", "youth", 10_000, "pay-2")
    allowances.expire(svc.store, "2026-12-01")
    issued, spent = 2 * 10_000, 3_500 + 10_000

    with client(svc) as op, client(svc) as viewer:
        log_in(op, "opal")
        log_in(viewer, "vera")
        for lang in ("ko", "en"):
            page = viewer.get(f"/console/programme?year=2026&lang={lang}")
            assert page.status_code == 200 and f'<html lang="{lang}">' in page.text
            text = page.text
            for cell, figure in (("budget-total", SHIPPED_BUDGET), ("budget-spent", paid),
                                 ("budget-committed", held),
                                 ("budget-left", SHIPPED_BUDGET - paid - held)):
                assert f'<dd id="{cell}">{pts(figure, lang)}</dd>' in text, cell
            october, = table(text, "months")
            assert october[:5] == ["2026-10", pts(credited, lang), pts(held, lang),
                                   pts(paid, lang), pts(held, lang)]
            assert october[5].startswith("카드 2장" if lang == "ko" else "2 card(s)")
            run, = table(text, "payouts")
            assert run[:5] == ["2026-10", "2", pts(paid, lang), f"2 · {pts(paid, lang)}",
                               f"1 · {pts(held, lang)}"]
            assert run[6] == "points-2026-10.csv" and 'class="download"' not in text
            rows = table(text, "allowances")
            assert [sum(int(re.sub(r"\D", "", r[i])) for r in rows) for i in (2, 3, 4)] == [
                issued, spent, issued - spent]
            november = next(r for r in rows if r[1] == "2026-11")
            assert november[:3] == ["youth", "2026-11", won(issued, lang)]
            assert "No settlements this year." in text or "이 해의 정산이 없습니다." in text
        assert "No payout run this year." in viewer.get(
            "/console/programme?year=2025&lang=en").text
        assert viewer.get("/console/programme?year=20x6").status_code == 400

        # the settlement file names cards: an operator downloads it, a viewer may not
        assert viewer.get("/console/programme/payouts/2026-10/file").status_code == 403
        page = op.get("/console/programme?year=2026").text
        link, = hrefs(page, "download")
        got = op.get(link)
        assert got.status_code == 200
        assert got.headers["content-disposition"] == 'attachment; filename="points-2026-10.csv"'
        assert got.headers["cache-control"] == "no-store"
        assert list(csv.reader(io.StringIO(got.content.decode("utf-8")))) == [
            ["card_token", "category", "month", "bus", "local_food", "refund", "campaign",
             "total"],
            *sorted([c, "", "2026-10", str(p), "0", "0", "0", str(p)]
                    for c, p in earned.items() if c != HELD)]
        assert op.get("/console/programme/payouts/2026-09/file").status_code == 404
        assert op.get("/console/programme/payouts/2026-9/file").status_code == 400


# -- enrolment and config ------------------------------------------------------------------------


@pytest.fixture
def data_svc(console_svc: CentralLog) -> CentralLog:  # noqa: F811
    """The console's service (its data folder's operator key signs configs) with two
    terminals."""
    for tid in ("T-1", "T-2"):
        console_svc.add_terminal(tid, bytes.fromhex(public_hex(Ed25519PrivateKey.generate())))
    return console_svc


def test_enrolment_code_shown_once_and_config_published(
        data_svc: CentralLog, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    svc = data_svc
    caplog.set_level(logging.DEBUG)
    toml = dumps(DEFAULT.replace("terminal", id="T-1", role="till", place="M1"))
    key = load_operator_key(svc.data_dir)  # type: ignore[arg-type]
    signed = bundles.make(key, "T-2", 5, dumps(DEFAULT.replace(
        "terminal", id="T-2", role="validator", place="R1"))).decode("utf-8")
    with client(svc) as op, client(svc) as viewer:
        log_in(op, "opal")
        log_in(viewer, "vera")
        for lang, none in (("ko", "배포 없음"), ("en", "none published")):
            page = viewer.get(f"/console/enrol?lang={lang}")
            assert page.status_code == 200 and f'<html lang="{lang}">' in page.text
            assert table(page.text, "versions") == [[none, "2", "T-1, T-2"]]
            assert 'id="code-form"' not in page.text and 'id="config-form"' not in page.text
        # refused: a viewer by role, a form without its token by CSRF
        mine = csrf_of(viewer.get("/console/enrol").text)
        for path, form in (("/console/enrol/code", {"role": "till"}),
                           ("/console/enrol/config", {"text": toml, "sign_for": "T-1"})):
            refused = viewer.post(path + "?lang=en", data={**form, "csrf": mine})
            assert refused.status_code == 403 and "role needed: operator" in refused.text
            assert op.post(path, data=form).status_code == 403
        with svc.store.tx(write=False) as tx:
            assert tx.all("SELECT * FROM enroll_codes") == []
            assert tx.all("SELECT * FROM configs") == []

        page = op.get("/console/enrol?lang=en").text
        token = csrf_of(page)
        answer = op.post("/console/enrol/code?lang=en",
                         data={"csrf": token, "terminal_id": "", "role": "till",
                               "place": "M7", "ttl_hours": "72", "reason": "new shop"})
        assert answer.status_code == 200 and not answer.history  # the answer itself
        assert answer.headers["cache-control"] == "no-store"
        code = re.search(r'<code id="code" class="mono">([^<]+)</code>', answer.text)
        assert code, answer.text[:2000]
        code_text = code.group(1)
        assert re.fullmatch(r"[0-9A-Z]{4}(-[0-9A-Z]{4}){3}", code_text)
        assert answer.text.count(code_text) == 1 and code_text not in str(answer.url)
        with svc.store.tx(write=False) as tx:
            row = tx.one("SELECT role, place, issued_ms, expires_ms FROM enroll_codes "
                         "WHERE code_id = ?", (provision.code_id(code_text),))
        assert row is not None and (row[0], row[1]) == ("till", "M7")
        assert int(row[3]) - int(row[2]) == 72 * 3_600_000
        assert code_text not in op.get("/console/enrol").text
        assert code_text not in op.get("/console/audit").text
        refused = op.post("/console/enrol/code?lang=en",
                          data={"csrf": token, "role": "bus", "ttl_hours": "24"})
        assert refused.status_code == 400

        # publish: a terminal.toml signed here, then a signed bundle uploaded as a file
        done = op.post("/console/enrol/config?lang=en",
                       data={"csrf": token, "text": toml, "sign_for": "T-1",
                             "reason": "first config"})
        assert done.status_code == 200 and "Config version 1 published for terminal T-1" \
            in done.text
        bundles.verify(svc.latest_config("T-1")["body"].encode("utf-8"), key.public_key(),
                       "T-1", 0)  # newer than none: the terminal would apply it
        done = op.post("/console/enrol/config?lang=en", data={"csrf": token},
                       files={"file": ("t2.bundle", signed.encode("utf-8"), "text/plain")})
        assert done.status_code == 200 and "version 5 published for terminal T-2" in done.text
        assert table(done.text, "versions") == [["v1", "1", "T-1"], ["v5", "1", "T-2"]]
        # refused: not newer, for a terminal not registered, nothing to publish
        again = op.post("/console/enrol/config?lang=en", data={"csrf": token},
                        files={"file": ("t2.bundle", signed.encode("utf-8"), "text/plain")})
        assert again.status_code == 400 and "not newer" in again.text
        unknown = op.post("/console/enrol/config?lang=en",
                          data={"csrf": token, "text": toml, "sign_for": "T-9"})
        assert unknown.status_code == 404 and "No terminal T-9" in unknown.text
        assert op.post("/console/enrol/config", data={"csrf": token, "text": " "}
                       ).status_code == 400
        assert svc.latest_config("T-2")["version"] == 5

    # the audit log names the operator and never the code; neither does the server's log
    issued, = audit(svc, "enrolment.issue")
    assert (issued.operator, issued.reason, issued.after["role"], issued.after["place"]) == (
        "opal", "new shop", "till", "M7")
    assert issued.object == f"enrolment_code:{provision.code_id(code_text)}"
    every = json.dumps([r.as_dict() for r in operators.audit_rows(svc.store)], default=str)
    assert code_text not in every and provision.normalize_code(code_text) not in every
    assert code_text not in caplog.text and provision.normalize_code(code_text) \
        not in caplog.text
    published = audit(svc, "config.publish")
    assert sorted((r.operator, r.object, r.before, r.after["version"]) for r in published) == [
        ("opal", "terminal:T-1", {"version": 0}, 1), ("opal", "terminal:T-2", {"version": 0}, 5)]
    # and the command prints the same log
    out = CliRunner().invoke(cli, ["central", "audit-log", "--json", "--db", svc.store.url,
                                   "--data", str(tmp_path / "data")])
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in out.output.splitlines()]
    assert [(r["operator"], r["action"]) for r in lines
            if r["action"].startswith(("enrolment.", "config."))] == [
        ("opal", "enrolment.issue"), ("opal", "config.publish"), ("opal", "config.publish")]
    assert code_text not in out.output
