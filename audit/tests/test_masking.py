"""The audit file's masking, whatever shape a request body comes in: a password is never written,
an account number keeps only its last 4 digits however it is typed."""

from __future__ import annotations

import json

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from audit.middleware import AuditRequestMiddleware
from bankcore.masking import mask, mask_text

PASSWORD = "hunter2-Secret"
NUMBER = "01000000000742"


@pytest.fixture
def audit_file(settings, tmp_path):
    settings.AUDIT_LOG_FILE = tmp_path / "audit.log"
    settings.AUDIT_LOG_ENABLED = True
    return settings.AUDIT_LOG_FILE


def post(path: str, body: bytes, content_type: str) -> None:
    request = RequestFactory().generic("POST", path, data=body, content_type=content_type)
    AuditRequestMiddleware(lambda request: HttpResponse(status=400))(request)


def request_line(audit_file) -> dict:
    [line] = [json.loads(line) for line in audit_file.read_text().splitlines()]
    assert line["type"] == "request"
    return line


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", f"username=teller&password={PASSWORD}"),
        ("application/x-www-form-urlencoded", f"username=teller&pass%77ord={PASSWORD}"),  # encoded key
        ("text/plain", f"username=teller&password={PASSWORD}"),
        ("", f"username=teller&password={PASSWORD}"),
        ("application/octet-stream", f"username=teller&password={PASSWORD}"),
        ("application/xml", f"<login><username>teller</username><password>{PASSWORD}</password></login>"),
        ("application/json", f'{{"username": "teller", "password": "{PASSWORD}"'),  # truncated
        ("application/json", f"{{'username': 'teller', 'password': '{PASSWORD}'}}"),  # not JSON
        ("application/json", json.dumps(f"password={PASSWORD}")),  # a bare JSON string
        ("text/plain", json.dumps({"username": "teller", "password": PASSWORD})),  # JSON, mislabelled
        ("application/merge-patch+json", json.dumps({"user": {"new_password1": PASSWORD}})),
    ],
)
def test_a_password_never_reaches_the_audit_file_in_any_body(audit_file, content_type, body):
    post("/admin/login/", body.encode(), content_type)

    text = audit_file.read_text()
    assert PASSWORD not in text and PASSWORD[:7] not in text
    line = request_line(audit_file)
    assert line["path"] == "/admin/login/" and line["status"] == 400


def test_form_fields_are_kept_key_by_key_and_free_text_is_replaced_by_its_size(audit_file):
    post("/api/v1/x/", f"username=teller&password={PASSWORD}&to={NUMBER}".encode(), "application/x-www-form-urlencoded")
    assert request_line(audit_file)["body"] == {"username": "teller", "to": "**********0742"}

    audit_file.unlink()
    body = f"username=teller&password={PASSWORD}".encode()
    post("/api/v1/x/", body, "text/plain")
    assert request_line(audit_file)["body"] == {
        "redacted": "not a JSON object or form data",
        "content_type": "text/plain",
        "bytes": len(body),
    }


def test_a_body_cut_at_the_size_limit_never_leaks(audit_file, settings):
    settings.AUDIT_LOG_MAX_BODY_BYTES = 40
    # given a JSON body cut inside its password, and a form body cut before it
    json_body = json.dumps({"note": "x" * 10, "password": PASSWORD}).encode()
    form_body = f"note={'x' * 27}&password={PASSWORD}".encode()  # cut inside the key
    assert len(json_body) > 40 and len(form_body) > 40

    post("/api/v1/x/", json_body, "application/json")
    post("/api/v1/x/", form_body, "application/x-www-form-urlencoded")

    text = audit_file.read_text()
    assert PASSWORD[:3] not in text
    json_line, form_line = (json.loads(line)["body"] for line in text.splitlines())
    assert json_line == {
        "redacted": "not a JSON object or form data",
        "content_type": "application/json",
        "bytes": len(json_body),
    }
    assert form_line == {"note": "x" * 27, "passwor": ""}  # the value was never read


@pytest.mark.parametrize(
    "written",
    [
        NUMBER,
        "0100 0000 0007 42",
        "0100-0000-0007-42",
        "01 0000000007 42",
        "01-0000000007-42",
        "0 1 0 0 0 0 0 0 0 0 0 7 4 2",
    ],
)
def test_an_account_number_is_masked_however_it_is_grouped(written):
    assert mask_text(f"pay {written} today") == "pay **********0742 today"
    assert mask({"destination_account": written}) == {"destination_account": "**********0742"}


def test_masking_leaves_other_numbers_alone_and_masks_numeric_account_numbers():
    # Neither 13 nor 15 digits are an account number; dates and amounts stay readable.
    assert mask_text("0100000000074 010000000007421 2024-05-01 12:30 1250.00") == (
        "0100000000074 010000000007421 2024-05-01 12:30 1250.00"
    )
    # Ledger codes from 10 up give numbers JSON can carry without quotes.
    assert mask({"account": 10000000000742, "amount": 25, "ok": True}) == {
        "account": "**********0742",
        "amount": 25,
        "ok": True,
    }


def test_a_grouped_number_in_a_request_body_is_masked(audit_file):
    body = json.dumps({"source_account": "0100 0000 0007 42", "memo": "to 0200-0000-0011-30"}).encode()

    post("/api/v1/transfers/", body, "application/json")

    assert request_line(audit_file)["body"] == {"source_account": "**********0742", "memo": "to **********1130"}
    assert "0007 42" not in audit_file.read_text()


def test_the_query_string_is_masked_by_the_same_key_rules_as_bodies(audit_file):
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.c2lnbmF0dXJl"
    query = (
        f"username=teller&password={PASSWORD}&pass%77ord={PASSWORD}&access_token={token}&refresh={token}"
        f"&api_secret={PASSWORD}&to=0100+0000+0007+42&from={NUMBER}&balance=125.00&page=2&{token}"
    )

    post(f"/api/v1/auth/token/?{query}", b"", "application/json")

    line = request_line(audit_file)
    assert line["path"] == "/api/v1/auth/token/"
    assert line["query"] == {
        "username": "teller",
        "to": "**********0742",
        "from": "**********0742",
        "balance": "***",
        "page": "2",
    }
    text = audit_file.read_text()
    assert PASSWORD[:7] not in text and token[:12] not in text and "0007" not in text


def test_a_request_without_a_query_has_none(audit_file):
    post("/api/v1/transfers/", b"{}", "application/json")
    assert request_line(audit_file)["query"] is None
