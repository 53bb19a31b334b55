"""Every text the kiosk shows, in Korean and English.

One table, so that the overflow tests can walk all of it and the font check can ask for
every glyph before the first frame. Decline reasons come from :mod:`terminal.risk`
(``Reason.message`` / ``Reason.message_ko``) and are not repeated here.
"""

from __future__ import annotations

from typing import Literal

from terminal.risk import Reason

Language = Literal["ko", "en"]
LANGUAGES: tuple[Language, ...] = ("ko", "en")

#: key -> (English, Korean). ``{n}``-style fields are filled by :func:`tr`.
STRINGS: dict[str, tuple[str, str]] = {
    "tap_card": ("Tap card", "카드를 대주세요"),
    "fare": ("Fare {amount}", "요금 {amount}"),
    "reading": ("Reading card…", "카드 읽는 중…"),
    "keep_card": ("Keep the card on the reader", "카드를 떼지 마세요"),
    "approved": ("Approved", "승인되었습니다"),
    "declined": ("Declined", "거절되었습니다"),
    "already_paid": ("Already paid", "이미 결제되었습니다"),
    "claim_tap_card": ("Tap your card to collect the points", "카드를 대 주세요"),
    "claim_tap_card_sub": ("Tap the card that should get the points. Nothing is charged.",
                           "포인트를 받을 카드를 대 주세요. 결제되지 않습니다."),
    "points_collected": ("Points collected", "포인트가 적립됩니다"),
    "nothing_charged": ("Nothing charged", "결제되지 않았습니다"),
    "points_claim": ("{points} points", "{points} 포인트"),
    "points_unconfirmed": ("Up to {points} points, to be confirmed",
                           "최대 {points} 포인트 (확인 예정)"),
    "already_paid_sub": ("This card was charged a moment ago. No second fare.",
                         "방금 결제된 카드입니다. 다시 결제되지 않았습니다."),
    "refunded": ("Refunded", "환불되었습니다"),
    "sale_amount": ("Amount {amount}", "금액 {amount}"),
    "balance": ("Balance {amount}", "잔액 {amount}"),
    "points_now": ("+{points} points", "+{points} 포인트 적립"),
    "points_week": ("{points} points this week", "이번 주 {points} 포인트"),
    "offline": ("Offline", "오프라인"),
    "online": ("Online", "온라인"),
    "waiting_sync": ("{n} waiting to sync", "동기화 대기 {n}건"),
    "all_synced": ("All synced", "동기화 완료"),
    "ledger_fault": ("Needs service", "점검 필요"),
    "reader_fault": ("Reader problem", "리더기 오류"),
    # a receipt that did not print (kiosk_ui.model.ReceiptFault): the payment stands
    "receipt_paper_out": ("Receipt not printed: out of paper. Reprint: entry {seq}",
                          "영수증 미출력: 용지 없음. 재출력: {seq}번"),
    "receipt_offline": ("Receipt not printed: printer offline. Reprint: entry {seq}",
                        "영수증 미출력: 프린터 오프라인. 재출력: {seq}번"),
    "receipt_missing": ("Receipt not printed: no printer. Reprint: entry {seq}",
                        "영수증 미출력: 프린터 없음. 재출력: {seq}번"),
    "receipt_fault": ("Receipt not printed: printer fault. Reprint: entry {seq}",
                      "영수증 미출력: 프린터 오류. 재출력: {seq}번"),
    # payments go on up to risk.unknown_clock_amount; the technician sees that the clock
    # needs setting (selftest says why)
    "clock_unknown": ("Clock not set", "시계 미확인"),
    "route": ("Bus {place}", "{place}번 버스"),
    # out of service (kiosk_ui.service): the rider's words in both languages, then the cause
    "out_of_service": ("Out of service, please use another door or reader",
                       "이 단말기는 사용할 수 없습니다"),
    "for_technician": ("For the technician", "점검 안내"),
    "cause_key_missing": ("Key file missing or unusable", "키 파일이 없거나 쓸 수 없습니다"),
    "cause_home_read_only": ("Home folder is read-only", "홈 폴더가 읽기 전용입니다"),
    "cause_ledger_broken": ("Ledger needs service", "원장 점검이 필요합니다"),
    "cause_exposure_reached": ("Offline limit reached: sync needed",
                               "오프라인 한도 도달: 동기화 필요"),
    "cause_clock_unknown": ("Clock not set and its offline allowance used: sync needed",
                            "시계 미확인, 허용 한도 소진: 동기화 필요"),
    "cause_no_reader": ("No reader or scanner works", "작동하는 리더기가 없습니다"),
    "device_card": ("Card reader", "카드 리더기"),
    "device_scanner": ("Scanner", "스캐너"),
    "device_missing": ("{device} missing: {name}", "{device} 없음: {name}"),
    "show_code": ("Show your payment code to the scanner", "결제 코드를 스캐너에 보여주세요"),
    "lang_button": ("한국어", "English"),
    "amount_prompt": ("Enter amount", "금액을 입력하세요"),
    "pay_card": ("Card", "카드"),
    "pay_qr": ("QR", "QR"),
    "clear": ("Clear", "지움"),
    "delete": ("Del", "←"),
    "cancel": ("Cancel", "취소"),
    "ok": ("OK", "확인"),
    "back": ("Back", "뒤로"),
    "menu_refund": ("Refund", "환불"),
    "menu_today": ("Today", "오늘 거래"),
    "wait_card_hint": ("Hold the card on the reader", "카드를 리더기에 대주세요"),
    "qr_hint": ("Scan with your local-currency app", "지역화폐 앱으로 스캔하세요"),
    "qr_or_scan": ("or show your payment code to the scanner",
                   "또는 결제 코드를 스캐너에 보여주세요"),
    # the till could not reach central to confirm an app payment (issue #17): pay offline
    "qr_no_network": ("No network: app payment unavailable. Show your wallet QR or use a card",
                      "네트워크 없음: 앱 결제 불가. 지갑 QR을 보여주시거나 카드를 사용하세요"),
    "enter_amount_first": ("Enter the amount first", "먼저 금액을 입력하세요"),
    # the keypad refused a digit: one sale may be at most risk.max_amount offline
    "over_max": ("At most {amount} per sale", "1회 최대 {amount}"),
    "refund_pick": ("Choose a payment to refund", "환불할 결제를 고르세요"),
    "refund_none": ("No payments today that can be refunded",
                    "오늘 환불할 수 있는 결제가 없습니다"),
    "refund_of": ("Refund of #{seq}, {time}, paid {amount}",
                  "#{seq} 환불, {time}, 결제 {amount}"),
    "refund_left": ("At most {amount}", "최대 {amount}"),
    "refund_go": ("Refund", "환불하기"),
    "today_title": ("Today's payments", "오늘의 거래"),
    "today_none": ("No payments yet today", "오늘 거래가 아직 없습니다"),
    "today_totals": ("{count} payments  Paid {paid}  Refunded {refunded}  Net {net}",
                     "결제 {count}건  결제액 {paid}  환불 {refunded}  합계 {net}"),
    "kind_payment": ("Payment", "결제"),
    "kind_refund": ("Refund", "환불"),
    "kind_void": ("Void", "취소"),
    "page": ("{page}/{pages}", "{page}/{pages}"),
    "prev": ("Prev", "이전"),
    "next": ("Next", "다음"),
    "more_rows": ("and {n} earlier", "이전 {n}건 더 있음"),
    "internal_error": ("Terminal error: call for service", "단말기 오류: 점검이 필요합니다"),
    "demo_keys": ("Demo: F1–F4 riders, F5 blocked card, F6 bad code",
                  "데모: F1–F4 승객, F5 정지 카드, F6 잘못된 코드"),
    "till": ("Till", "계산대"),
    # clerks (kiosk_ui.clerks): sign-in, the supervisor's PIN for refunds, the lockout
    "sign_in_title": ("Sign in: touch your name", "로그인: 이름을 누르세요"),
    "role_supervisor": ("supervisor", "관리자"),
    "pin_for": ("PIN for {name}", "{name} 비밀번호"),
    "pin_supervisor": ("Refund: a supervisor's PIN", "환불: 관리자 비밀번호"),
    "pin_wrong": ("Wrong PIN", "비밀번호가 틀렸습니다"),
    "pin_locked": ("Too many wrong PINs: try again in {seconds} s",
                   "비밀번호 오류가 많습니다: {seconds}초 후 다시"),
    "sign_out": ("Sign out {name}", "로그아웃 {name}"),
    # an approved payment's e-receipt as a QR (kiosk_ui.ereceipt, terminal.receipt)
    "e_receipt": ("E-receipt", "전자영수증"),
    "e_receipt_title": ("E-receipt", "전자영수증"),
    "e_receipt_entry": ("Entry {seq}", "거래번호 {seq}"),
    "e_receipt_hint": ("Scan with your phone to keep a signed receipt",
                       "휴대폰으로 스캔하면 서명된 영수증이 저장됩니다"),
    # closing the day (terminal.zreport); the report's own lines come from there
    "close_day": ("Close day", "마감"),
    "z_making": ("Closing the day…", "마감하는 중…"),
    # rider categories beside a validator's fare; one the config adds shows its own name
    "rider_adult": ("Adult", "일반"),
    "rider_youth": ("Youth", "청소년"),
    "rider_child": ("Child", "어린이"),
    # the cash-receipt form (kiosk_ui.cash_receipt, 현금영수증)
    "cr_button": ("Cash receipt", "현금영수증"),
    "cr_title": ("Cash receipt: payment {seq}, {amount}", "현금영수증: {seq}번 {amount}"),
    "cr_hint": ("Phone, card or BRN", "휴대폰·카드·사업자번호"),
    "cr_income": ("Income deduction", "소득공제"),
    "cr_expense": ("Expense proof", "지출증빙"),
    "cr_go": ("Request", "발급 요청"),
    "cr_busy": ("Recording…", "기록 중…"),
    "cr_done": ("Cash receipt recorded", "현금영수증 요청이 기록되었습니다"),
    "cr_bad_income": ("Mobile number (010, 10-11 digits) or card (13-19 digits)",
                      "휴대폰 번호(010, 10~11자리) 또는 카드(13~19자리)"),
    "cr_bad_expense": ("Business number (10 digits) or card (13-19 digits)",
                       "사업자번호(10자리) 또는 카드(13~19자리)"),
    "cr_brn_check": ("Business number: check digit wrong", "사업자번호가 올바르지 않습니다"),
    "cr_invalid": ("Number not valid", "번호가 올바르지 않습니다"),
    "cr_unknown_entry": ("No such payment here", "이 단말기의 결제가 아닙니다"),
    "cr_not_a_payment": ("Not a payment", "결제 건이 아닙니다"),
    "cr_refunded": ("Refunded or voided: no cash receipt", "환불·취소된 결제입니다"),
    "cr_already_requested": ("This payment already has one", "이미 요청된 결제입니다"),
    "cr_not_a_till": ("Only at a till", "가맹점 단말기에서만 가능합니다"),
    "cr_ledger_broken": ("Not recorded: needs service", "기록 실패: 점검 필요"),
    # the online QR payment's code no longer shown (kiosk_ui.engine, OnlineQrDown notice)
    "qr_expired": ("This code has expired: ask for a new one",
                   "시간이 지났습니다. 새 QR 코드를 요청하세요"),
    "qr_checking": ("No network: checking whether the app paid. Do not take another payment",
                    "네트워크 없음: 앱 결제 여부를 확인 중입니다. 다른 결제를 받지 마세요"),
}


