"""Each library bypass in ``bankcore.fastpaths`` gives what the library itself gives: its result is
compared here with the library's own, so an upgrade that changes the library's behaviour fails
here, not silently in production."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connections, transaction
from django.test import RequestFactory

from bankcore import fastpaths
from bankcore.actors import Actor, Channel

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


# --- DRF: shared serializer fields ---------------------------------------------------------------------


def _transfer_input(shared: bool) -> Any:
    from rest_framework import serializers

    from transfers.api import TransferCreateInput

    if shared:
        return TransferCreateInput
    # The same declared fields, with DRF's own per-instance ``fields``.
    return type("DrfTransferCreateInput", (TransferCreateInput,), {"fields": serializers.Serializer.__dict__["fields"]})


@pytest.mark.parametrize(
    "data",
    [
        {"source_account": "01000000000145", "destination_account": "02000000000133", "amount": "12.50"},
        {"source_account": "01000000000145", "destination_account": "02000000000133", "amount": "1", "currency": "CNY"},
        {"source_account": "0100000000014", "destination_account": 5, "amount": 12.5, "reference": ["x"]},
        {"amount": "-1.00", "currency": "ZZZZ", "surprise": True},
        {},
    ],
)
def test_shared_fields_validate_as_drfs_own_fields(data):
    from django.utils.functional import cached_property
    from rest_framework import serializers

    assert isinstance(serializers.Serializer.__dict__["fields"], cached_property)  # what SharedFields calls
    shared, drf = _transfer_input(True)(data=data), _transfer_input(False)(data=data)
    assert shared.fields is _transfer_input(True)().fields  # built once for the class
    assert drf.fields is not _transfer_input(False)().fields
    assert shared.is_valid() == drf.is_valid()
    assert shared.errors == drf.errors
    if not shared.errors:
        assert shared.validated_data == drf.validated_data


def test_shared_fields_render_as_drfs_own_fields(api_world):
    """A completed, an aborted and a reversing transfer, one by one and as a list."""
    from rest_framework import serializers

    from transfers.api import TransferOutput
    from transfers.models import Transfer

    w = api_world

    def post(path: str, data: dict[str, Any], key: str) -> Any:
        return w.a.post(path, data, format="json", HTTP_IDEMPOTENCY_KEY=key)

    move = {"source_account": w.a1.number, "destination_account": w.a2.number, "amount": "10.05"}
    done = post("/api/v1/transfers/", {**move, "reference": "发票\u300042"}, "render-1").json()
    post("/api/v1/transfers/", {**move, "destination_account": w.c2.number, "amount": "5000.00"}, "render-2")
    assert post(f"/api/v1/transfers/{done['id']}/reverse/", {}, "render-3").status_code == 201
    transfers = list(Transfer.objects.order_by("created_at"))
    assert {t.status for t in transfers} >= {"completed", "aborted"} and any(t.reversal_of_id for t in transfers)
    plain = type("DrfTransferOutput", (TransferOutput,), {"fields": serializers.Serializer.__dict__["fields"]})
    for transfer in transfers:
        assert TransferOutput(transfer).data == plain(transfer).data
    assert TransferOutput(transfers, many=True).data == plain(transfers, many=True).data


# --- simplejwt: the token's user read by one statement -------------------------------------------------


def test_the_precompiled_user_read_is_the_orms(api_world):
    from django.contrib.auth import get_user_model

    user = api_world.partner_a
    ours, orms = fastpaths.jwt_user(user.pk), get_user_model().objects.get(pk=user.pk)
    names = [field.attname for field in get_user_model()._meta.concrete_fields]
    assert [getattr(ours, name) for name in names] == [getattr(orms, name) for name in names]
    assert ours._state.db == orms._state.db and ours._state.adding is False
    assert fastpaths.jwt_user(10**9) is None
    with pytest.raises((TypeError, ValueError)):
        fastpaths.jwt_user("not-a-number")


# --- Django's middleware ---------------------------------------------------------


def test_the_back_office_middleware_is_djangos_outside_the_api_and_absent_inside():
    from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
    from django.http import HttpResponse

    from bankcore.middleware import SessionMiddleware

    def view(request: Any) -> HttpResponse:
        request.session["seen"] = True if hasattr(request, "session") else None
        return HttpResponse("ok")

    def cookies(middleware: Any, path: str) -> set[str]:
        return set(middleware(RequestFactory().get(path)).cookies)

    assert cookies(SessionMiddleware(view), "/admin/") == cookies(DjangoSessionMiddleware(view), "/admin/") != set()
    assert cookies(SessionMiddleware(lambda request: HttpResponse("ok")), "/api/v1/accounts/") == set()


# --- django-auditlog ----------------------------------------------------------------------------------


def test_the_created_entry_insert_writes_the_row_log_create_writes(make_account, make_staff):
    """The INSERT against ``LogEntry.objects.log_create`` with auditlog's own diff, for a transfer
    (a UUID key, dates, a foreign key, choices) and an account."""
    from auditlog.cid import set_cid
    from auditlog.diff import model_instance_diff
    from auditlog.models import LogEntry

    from transfers.models import Transfer
    from transfers.services import transfer_create

    teller = make_staff("teller", "insert-pin")
    alice, bob = make_account("db1", "50.00"), make_account("db2")
    actor = Actor.for_user(teller, channel=Channel.ADMIN, ip="198.51.100.4")
    made = Transfer.objects.get(
        pk=transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="5.00").pk
    )
    columns = [
        "content_type_id",
        "object_pk",
        "object_id",
        "object_repr",
        "serialized_data",
        "action",
        "changes_text",
        "changes",
        "actor_id",
        "cid",
        "remote_addr",
        "remote_port",
        "additional_data",
        "actor_email",
    ]
    set_cid(None)
    for instance in (made, alice):
        with transaction.atomic(using="default"):
            auditlog = LogEntry.objects.log_create(
                instance,
                action=LogEntry.Action.CREATE,
                changes=model_instance_diff(None, instance),
                actor_id=teller.pk,
                remote_addr="198.51.100.4",
            )
            sql, params = fastpaths.auditlog_created_insert(instance, actor=actor)
            with connections["default"].cursor() as cursor:
                cursor.execute(sql, params)
                ours = LogEntry.objects.get(pk=cursor.lastrowid)
        theirs = LogEntry.objects.get(pk=auditlog.pk)
        assert {c: getattr(ours, c) for c in columns} == {c: getattr(theirs, c) for c in columns}, instance
        assert json.dumps(ours.changes, sort_keys=True) == json.dumps(theirs.changes, sort_keys=True)


# --- DRF throttling: the rate and the client's key, as DRF reads them ------------------------------------
#
# The API's throttle (bankcore.api.throttling) counts in its own way for correctness (DRF's lost
# concurrent requests), not for speed; what it takes from DRF is the rate parsed and the key.


def test_the_cell_rate_throttle_takes_drfs_rate_and_key(api_world):
    from rest_framework.test import APIRequestFactory
    from rest_framework.throttling import UserRateThrottle
    from rest_framework.views import APIView

    from bankcore.api.throttling import PartnerRateThrottle
    from bankcore.testing.personas import rates

    request = APIRequestFactory().get("/api/v1/accounts/")
    request.user = api_world.partner_a
    with rates(user="7/hour"):
        ours = PartnerRateThrottle()
        drfs: Any = UserRateThrottle()  # the rate's attributes are not in DRF's stubs
        drfs.rate = "7/hour"  # DRF's copies the rates at import; ours reads them per request
        drfs.num_requests, drfs.duration = drfs.parse_rate(drfs.rate)
        assert (ours.num_requests, ours.duration) == (drfs.num_requests, drfs.duration) == (7, 3600)
        assert ours.get_cache_key(request, APIView()) == drfs.get_cache_key(request, APIView())
