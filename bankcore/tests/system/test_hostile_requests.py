"""Hostile requests, made permanent: what an attacker or a broken client sends to the partner API and
the back office, one table row per request, and the answer each must get.

Ad-hoc probing (about 300 requests, never committed) found 500s that are fixed now; this corpus
keeps them fixed. An API case names its status: a 4xx must be ``application/problem+json`` whose
``status`` is the HTTP status and whose ``code`` is a non-empty string (the exact code where it is
stable), a 405 names what is allowed; a benign oddity answers its documented 2xx in JSON. Every
body is ASCII with no traceback, nothing is logged with one, and nothing moves (``world_snapshot``
after every request: balances, entries, legs, transfers, approvals, audit events), except what a
case says: a refusal recorded on one aborted transfer, a failed login's audit event. Every
changelist of the back office answers hostile query strings with 200, a 302 to ``?e=1`` or a 400,
never a 5xx, and moves nothing.

The tables share two worlds (a world per row would cost ~0.4 s). A row that exposes a
fault not fixed yet is marked with it (``FAULTS``, a strict xfail): the marked rows of a test run
together in one world of their own, which xfails while they fail and fails as soon as one of them
passes, until its mark is removed (``KNOWN_FAULTS``).
"""

from __future__ import annotations

import base64
import json
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from _pytest.mark import ParameterSet
from django.http.request import HttpHeaders

from bankcore.testing.books import world_snapshot
from bankcore.testing.hostile import KNOWN_FAULTS, Tracebacks, corpus, fault_of, faults_fixed, filled

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    # The naive datetimes hostile queries name (Django warns, then reads them in TIME_ZONE).
    pytest.mark.filterwarnings("ignore:DateTimeField .* received a naive datetime:RuntimeWarning"),
]

PROBLEM = "application/problem+json"
JSON = "application/json"
TOKEN = "/api/v1/auth/token/"
REFRESH = "/api/v1/auth/token/refresh/"
ACCOUNTS = "/api/v1/accounts/"
ENTRIES = "/api/v1/accounts/<a1>/entries/"
TRANSFERS = "/api/v1/transfers/"
# Partner A may reverse <tx_aa> (a1 → a2): a row posting there must be refused for its body or its
# headers alone. It may not reverse <tx_ab> (a1 → b1, B's money now): 403 once the body is valid.
REVERSE_OWN = "/api/v1/transfers/<tx_aa>/reverse/"
REVERSE_FOREIGN = "/api/v1/transfers/<tx_ab>/reverse/"
LIMIT = 64 * 1024  # API_MAX_BODY_BYTES

# The faults the corpus exposes that are not fixed yet: what breaks. The twelve it found when it was
# written (amounts of 27+ digits, year-1 filters and cursors, an RFC 2231 charset, a far expiry, a
# long X-Real-IP, lone surrogates in the audit file, the schema views' errors, falsy reversal bodies,
# admin regex and year-1 lookups, date hierarchies without time zone tables) are fixed; a new one
# goes here as "name": "what breaks", and its rows get fault="name".
FAULTS: dict[str, str] = {}


def xfail(fault: str) -> list[pytest.MarkDecorator]:
    """The mark of a row that exposes ``fault``, a key of FAULTS; none for ``""``."""
    return [pytest.mark.xfail(strict=True, reason=f"{fault}: {FAULTS[fault]}")] if fault else []


@dataclass(frozen=True)
class Hostile:
    """One request, as sent, and the answer it must get. ``path``, ``body`` and header values may
    name the world's things (``hostile_world``): account numbers ``<a1>`` ``<a2>`` ``<b1>`` ``<c2>``,
    ``<n99>`` (well formed, of a ledger this bank does not have), ``<missing2>`` (well formed, of
    db2, nobody's), transfers ``<tx_aa>`` ``<tx_ab>``, and tokens. A POST that moves money gets an
    ``Idempotency-Key`` of its own unless ``headers`` names one (``None``: no such header)."""

    method: str
    path: str
    status: int
    code: str | None = None  # None: any code, where "a 4xx problem" is all that can be said
    body: bytes = b""
    content_type: str = JSON  # "": none
    headers: dict[str, str | None] = field(default_factory=dict)
    client: str = "a"  # a, b (partners), s (staff), anon
    # A refusal found once the transfer was accepted: one aborted transfer and its audit events.
    recorded: bool = False
    login_failed: bool = False  # one audit event, user.login_failed
    pad_to: int = 0  # bytes the body is padded to with spaces, once its placeholders are filled


def case(
    case_id: str, method: str, path: str, status: int, code: str | None = None, *, fault: str = "", **fields: Any
) -> ParameterSet:
    return pytest.param(Hostile(method, path, status, code, **fields), id=case_id, marks=xfail(fault))


def get(case_id: str, path: str, status: int, code: str | None = None, **fields: Any) -> ParameterSet:
    return case(case_id, "GET", path, status, code, **fields)


def post(case_id: str, status: int, code: str | None = None, *, body: bytes, **fields: Any) -> ParameterSet:
    return case(case_id, "POST", TRANSFERS, status, code, body=body, **fields)


def transfer(**fields: str | None) -> bytes:
    """A transfer body as raw JSON text: A's a1 to c2, "1.00" (valid: it would move money), with each
    field named replaced by the raw JSON text given (``None`` leaves it out)."""
    values: dict[str, str | None] = {"source_account": '"<a1>"', "destination_account": '"<c2>"', "amount": '"1.00"'}
    values.update(fields)
    return ("{" + ", ".join(f'"{name}": {raw}' for name, raw in values.items() if raw is not None) + "}").encode()


def amount(case_id: str, raw: str, status: int = 400, code: str = "invalid_amount", **fields: Any) -> ParameterSet:
    return post(case_id, status, code, body=transfer(amount=raw), **fields)


def source(case_id: str, raw: str, status: int = 400, code: str = "invalid_account_number", **kw: Any) -> ParameterSet:
    return post(case_id, status, code, body=transfer(source_account=raw), **kw)


def reference(case_id: str, raw: str, code: str, status: int = 400, **fields: Any) -> ParameterSet:
    return post(case_id, status, code, body=transfer(reference=raw), **fields)


def extra(case_id: str, raw: bytes, **fields: Any) -> ParameterSet:
    """A valid transfer body and ``raw`` (JSON text of members) after its last member."""
    return post(case_id, 400, "unknown_field", body=transfer()[:-1] + b", " + raw + b"}", **fields)


ZERO = transfer(amount='"0"')  # refused for its amount alone: 400 invalid_amount once it is parsed
POOR = '"5000.00"'  # more than a1 has: refused once the transfer is accepted, and recorded
A2, B1, MISSING = '"<a2>"', '"<b1>"', '"<missing2>"'
LARGE = '"10000.01"'  # above APPROVAL_THRESHOLD
EMOJI = '"\U0001f4b8"'
EXPIRED = "<token_expired>"


def media(
    case_id: str, content_type: str, status: int, code: str | None, body: bytes = ZERO, **kw: Any
) -> ParameterSet:
    return post(case_id, status, code, body=body, content_type=content_type, **kw)


def key(case_id: str, value: str | None, code: str, path: str = TRANSFERS, body: bytes = transfer()) -> ParameterSet:
    return case(case_id, "POST", path, 400, code, body=body, headers={"Idempotency-Key": value})


