"""Sign-ins in the audit trail: login, logout and failed login, each with where it came from."""

from __future__ import annotations

import pytest
from django.test import Client

from audit.models import AuditEvent
from bankcore.testing.personas import STAFF_PASSWORD

pytestmark = pytest.mark.django_db(databases="__all__")


def test_login_and_logout_are_audited_with_ip_and_request_id(make_staff):
    teller = make_staff("teller")
    client = Client(REMOTE_ADDR="203.0.113.7")

    response = client.post(
        "/admin/login/",
        {"username": "teller", "password": STAFF_PASSWORD, "next": "/admin/"},
        HTTP_X_REQUEST_ID="login-req-0001",
    )
    assert response.status_code == 302
    client.post("/admin/logout/")

    events = list(AuditEvent.objects.filter(object_type="user").order_by("id"))
    assert [e.action for e in events] == ["user.logged_in", "user.logged_out"]
    login = events[0]
    assert (login.actor_id, login.channel, login.ip, login.request_id) == (
        teller.pk,
        "admin",
        "203.0.113.7",
        "login-req-0001",
    )
    assert events[1].actor_id == teller.pk


def test_a_failed_login_is_audited_without_the_password(make_staff):
    make_staff("teller")
    client = Client(REMOTE_ADDR="198.51.100.9")

    response = client.post("/admin/login/", {"username": "teller", "password": "wrong-password-123"})
    assert response.status_code == 200  # the form again, with its error

    event = AuditEvent.objects.get(action="user.login_failed")
    assert (event.actor_id, event.actor_name, event.channel, event.ip) == (None, "teller", "admin", "198.51.100.9")
    assert "wrong-password-123" not in str(event.changes)


def test_a_failed_api_token_request_is_audited_as_the_api_channel(make_staff):
    make_staff("teller")
    response = Client().post(
        "/api/v1/auth/token/", {"username": "teller", "password": "nope-nope-nope"}, content_type="application/json"
    )
    assert response.status_code == 401

    event = AuditEvent.objects.get(action="user.login_failed")
    assert (event.channel, event.actor_name) == ("api", "teller")


def test_a_lockout_is_by_username_and_address(make_staff, settings):
    make_staff("teller")
    make_staff("auditor")
    # given one failed login for "teller" from each of AXES_FAILURE_LIMIT addresses: no pair locked
    for n in range(settings.AXES_FAILURE_LIMIT):
        response = Client(REMOTE_ADDR=f"198.51.100.{n + 1}").post(
            "/admin/login/", {"username": "teller", "password": f"guess-{n}"}
        )
        assert response.status_code == 200
    # and AXES_FAILURE_LIMIT from one address: that pair is
    guesser = Client(REMOTE_ADDR="203.0.113.66")
    for n in range(settings.AXES_FAILURE_LIMIT):
        guesser.post("/admin/login/", {"username": "teller", "password": f"again-{n}"})

    # then the name is locked from that address, even with the right password
    locked = guesser.post("/admin/login/", {"username": "teller", "password": STAFF_PASSWORD, "next": "/admin/"})
    assert locked.status_code == 429
    assert "_auth_user_id" not in guesser.session
    # while its owner, from an address of its own, still signs in: nobody locks a name out from everywhere
    fresh = Client(REMOTE_ADDR="192.0.2.50")
    response = fresh.post("/admin/login/", {"username": "teller", "password": STAFF_PASSWORD, "next": "/admin/"})
    assert response.status_code == 302 and "_auth_user_id" in fresh.session
    # and another name from the guessing address too
    other = Client(REMOTE_ADDR="203.0.113.66")
    response = other.post("/admin/login/", {"username": "auditor", "password": STAFF_PASSWORD, "next": "/admin/"})
    assert response.status_code == 302 and "_auth_user_id" in other.session