def tr(language: Language, key: str, **fields: object) -> str:
    """The text for ``key`` in ``language``, with ``fields`` filled in."""
    en, ko = STRINGS[key]
    text = ko if language == "ko" else en
    return text.format(**fields) if fields else text


def won(amount: int, language: Language) -> str:
    """Integer won as people read it: ``1,500원`` / ``1,500 won`` (KRW has no minor unit)."""
    return f"{amount:,}원" if language == "ko" else f"{amount:,} won"


def rider_text(rider: str, language: Language) -> str:
    """The label of a rider category: ours for adult, youth and child, else its name."""
    key = f"rider_{rider}"
    return tr(language, key) if key in STRINGS else rider


def reason_text(reason: Reason, language: Language) -> str:
    return reason.message_ko if language == "ko" else reason.message


def all_texts(language: Language) -> list[str]:
    """Every fixed text and every decline reason, for glyph checks (fields left as words)."""
    sample = {"amount": won(1_234_567, language), "n": 12345, "points": 2900, "place": "85",
              "seq": 123456, "time": "23:59", "count": 999, "paid": won(99_999_999, language),
              "refunded": won(9_999_999, language), "net": won(90_000_000, language),
              "page": 10, "pages": 10, "device": "카드 리더기" if language == "ko"
              else "Card reader", "name": "serial:/dev/ttyACM0", "seconds": 900}
    texts = [tr(language, k, **sample) for k in STRINGS]
    texts += [reason_text(r, language) for r in Reason]
    return texts