def auth(case_id: str, header: str | None, status: int, code: str, **fields: Any) -> ParameterSet:
    headers = {} if header is None else {"Authorization": header}
    return get(case_id, ACCOUNTS, status, code, client="anon", headers=headers, **fields)


def bearer(case_id: str, token: str, **fields: Any) -> ParameterSet:
    return auth(case_id, f"Bearer {token}", 401, "token_not_valid", **fields)


def bearing(token: str) -> dict[str, str | None]:
    return {"Authorization": f"Bearer {token}"}


def login(case_id: str, body: bytes, status: int, code: str | None = None, **fields: Any) -> ParameterSet:
    return case(case_id, "POST", TOKEN, status, code, body=body, client="anon", **fields)


def wrong_login(case_id: str, body: bytes, **fields: Any) -> ParameterSet:
    """A login that reaches authentication: refused like any wrong one, and recorded as one."""
    return login(case_id, body, 401, "invalid_credentials", login_failed=True, **fields)


def refresh(case_id: str, body: bytes, status: int, code: str) -> ParameterSet:
    return case(case_id, "POST", REFRESH, status, code, body=body, client="anon")


def reverse(case_id: str, body: bytes, status: int, code: str, path: str = REVERSE_OWN, **fields: Any) -> ParameterSet:
    return case(case_id, "POST", path, status, code, body=body, **fields)


def cursor(text: str) -> str:
    """A page cursor as DRF's CursorPagination writes one (base64 of a query string), crafted."""
    return quote(base64.b64encode(text.encode("latin-1")).decode())


def since(case_id: str, value: str, status: int, code: str | None = None, **fields: Any) -> ParameterSet:
    """The transfers list ``created_from`` ``value``."""
    return get(case_id, f"{TRANSFERS}?created_from={quote(value)}", status, code, **fields)


# --- the API corpus ------------------------------------------------------------------------------

JSON_BODIES = [
    post("empty", 400, "validation_error", body=b""),
    post("whitespace-only", 400, "malformed_json", body=b"   \n\t "),
    post("truncated-object", 400, "malformed_json", body=b'{"source_account": "<a1>", "amount": '),
    post("trailing-comma", 400, "malformed_json", body=transfer()[:-1] + b",}"),
    post("two-documents", 400, "malformed_json", body=transfer() + transfer()),
    post("utf8-bom", 400, "malformed_json", body=b"\xef\xbb\xbf" + transfer()),
    post("raw-nul-in-a-string", 400, "malformed_json", body=transfer(reference='"a\x00b"')),
    post("array", 400, "validation_error", body=b"[]"),
    post("string", 400, "validation_error", body=b'"pay me"'),
    post("null", 400, "validation_error", body=b"null"),
    # A key given twice is refused: readers differ on which one counts (Python's keeps the last).
    post("duplicate-key-last-foreign", 400, "duplicate_field", body=transfer()[:-1] + b', "source_account": "<b1>"}'),
    post("duplicate-key-amount", 400, "duplicate_field", body=transfer()[:-1] + b', "amount": "2.00"}'),
    post("duplicate-key-nested", 400, "duplicate_field", body=transfer(reference='{"a": 1, "a": 2}')),
    post("nested-arrays-10000", 400, "malformed_json", body=b"[" * 10_000 + b"]" * 10_000),
    post("nested-in-a-field-5000", 400, "malformed_json", body=transfer(reference="[" * 5000 + "]" * 5000)),
    post("nested-in-a-field-100", 400, "validation_error", body=transfer(reference="[" * 100 + "]" * 100)),
    post("nan-literal", 400, "malformed_json", body=transfer(amount="NaN")),
    post("infinity-literal", 400, "malformed_json", body=transfer(amount="Infinity")),
    # Past int()'s 4300-digit limit: a ValueError inside the parser, not a JSONDecodeError.
    post("integer-of-60000-digits", 400, "malformed_json", body=transfer(amount="1" + "0" * 60_000)),
    post("float-of-5000-digits", 400, "invalid_amount", body=transfer(amount="1." + "0" * 5000)),
]

AMOUNTS = [
    amount("json-integer", "100"),
    amount("json-exponent", "1e3"),
    amount("exponent", '"1e3"'),
    amount("hex", '"0x10"'),
    amount("arabic-indic-digits", '"\u0661\u0662\u0663"'),
    amount("fullwidth-digits", '"\uff11\uff12"'),
    amount("three-places", '"12.345"'),
    amount("zero", '"0"'),
    amount("negative", '"-5.00"'),
    amount("empty", '""'),
    amount("spaces-only", '"   "'),
    # Nothing is trimmed: what was sent is exactly what is booked, or it is refused.
    amount("surrounding-spaces", '" 12 "'),
    amount("trailing-newline", r'"1.00\n"'),
    amount("leading-tab", r'"\t1.00"'),
    amount("thousands-comma", '"1,000.00"'),
    amount("zero-width-space", '"1.00\u200b"'),
    amount("nan", '"NaN"'),
    amount("26-digits", '"' + "9" * 26 + '"'),
    amount("27-digits", '"' + "9" * 27 + '"'),
    amount("40-digits", '"' + "9" * 40 + '"'),
    amount("41-digits", '"' + "9" * 41 + '"'),
    amount("lone-surrogate", r'"\ud800"'),
    amount("above-the-maximum", '"50000.01"', 422, "amount_above_maximum"),
    amount("more-than-available", POOR, 422, "insufficient_funds", recorded=True),
]

FIELDS = [
    extra("unknown-empty-name", b'"": 1'),
    extra("unknown-long-name", b'"' + b"k" * 10_000 + b'": 1'),
    extra("unknown-nul-name", rb'"\u0000": 1'),
    extra("unknown-emoji-name", '"\U0001f4b8": 1'.encode()),
    extra("unknown-1000", b", ".join(b'"f%d": 1' % i for i in range(1000))),
    extra("unknown-surrogate-name", rb'"\ud800": 1'),
    post("mass-assign-status", 400, "unknown_field", body=transfer(status='"completed"')),
    post("capitalised-name", 400, "unknown_field", body=transfer(amount=None, Amount='"1.00"')),
    post("missing-accounts", 400, "validation_error", body=transfer(source_account=None, destination_account=None)),
    # account numbers
    source("source-33-digits", '"' + "1" * 33 + '"'),
    source("source-letters", '"01ABCDEFGHIJ00"'),
    source("source-bad-check-digits", '"01000000000100"'),
    source("source-arabic-indic", '"' + "\u0660" * 14 + '"'),
    source("source-nul", r'"<a1>\u0000"'),
    source("source-rtl-mark", '"\u200f<a1>"'),
    source("source-sql", "\"1' OR '1'='1\""),
    source("source-lone-surrogate", r'"\udfff"'),
    source("source-of-another-partner", '"<b1>"', 404, "account_not_found"),
    post("source-of-nobody", 404, "account_not_found", body=transfer(source_account='"<c2>"', destination_account=A2)),
    post("source-of-no-ledger", 404, "account_not_found", body=transfer(source_account='"<n99>"')),
    post("destination-of-no-ledger", 404, "account_not_found", body=transfer(destination_account='"<n99>"')),
    # Found missing in its ledger once the debit is held: recorded.
    post("destination-missing", 404, "account_not_found", body=transfer(destination_account=MISSING), recorded=True),
    # The API takes a number as its 14 digits: spaces are for people, at the back office.
    post("same-account-spaced", 400, "invalid_account_number", body=transfer(destination_account='"<a1 spaced>"')),
    # currencies
    post("currency-number", 400, "invalid_currency", body=transfer(currency="156")),
    post("currency-null", 400, "validation_error", body=transfer(currency="null")),
    post("currency-fullwidth", 400, "invalid_currency", body=transfer(currency='"\uff23\uff2e\uff39"')),
    post("currency-trailing-newline", 400, "invalid_currency", body=transfer(currency=r'"CNY\n"')),
    post("currency-of-another-account", 422, "currency_mismatch", body=transfer(currency='"USD"'), recorded=True),
    # references
    reference("reference-escape-sequence", r'"\u001b[31mred"', "invalid_reference"),
    reference("reference-lone-surrogate", r'"\ud800"', "validation_error"),
    reference("reference-reversed-pair", r'"\udc00\ud800"', "validation_error"),
    # Printable text is kept as sent: with too large an amount, the refusal is recorded with it.
    post("reference-emoji", 422, "insufficient_funds", body=transfer(amount=POOR, reference=EMOJI), recorded=True),
]

FORM_TYPE = "application/x-www-form-urlencoded"
JSON_LATIN_1 = f"{JSON}; charset=latin-1"
FORM = b"amount=1.00&source_account=<a1>"
MULTIPART = b'--xx\r\nContent-Disposition: form-data; name="amount"\r\n\r\n1.00\r\n--xx--\r\n'
# JSON with bytes UTF-8 has no place for: a Latin-1 é, an overlong "/", an encoded surrogate.
LATIN_1, OVERLONG, SURROGATE_BYTES = (
    transfer().replace(b"1.00", raw) for raw in (b"\xe9", b"\xc0\xaf", b"\xed\xa0\x80")
)

UTF_16 = ZERO.decode().encode("utf-16")

MEDIA_TYPES = [
    media("none", "", 415, "unsupported_media_type"),
    media("text-plain", "text/plain", 415, "unsupported_media_type"),
    media("form", FORM_TYPE, 415, "unsupported_media_type", FORM),
    media("multipart", "multipart/form-data; boundary=xx", 415, "unsupported_media_type", MULTIPART),
    media("multipart-without-boundary", "multipart/form-data", 415, "unsupported_media_type", b"amount=1.00"),
    media("json-api", "application/vnd.api+json", 415, "unsupported_media_type"),
    media("content-type-10000", "application/json-" + "x" * 10_000, 415, "unsupported_media_type"),
    media("charset-latin-1", JSON_LATIN_1, 415, "unsupported_media_type"),
    media("utf8-declared-latin-1-sent", "application/json; charset=utf-8", 400, "malformed_json", LATIN_1),
    media("utf8-overlong", JSON, 400, "malformed_json", OVERLONG),
    media("utf8-encoded-surrogate", JSON, 400, "malformed_json", SURROGATE_BYTES),
    # Parsed as JSON: each answers the body's own refusal.
    media("capitals", "APPLICATION/JSON", 400, "invalid_amount"),
    media("charset-quoted", 'application/json; charset="utf-8"', 400, "invalid_amount"),
    media("charset-unknown", "application/json; charset=klingon", 415, "unsupported_media_type"),
    media("odd-parameters", "application/json; boundary=xx; q=0.1", 400, "invalid_amount"),
    media("wildcard", "*/*", 400, "invalid_amount"),
    # (An RFC 2231 parameter in an unknown charset, "a*=klingon''x", breaks Django's test client
    # itself: bankcore/tests/test_api_errors.py sends it to the WSGI handler the servers run.)
]

SIZES = [
    post("at-the-limit", 400, "invalid_amount", body=ZERO, pad_to=LIMIT),
    post("one-byte-over", 413, "payload_too_large", body=ZERO, pad_to=LIMIT + 1),
    post("one-mebibyte", 413, "payload_too_large", body=transfer(reference='"' + "x" * 2**20 + '"')),
    post("declared-a-gibibyte", 413, "payload_too_large", body=ZERO, headers={"Content-Length": str(2**30)}),
    post("nested-over-the-limit", 413, "payload_too_large", body=b"[" * 100_000 + b"]" * 100_000),
]

REAL_IP = {"X-Real-IP": "1" * 100}

HEADERS = [
    # Idempotency-Key, with an otherwise valid body: only the key refuses it.
    key("key-missing", None, "idempotency_key_required"),
    key("key-empty", "", "idempotency_key_required"),
    key("key-256", "k" * 256, "invalid_idempotency_key"),
    key("key-latin-1", "cl\xe9", "invalid_idempotency_key"),
    key("key-tab", "a\tb", "invalid_idempotency_key"),
    key("key-control", "a\x01b", "invalid_idempotency_key"),
    key("key-nul", "a\x00b", "invalid_idempotency_key"),
    # A bad body is refused before the key is looked at; a missing key, before the body.
    key("key-missing-body-bad", None, "idempotency_key_required", body=b"{"),
    key("key-bad-body-bad", "a\x01b", "malformed_json", body=b"{"),
    key("reverse-key-missing", None, "idempotency_key_required", REVERSE_OWN, b"{}"),
    key("reverse-key-256", "k" * 256, "invalid_idempotency_key", REVERSE_OWN, b"{}"),
    # A request id that is no id of ours is replaced, not echoed; the other odd headers are no error.
    get("request-id-markup", ACCOUNTS, 200, headers={"X-Request-ID": "<script>alert(1)</script>"}),
    get("request-id-header-injection", ACCOUNTS, 200, headers={"X-Request-ID": "abcdefgh\r\nSet-Cookie: x=1"}),
    get("forwarded-for-junk", ACCOUNTS, 200, headers={"X-Forwarded-For": "not-an-ip, ::::, 999.1.1.1"}),
    get("user-agent-10000", ACCOUNTS, 200, headers={"User-Agent": "u" * 10_000}),
    amount("long-real-ip-recorded", POOR, 422, "insufficient_funds", recorded=True, headers=REAL_IP),
]

AUTHORIZATION = [
    auth("none", None, 401, "not_authenticated"),
    auth("empty", "", 401, "not_authenticated"),
    auth("scheme-alone", "Bearer", 401, "token_not_valid"),
    auth("no-scheme", "<token_a>", 401, "not_authenticated"),
    auth("lowercase-scheme", "bearer <token_a>", 401, "not_authenticated"),
    auth("basic-with-the-password", "Basic cGFydG5lci1hOnB3LXBhcnRuZXItYQ==", 401, "not_authenticated"),
    auth("two-tokens", "Bearer <token_a> <token_a>", 401, "token_not_valid"),
    bearer("garbage", "garbage"),
    bearer("latin-1-bytes", "\xe9\xff.\xfe.\x80"),
    bearer("10000-characters", "A" * 10_000),
    bearer("signed-with-another-key", "<token_other_key>"),
    bearer("alg-none", "<token_alg_none>"),
    bearer("alg-hs512", "<token_hs512>"),
    bearer("expired", "<token_expired>"),
    bearer("refresh-as-access", "<token_refresh>"),
    bearer("b-payload-a-signature", "<token_spliced>"),
    # Claims only a holder of JWT_SECRET_KEY could sign: tokens of ours that carried them.
    bearer("claim-user-nobody", "<token_user_nobody>"),
    bearer("claim-user-text", "<token_user_text>"),
    bearer("claim-user-huge", "<token_user_huge>"),
    bearer("claim-user-missing", "<token_user_missing>"),
    bearer("claim-exp-missing", "<token_exp_missing>"),
    bearer("claim-exp-past-year-9999", "<token_exp_far>"),
    bearer("claim-password-hash-wrong", "<token_revoked>"),
    # No money moves on a refused token.
    post("garbage-on-a-transfer", 401, "token_not_valid", body=transfer(), client="anon", headers=bearing("garbage")),
    post("expired-on-a-transfer", 401, "token_not_valid", body=transfer(), client="anon", headers=bearing(EXPIRED)),
    post("none-on-a-transfer", 401, "not_authenticated", body=transfer(), client="anon"),
    # simplejwt splits on any run of whitespace: around a good header it is no error.
    get("surrounding-whitespace", ACCOUNTS, 200, client="anon", headers={"Authorization": "  Bearer   <token_a>  "}),
]

HTML: dict[str, str | None] = {"Accept": "text/html"}

ACCEPT = [
    get("html", ACCOUNTS, 406, "not_acceptable", headers=HTML),
    get("xml", ACCOUNTS, 406, "not_acceptable", headers={"Accept": "application/xml"}),
    # The API renders JSON; a problem is what it refuses with, not a type to ask for.
    get("problem-json", ACCOUNTS, 406, "not_acceptable", headers={"Accept": PROBLEM}),
    get("garbage", ACCOUNTS, 406, "not_acceptable", headers={"Accept": "@@@"}),
    get("empty", ACCOUNTS, 406, "not_acceptable", headers={"Accept": ""}),
    post("html-on-a-transfer", 406, "not_acceptable", body=transfer(), headers=HTML),
    get("json-with-a-charset", ACCOUNTS, 200, headers={"Accept": "application/json; charset=latin-1"}),
    get("2000-types-then-json", ACCOUNTS, 200, headers={"Accept": "text/html, " * 2000 + JSON}),
    get("format-json-is-a-filter", f"{ACCOUNTS}?format=json", 400, "unknown_field"),
    get("format-html", f"{TRANSFERS}<tx_aa>/?format=html", 404, "not_found"),
]

YEAR_ONE = cursor("p=0001-01-01 00:00:00")

QUERIES = [
    # accounts: limit, ledger, status, currency, after/before, and parameters it does not know
    get("accounts-limit-negative", f"{ACCOUNTS}?limit=-1", 400, "validation_error"),
    get("accounts-limit-huge", f"{ACCOUNTS}?limit=" + "9" * 30, 400, "validation_error"),
    get("accounts-limit-4301-digits", f"{ACCOUNTS}?limit=" + "9" * 4301, 400, "validation_error"),
    get("accounts-limit-fraction", f"{ACCOUNTS}?limit=1.5", 400, "validation_error"),
    get("accounts-limit-nul", f"{ACCOUNTS}?limit=%00", 400, "validation_error"),
    # A number is its ASCII digits: int() would read any decimal digit, spaces around and "5.0".
    get("accounts-limit-arabic-indic", f"{ACCOUNTS}?limit=" + quote("\u0665"), 400, "validation_error"),
    get("accounts-limit-point-zero", f"{ACCOUNTS}?limit=5.0", 400, "validation_error"),
    get("accounts-limit-spaces", f"{ACCOUNTS}?limit=%2012%20", 400, "validation_error"),
    get("accounts-limit-underscore", f"{ACCOUNTS}?limit=1_0", 400, "validation_error"),
    # Of a repeated parameter the last counts.
    get("accounts-limit-repeated-last-bad", f"{ACCOUNTS}?limit=5&limit=-1", 400, "validation_error"),
    get("accounts-limit-repeated-last-good", f"{ACCOUNTS}?limit=-1&limit=5", 200),
    get("accounts-ledger-nul", f"{ACCOUNTS}?ledger=%00%00", 400, "validation_error"),
    get("accounts-ledger-10000", f"{ACCOUNTS}?ledger=" + "1" * 10_000, 400, "validation_error"),
    get("accounts-ledger-unknown", f"{ACCOUNTS}?ledger=99", 200),
    get("accounts-status-100000", f"{ACCOUNTS}?status=" + "x" * 100_000, 400, "validation_error"),
    # after and before are positions among the numbers, any 14 digits: no ledger needed.
    get("accounts-after-no-ledger", f"{ACCOUNTS}?after=<n99>", 200),
    get("accounts-before-sql", f"{ACCOUNTS}?before=" + quote("1' OR '1'='1"), 400, "validation_error"),
    get("accounts-long-parameter-name", f"{ACCOUNTS}?" + "k" * 10_000 + "=1", 400, "unknown_field"),
    get("accounts-bad-percent-escape", f"{ACCOUNTS}?status=%ZZ", 400, "validation_error"),
    get("accounts-invalid-utf8", f"{ACCOUNTS}?status=%FF%FE", 400, "validation_error"),
    get("accounts-1001-parameters", f"{ACCOUNTS}?" + "&".join(f"f{i}=1" for i in range(1001)), 400, "bad_request"),
    # transfers: dates, status, account, limit, cursor
    get("transfers-from-year-0", f"{TRANSFERS}?created_from=0000-01-01", 400, "validation_error"),
    since("transfers-from-year-1", "0001-01-01", 200),
    get("transfers-to-year-1", f"{TRANSFERS}?created_to=0001-01-01", 200),
    get("entries-from-year-1", f"{ENTRIES}?created_from=0001-01-01", 200),
    get("transfers-to-year-1899", f"{TRANSFERS}?created_to=1899-06-01", 200),
    # The last second of 1899 in UTC is 1900 in Asia/Shanghai: a year a filter may name.
    get("transfers-to-1899-that-is-1900-locally", f"{TRANSFERS}?created_to=1899-12-31T23:59:59Z", 200),
    get("transfers-from-year-9000", f"{TRANSFERS}?created_from=9000-06-01", 200),
    # And the last second of 9000 at -12:00 is 9001 there: past them, taken as their end.
    since("transfers-from-9000-that-is-9001-locally", "9000-12-31T23:59:59-12:00", 200),
    get("transfers-from-year-99999", f"{TRANSFERS}?created_from=99999-01-01", 400, "validation_error"),
    get("transfers-from-february-30", f"{TRANSFERS}?created_from=2026-02-30", 400, "validation_error"),
    since("transfers-from-offset-25h", "2026-01-01T00:00:00+25:00", 400, "validation_error"),
    since("transfers-from-zone-name", "2026-01-01T00:00:00 Asia/Shanghai", 400, "validation_error"),
    get("transfers-from-epoch-seconds", f"{TRANSFERS}?created_from=1700000000", 400, "validation_error"),
    get("transfers-from-nul", f"{TRANSFERS}?created_from=2026-01-01%00", 400, "validation_error"),
    since("transfers-from-arabic-indic", "\u0662\u0660\u0662\u0666-01-01", 400, "validation_error"),
    get("transfers-inverted-range", f"{TRANSFERS}?created_from=2026-01-01T00:00:00Z&created_to=2025-01-01", 200),
    get("transfers-account-no-ledger", f"{TRANSFERS}?account=<n99>", 404, "account_not_found"),
    # Another partner's account narrows A's transfers to those touching it: no leak, no error.
    get("transfers-account-of-another-partner", f"{TRANSFERS}?account=<b1>", 200),
    get("transfers-page", f"{TRANSFERS}?page=2", 400, "unknown_field"),
    get("transfers-page-size", f"{TRANSFERS}?page_size=1000", 400, "unknown_field"),
    get("transfers-cursor-501", f"{TRANSFERS}?cursor=" + "a" * 501, 400, "validation_error"),
    get("transfers-cursor-not-ascii", f"{TRANSFERS}?cursor=" + cursor("p=\xff\xfe"), 404, "not_found"),
    get("transfers-cursor-reverse-flag-text", f"{TRANSFERS}?cursor=" + cursor("r=x"), 404, "not_found"),
    get("transfers-cursor-negative-offset", f"{TRANSFERS}?cursor=" + cursor("o=-5"), 404, "not_found"),
    get("transfers-cursor-huge-offset", f"{TRANSFERS}?cursor=" + cursor("o=99999999999"), 200),
    get("transfers-cursor-position-garbage", f"{TRANSFERS}?cursor=" + cursor("p=not-a-date"), 400, "validation_error"),
    get("transfers-cursor-position-nul", f"{TRANSFERS}?cursor=" + cursor("p=\x00"), 400, "validation_error"),
    # A position no row can have: checked as the date filters are.
    get(
        "transfers-cursor-position-year-9999",
        f"{TRANSFERS}?cursor=" + cursor("p=9999-12-31 23:59:59"),
        400,
        "validation_error",
    ),
    get("transfers-cursor-year-1", f"{TRANSFERS}?cursor={YEAR_ONE}", 400, "validation_error"),
    # entries
    get("entries-cursor-position-garbage", f"{ENTRIES}?cursor=" + cursor("p=garbage"), 400, "validation_error"),
    get("entries-cursor-year-1", f"{ENTRIES}?cursor={YEAR_ONE}", 400, "validation_error"),
    # The filters are checked before the account is looked up.
    get("entries-of-another-partner-bad-limit", f"{ACCOUNTS}<b1>/entries/?limit=-1", 400, "validation_error"),
]

SQL = quote("' OR 1=1--")
NIL = "00000000-0000-0000-0000-000000000000"

PATHS = [
    get("account-nul", f"{ACCOUNTS}%00/", 400, "invalid_account_number"),
    get("account-dot-dot", f"{ACCOUNTS}../", 400, "invalid_account_number"),
    get("account-encoded-traversal", f"{ACCOUNTS}..%2f..%2fsettings/", 404, "not_found"),
    get("account-10000-digits", f"{ACCOUNTS}{'1' * 10_000}/", 400, "invalid_account_number"),
    get("account-arabic-indic", f"{ACCOUNTS}{quote(chr(0x0660) * 14)}/", 400, "invalid_account_number"),
    get("account-invalid-utf8", f"{ACCOUNTS}%FF%FE/", 400, "invalid_account_number"),
    # The API takes a number as its 14 digits: spaces are for people, at the back office.
    get("account-trailing-space", f"{ACCOUNTS}<a1>%20/", 400, "invalid_account_number"),
    get("account-of-no-ledger", f"{ACCOUNTS}<n99>/", 404, "account_not_found"),
    get("account-missing", f"{ACCOUNTS}<missing2>/", 404, "account_not_found"),
    get("account-no-trailing-slash", f"{ACCOUNTS}<a1>", 404, "not_found"),
    get("account-path-parameter", f"{ACCOUNTS}<a1>/;jsessionid=x", 404, "not_found"),
    get("entries-extra-segment", f"{ENTRIES}extra/", 404, "not_found"),
    get("transfer-uuid-in-capitals", f"{TRANSFERS}<TX_AA>/", 404, "not_found"),
    get("transfer-uuid-without-dashes", f"{TRANSFERS}<tx_aa hex>/", 404, "not_found"),
    get("transfer-uuid-nul", f"{TRANSFERS}<tx_aa>%00/", 404, "not_found"),
    get("transfer-sql", f"{TRANSFERS}{SQL}/", 404, "not_found"),
    reverse("reverse-extra-segment", b"{}", 404, "not_found", path=f"{REVERSE_OWN}extra/"),
    reverse("reverse-not-a-uuid", b"{}", 404, "not_found", path=f"{TRANSFERS}not-a-uuid/reverse/"),
    get("double-slash", "/api/v1//accounts/", 404, "not_found"),
    get("api-nul", "/api/%00", 404, "not_found"),
    get("path-10000", "/api/v1/" + "a" * 10_000, 404, "not_found"),
]

METHODS = [
    case("put-accounts", "PUT", ACCOUNTS, 405, "method_not_allowed", body=b"{}"),
    case("post-accounts", "POST", ACCOUNTS, 405, "method_not_allowed", body=b'{"holder": "me"}'),
    case("patch-account", "PATCH", f"{ACCOUNTS}<a1>/", 405, "method_not_allowed", body=b'{"posted": "1000000.00"}'),
    case("post-account", "POST", f"{ACCOUNTS}<a1>/", 405, "method_not_allowed", body=transfer()),
    case("put-transfers", "PUT", TRANSFERS, 405, "method_not_allowed", body=transfer()),
    case("patch-transfer", "PATCH", f"{TRANSFERS}<tx_aa>/", 405, "method_not_allowed", body=b'{"status": "aborted"}'),
    case("delete-transfer", "DELETE", f"{TRANSFERS}<tx_aa>/", 405, "method_not_allowed"),
    case("post-transfer", "POST", f"{TRANSFERS}<tx_aa>/", 405, "method_not_allowed", body=b"{}"),
    case("get-reverse", "GET", REVERSE_OWN, 405, "method_not_allowed"),
    case("delete-reverse", "DELETE", REVERSE_OWN, 405, "method_not_allowed"),
    case("get-token", "GET", TOKEN, 405, "method_not_allowed", client="anon"),
    case("trace", "TRACE", ACCOUNTS, 405, "method_not_allowed"),
    case("made-up-method", "BREW", TRANSFERS, 405, "method_not_allowed", body=transfer()),
    case("post-schema", "POST", "/api/schema/", 405, "method_not_allowed", body=b"{}"),
    case("delete-docs", "DELETE", "/api/docs/", 405, "method_not_allowed"),
    case("post-docs", "POST", "/api/docs/", 405, "method_not_allowed", body=b"{}"),
    get("docs-as-json", "/api/docs/", 406, "not_acceptable", headers={"Accept": JSON}),
    get("schema-as-html", "/api/schema/", 406, "not_acceptable", headers=HTML),
    # Without credentials the method is not even looked at.
    case("delete-account-anonymous", "DELETE", f"{ACCOUNTS}<a1>/", 401, "not_authenticated", client="anon"),
    # What the methods that only read do.
    case("head-accounts", "HEAD", ACCOUNTS, 200),
    case("head-anonymous", "HEAD", ACCOUNTS, 401, "not_authenticated", client="anon"),
    case("options-accounts", "OPTIONS", ACCOUNTS, 200),
    case("options-transfers", "OPTIONS", TRANSFERS, 200),
    case("options-anonymous", "OPTIONS", TRANSFERS, 401, "not_authenticated", client="anon"),
]

TOKENS = [
    login("malformed", b'{"username": ', 400, "malformed_json"),
    login("array", b'["partner-a", "pw-partner-a"]', 400, "validation_error"),
    login("username-list", b'{"username": ["partner-a"], "password": "x"}', 400, "validation_error"),
    login("operator-injection", b'{"username": {"$ne": null}, "password": {"$ne": null}}', 400, "validation_error"),
    login("username-nul", rb'{"username": "partner-a\u0000", "password": "x"}', 400, "validation_error"),
    login("password-nul", rb'{"username": "partner-a", "password": "pw\u0000"}', 400, "validation_error"),
    login("username-lone-surrogate", rb'{"username": "\ud800"}', 400, "validation_error"),
    login("over-the-body-limit", b'{"username": "x", "password": "' + b"p" * LIMIT + b'"}', 413, "payload_too_large"),
    login("form", b"username=x&password=y", 415, "unsupported_media_type", content_type=FORM_TYPE),
    login("charset-latin-1", b'{"username": "x"}', 415, "unsupported_media_type", content_type=JSON_LATIN_1),
    # These reach authentication: refused like any wrong login, and recorded as one. Each its own
    # name, so that none is locked out (AXES_FAILURE_LIMIT) by the others.
    wrong_login("username-number", b'{"username": 123, "password": "x"}'),
    wrong_login("username-sql", b"""{"username": "' OR '1'='1", "password": "' OR 1=1"}"""),
    wrong_login("username-rtl", '{"username": "\u202eadmin", "password": "x"}'.encode()),
    wrong_login("password-10000", b'{"username": "nobody-1", "password": "' + b"p" * 10_000 + b'"}'),
    wrong_login("odd-real-ip", b'{"username": "nobody-2", "password": "x"}', headers={"X-Real-IP": "not-an-address"}),
    wrong_login("long-user-agent", b'{"username": "nobody-3", "password": "x"}', headers={"User-Agent": "u" * 10_000}),
    wrong_login("long-real-ip", b'{"username": "nobody-4", "password": "x"}', headers=REAL_IP),
    # simplejwt's serializer ignores what it does not know: the login is the login.
    login("is-superuser-ignored", b'{"username": "partner-b", "password": "pw-partner-b", "is_superuser": true}', 200),
    refresh("refresh-access-token", b'{"refresh": "<token_a>"}', 401, "token_not_valid"),
    refresh("refresh-other-key", b'{"refresh": "<token_refresh_other_key>"}', 401, "token_not_valid"),
    refresh("refresh-expired", b'{"refresh": "<token_refresh_expired>"}', 401, "token_not_valid"),
    refresh("refresh-exp-past-year-9999", b'{"refresh": "<token_refresh_exp_far>"}', 401, "token_not_valid"),
    refresh("refresh-number", b'{"refresh": 12}', 401, "token_not_valid"),
    refresh("refresh-empty", b'{"refresh": ""}', 400, "validation_error"),
    refresh("refresh-missing", b"{}", 400, "validation_error"),
    refresh("refresh-malformed", b'{"refresh": "', 400, "malformed_json"),
    # The masking drops a "refresh" value from the audit file's line: no surrogate reaches it.
    refresh("refresh-lone-surrogate", rb'{"refresh": "\ud800"}', 400, "validation_error"),
]

REVERSALS = [
    reverse("malformed", b'{"reference": ', 400, "malformed_json"),
    reverse("reference-141", b'{"reference": "' + b"x" * 141 + b'"}', 400, "validation_error"),
    reverse("reference-nul", rb'{"reference": "\u0000"}', 400, "validation_error"),
    reverse("reference-rtl-override", '{"reference": "\u202eback"}'.encode(), 400, "invalid_reference"),
    reverse("reference-number", b'{"reference": 5}', 400, "validation_error"),
    reverse("reference-lone-surrogate", rb'{"reference": "\udbff"}', 400, "validation_error"),
    reverse("string-body", b'"refund"', 400, "validation_error"),
    reverse("non-empty-array", b"[1]", 400, "validation_error"),
    reverse("empty-array", b"[]", 400, "validation_error"),
    reverse("null", b"null", 400, "validation_error"),
    reverse("false", b"false", 400, "validation_error"),
    reverse("zero", b"0", 400, "validation_error"),
    reverse("empty-string", b'""', 400, "validation_error"),
    reverse("text-plain", b"{}", 415, "unsupported_media_type", content_type="text/plain"),
    reverse("over-the-limit", b"{}", 413, "payload_too_large", pad_to=LIMIT + 1),
    reverse("of-another-partners-money", b"{}", 403, "reversal_not_allowed", path=REVERSE_FOREIGN),
    reverse("of-a-transfer-not-visible", b"{}", 404, "transfer_not_found", client="b"),
    # Staff (here by a permission to move money) have no door here: the back office is theirs.
    reverse("by-staff", b"{}", 401, "token_not_valid", client="s"),
    reverse("of-the-nil-uuid", b"{}", 404, "transfer_not_found", path=f"{TRANSFERS}{NIL}/reverse/"),
]

# The tables, and the two worlds they share: what a request carries, and where it goes.
API_TABLES = {
    "body": {"json": JSON_BODIES, "amount": AMOUNTS, "field": FIELDS, "size": SIZES, "media-type": MEDIA_TYPES},
    "address": {
        "header": HEADERS,
        "authorization": AUTHORIZATION,
        "accept": ACCEPT,
        "query": QUERIES,
        "path": PATHS,
        "method": METHODS,
        "token": TOKENS,
        "reversal": REVERSALS,
    },
}


# --- the world, the request, the answer ----------------------------------------------------------


@pytest.fixture
def hostile_world(api_world, actor):
    """api_world with two transfers out of a1 (one A may reverse, one it may not), and the values of
    the placeholders the rows use (see ``Hostile``)."""
    import jwt
    from django.conf import settings
    from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

    from accounts.numbers import account_number_make
    from transfers.services import transfer_create

    w = api_world
    to_a2 = transfer_create(actor=actor, source_account=w.a1.number, destination_account=w.a2.number, amount="10.00")
    to_b1 = transfer_create(actor=actor, source_account=w.a1.number, destination_account=w.b1.number, amount="10.00")
    key = str(settings.SIMPLE_JWT["SIGNING_KEY"])
    claims = dict(AccessToken.for_user(w.partner_a).payload)

    def signed(secret: str = key, algorithm: str = "HS256", drop: str = "", **changes: Any) -> str:
        payload = {name: value for name, value in {**claims, **changes}.items() if name != drop}
        return jwt.encode(payload, secret, algorithm=algorithm)

    def lifetime(token: Any, seconds: int) -> str:
        token.set_exp(lifetime=timedelta(seconds=seconds))
        return str(token)

    other_key = "another-key-" + "x" * 40
    token_a, token_b = str(AccessToken.for_user(w.partner_a)), str(AccessToken.for_user(w.partner_b))
    refresh_token = RefreshToken.for_user(w.partner_a)
    w.values = {
        "<a1 spaced>": f"{w.a1.number[:2]} {w.a1.number[2:12]} {w.a1.number[12:]}",
        "<a1>": w.a1.number,
        "<a2>": w.a2.number,
        "<b1>": w.b1.number,
        "<c2>": w.c2.number,
        "<n99>": account_number_make(ledger_code="99", serial=1),
        "<missing2>": account_number_make(ledger_code=w.c2.number[:2], serial=10**10 - 1),
        "<tx_aa hex>": to_a2.id.hex,
        "<tx_aa>": str(to_a2.id),
        "<TX_AA>": str(to_a2.id).upper(),
        "<tx_ab>": str(to_b1.id),
        "<token_a>": token_a,
        "<token_expired>": lifetime(AccessToken.for_user(w.partner_a), -1),
        "<token_refresh_other_key>": jwt.encode(dict(refresh_token.payload), other_key, algorithm="HS256"),
        "<token_refresh_expired>": lifetime(RefreshToken.for_user(w.partner_a), -1),
        "<token_refresh_exp_far>": jwt.encode({**refresh_token.payload, "exp": 10**13}, key, algorithm="HS256"),
        "<token_refresh>": str(refresh_token),
        "<token_other_key>": signed(other_key),
        "<token_alg_none>": jwt.encode(claims, "", algorithm="none"),
        "<token_hs512>": signed(algorithm="HS512"),
        "<token_spliced>": ".".join([*token_b.split(".")[:2], token_a.split(".")[2]]),
        "<token_user_nobody>": signed(user_id="999999999"),
        "<token_user_text>": signed(user_id="1; DROP TABLE auth_user"),
        "<token_user_huge>": signed(user_id=10**30),
        "<token_user_missing>": signed(drop="user_id"),
        "<token_exp_missing>": signed(drop="exp"),
        "<token_exp_far>": signed(exp=10**13),
        "<token_revoked>": signed(hash_password="0" * 32),
    }
    w.accounts = (w.a1, w.a2, w.b1, w.c2)
    return w


def hostile_send(w: Any, row: Hostile, key: str) -> Any:
    """Send ``row`` as written, bytes and all, through the client it names."""
    client = {"a": w.a, "b": w.b, "s": w.s, "anon": w.anon}[row.client]
    headers: dict[str, str | None] = {}
    if row.method == "POST" and (row.path == TRANSFERS or row.path.endswith("/reverse/")):
        headers["Idempotency-Key"] = key
    headers.update(row.headers)
    sent = {name: filled(value, w.values) for name, value in headers.items() if value is not None}
    meta = {HttpHeaders.to_wsgi_name(name): value for name, value in sent.items()}
    body = filled(row.body.decode("utf-8", "surrogateescape"), w.values).encode("utf-8", "surrogateescape")
    body = body.ljust(row.pad_to, b" ")
    return client.generic(row.method, filled(row.path, w.values), body, content_type=row.content_type, **meta)


def answer_faults(row: Hostile, response: Any) -> list[str]:
    """What is wrong with ``response`` as the answer to ``row``: nothing, when it is right."""
    faults = []
    if response.status_code != row.status:
        faults.append(f"status {response.status_code}, expected {row.status}")
    content, content_type = response.content, response.get("Content-Type", "")
    if b"Traceback" in content:
        faults.append("a traceback in the body")
    if not content.isascii():
        faults.append("a body that is not ASCII")
    # Every request id a row sends is malformed: it must be replaced, never echoed.
    if (request_id := row.headers.get("X-Request-ID")) and response.get("X-Request-ID") == request_id:
        faults.append("the request id echoed")
    if response.status_code < 400:
        if content_type != JSON:
            faults.append(f"Content-Type {content_type!r}, not {JSON}")
        return faults
    if content_type != PROBLEM:
        faults.append(f"Content-Type {content_type!r}, not {PROBLEM}")
    if response.status_code == 405 and "Allow" not in response:
        faults.append("a 405 without Allow")
    if row.method == "HEAD":
        return faults  # no body to read
    try:
        problem = json.loads(content)
    except ValueError:
        return [*faults, "a body that is not JSON"]
    if not isinstance(problem, dict) or problem.get("status") != response.status_code:
        faults.append("a problem whose status is not the response's")
    elif not isinstance(problem.get("code"), str) or not problem["code"]:
        faults.append("a problem without a code")
    elif row.code is not None and problem["code"] != row.code:
        faults.append(f"code {problem['code']!r}, expected {row.code!r}")
    elif row.recorded != ("transfer_id" in problem):
        faults.append("a recorded refusal without its transfer_id" if row.recorded else "a transfer_id")
    return faults


def what_moved(row: Hostile, before: dict[str, Any], after: dict[str, Any]) -> str:
    """What changed that ``row`` may not change: "" when nothing did."""
    allowed = dict(after)
    transfers, events = before["transfers"], before["audit_events"]
    if row.recorded and after["transfers"] == transfers + 1 and after["audit_events"] > events:
        allowed.update(transfers=transfers, audit_events=events)
    if row.login_failed and after["audit_events"] == before["audit_events"] + 1:
        allowed["audit_events"] = before["audit_events"]
    changed = {name: (before[name], allowed[name]) for name in before if before[name] != allowed[name]}
    return f"moved: {changed}" if changed else ""


def described(row: Hostile, response: Any = None) -> str:
    shown: dict[str, Any] = {"method": row.method, "path": row.path[:200], "body": row.body[:200], "client": row.client}
    if row.content_type != JSON:
        shown["content_type"] = row.content_type[:200]
    if row.headers:
        shown["headers"] = {name: (value or "")[:200] for name, value in row.headers.items()}
    if response is not None:
        shown["answer"] = f"{response.status_code} {response.get('Content-Type')} {response.content[:300]!r}"
    return repr(shown)


@pytest.mark.parametrize("rows", corpus(API_TABLES))
def test_a_hostile_api_request_gets_its_answer_and_moves_nothing(
    hostile_world: Any, logged_tracebacks: Tracebacks, rows: list[tuple[str, Hostile, str]]
) -> None:
    w = hostile_world
    failures = {}
    before = world_snapshot(*w.accounts)
    for index, (row_id, row, fault) in enumerate(rows):
        label = f"{row_id} [{fault}]" if fault else row_id
        logged_tracebacks.seen.clear()
        try:
            response = hostile_send(w, row, key=f"hostile-{index}")
        except Exception:
            failures[row_id] = f"{label}: raised\n  {described(row)}\n{traceback.format_exc()}"
            before = world_snapshot(*w.accounts)
            continue
        faults = answer_faults(row, response)
        after = world_snapshot(*w.accounts)
        faults.append(what_moved(row, before, after))
        faults.extend(f"logged:\n{logged}" for logged in logged_tracebacks.seen)
        if faults := [problem for problem in faults if problem]:
            failures[row_id] = f"{label}: {'; '.join(faults)}\n  {described(row, response)}"
        before = after
    faults_fixed([(row_id, fault) for row_id, _, fault in rows if fault], failures)
    assert not failures, f"{len(failures)} of {len(rows)} rows:\n\n" + "\n\n".join(failures.values())


# --- the back office: hostile query strings on every changelist --------------------------------
#
# For every registered ModelAdmin, as a superuser. A query names in braces the fields it needs,
# taken from the model admin: {pk}, {filter} a plain field it filters on, {date} a date field it
# filters on (or its date hierarchy), {dh} its date hierarchy, {text} a text column of the model.
# A query is sent to each changelist that has the fields it names.


def admin_query(query_id: str, query: str, fault: str = "") -> ParameterSet:
    return pytest.param(query, id=query_id, marks=xfail(fault))


SEARCH = quote("\x00\u202eadmin\u200d\U0001f4b8 %_\\' OR 1=1 --") + "%FF%FE+" + "x" * 2000

ADMIN_QUERIES = [
    # A search of every kind at once (a NUL, bidi and zero-width characters, an emoji, LIKE's
    # wildcards, quotes, bytes that are no UTF-8, a 2000-character word), ordered by garbage.
    admin_query("search-and-order", f"q={SEARCH}&o=garbage.-99999999999999999999.-.-"),
    # Pages out of range, each with a lookup that the list is filtered by before it is paged.
    admin_query("page-negative-pk-isnull-maybe", "p=-1&{pk}__isnull=maybe"),
    admin_query("page-huge-text-startswith-nul", "p=99999999999&{text}__startswith=%00"),
    admin_query("unknown-parameter", "nosuchfield=1"),
    admin_query("pk-in-garbage", "{pk}__in=a,,b"),
    admin_query("to-field-password", "_to_field=password"),
    admin_query("any-year-99999", "nosuch__year=99999"),
    admin_query("1001-parameters", "&".join(f"f{i}=1" for i in range(1001))),
    admin_query("filter-in-junk", "{filter}__in=%00,%FF"),
    admin_query("date-year-99999", "{date}__year=99999"),
    admin_query("date-year-0", "{date}__year=0"),
    admin_query("date-year-gte-1", "{date}__year__gte=1"),
    admin_query("date-lt-garbage", "{date}__lt=garbage"),
    admin_query("date-gte-offset-99h", "{date}__gte=" + quote("2026-01-01T00:00:00+99:00")),
    admin_query("date-range-one-value", "{date}__range=2026"),
    admin_query("date-lt-year-9999", "{date}__lt=" + quote("9999-12-31 23:59:59")),
    admin_query("date-gte-year-1", "{date}__gte=0001-01-01"),
    admin_query("date-exact-year-1", "{date}=0001-01-01"),
    admin_query("date-date-gte-year-1", "{date}__date__gte=0001-01-01"),
    admin_query("date-range-year-1", "{date}__range=0001-01-01,2026-01-01"),
    admin_query("date-lt-year-99999", "{date}__lt=99999-01-01"),
    admin_query("hierarchy-month-13", "{dh}__year=2026&{dh}__month=13"),
    admin_query("hierarchy-february-30", "{dh}__year=2026&{dh}__month=2&{dh}__day=30"),
    admin_query("hierarchy-month-without-year", "{dh}__month=abc"),
    admin_query("hierarchy-last-day-allowed", "{dh}__year=9000&{dh}__month=12&{dh}__day=31"),
    admin_query("text-regex-unbalanced", "{text}__regex=("),
    admin_query("text-iregex-unbalanced", "{text}__iregex=["),
]


def admin_fields(model_admin: Any) -> dict[str, str]:
    """The fields of one changelist that ADMIN_QUERIES name, those it has."""
    from django.db import models

    opts = model_admin.model._meta
    named = [name for name in model_admin.list_filter if isinstance(name, str) and "__" not in name]
    filtered = {name: opts.get_field(name) for name in named}
    dates = [name for name, f in filtered.items() if isinstance(f, models.DateField)]
    plain = [name for name, f in filtered.items() if not isinstance(f, (models.DateField, models.ForeignKey))]
    texts = [f.name for f in opts.concrete_fields if isinstance(f, models.CharField) and f.name != "password"]
    fields = {"pk": opts.pk.name}
    if model_admin.date_hierarchy:
        fields["dh"] = model_admin.date_hierarchy
        dates.append(model_admin.date_hierarchy)
    for name, found in (("date", dates), ("filter", plain), ("text", texts)):
        if found:
            fields[name] = found[0]
    return fields


@dataclass(frozen=True)
class Changelist:
    label: str
    url: str
    fields: dict[str, str]


def changelists() -> list[Changelist]:
    """Every registered ModelAdmin's changelist."""
    from django.contrib import admin
    from django.urls import reverse

    return [
        Changelist(
            model._meta.label_lower,
            reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"),
            admin_fields(model_admin),
        )
        for model, model_admin in admin.site._registry.items()
    ]


# (query id, query, its fault or "", the changelists it is sent to)
AdminRow = tuple[str, str, str, Callable[[], list[Changelist]]]


def admin_corpus() -> list[ParameterSet]:
    """The sound queries on every changelist, and every marked query: each a list of
    ``(query id, query, fault, which changelists)``."""
    rows: list[AdminRow] = [
        (str(query.id), str(query.values[0]), fault_of(query), changelists) for query in ADMIN_QUERIES
    ]
    marked = [row for row in rows if row[2]]
    return [
        pytest.param([row for row in rows if not row[2]], id="changelists"),
        *([pytest.param(marked, id="known-faults", marks=KNOWN_FAULTS)] if marked else []),
    ]


def admin_problem(browser: Any, changelist: Changelist, query: str, logged: Tracebacks) -> str:
    """What is wrong with the changelist's answer to ``query``: "" when nothing is."""
    url = f"{changelist.url}?{query}"
    logged.seen.clear()
    try:
        response = browser.get(url)
    except Exception:
        return f"raised\n  GET {url[:300]}\n{traceback.format_exc()}"
    faults = [] if response.status_code in (200, 302, 400) else [f"status {response.status_code}"]
    if response.status_code == 302 and "e=1" not in response["Location"]:
        faults.append(f"a redirect to {response['Location']}")
    if b"Traceback" in response.content:
        faults.append("a traceback in the page")
    faults.extend(f"logged:\n{trace}" for trace in logged.seen)
    return f"{'; '.join(faults)}\n  GET {url[:300]}" if faults else ""


@pytest.mark.parametrize("rows", admin_corpus())
def test_a_hostile_query_string_never_breaks_a_changelist_and_moves_nothing(
    hostile_world: Any, logged_tracebacks: Tracebacks, rows: list[AdminRow]
) -> None:
    from django.contrib.auth.models import User
    from django.test import Client

    w = hostile_world
    browser = Client()
    browser.force_login(User.objects.create_superuser("root", "root@example.com", "root-password-123"))
    targets = {where: where() for where in {row[3] for row in rows}}  # now that the login's rows exist
    failures: dict[str, str] = {}
    sent: set[str] = set()
    before = world_snapshot(*w.accounts)  # after the login, an audit event
    for query_id, template, fault, where in rows:
        for changelist in targets[where]:
            if not set(re.findall(r"\{(\w+)\}", template)) <= set(changelist.fields):
                continue  # it names a field this changelist does not have
            sent.add(query_id)
            if problem := admin_problem(browser, changelist, template.format_map(changelist.fields), logged_tracebacks):
                failures[query_id] = failures.get(query_id, "") + f"{query_id} on {changelist.label}: {problem}\n"
                if fault:
                    break  # a fault shows once; its other changelists would cost a traceback each
        # Reading moves nothing: checked once per query, on all its changelists, to keep the run short.
        after = world_snapshot(*w.accounts)
        if after != before:
            failures[f"{query_id} moved"] = f"{query_id}: moved: {before} -> {after}"
        before = after
    faults_fixed([(query_id, fault) for query_id, _, fault, _ in rows if fault and query_id in sent], failures)
    assert not failures, f"{len(failures)} queries failed:\n\n" + "\n".join(failures.values())
