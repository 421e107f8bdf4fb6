"""Bulk transfers in the back office: a teller's CSV file checked line by line, confirmed once,
four eyes on the batch's total, each line's outcome and the result as a CSV file. Hostile files
are refused whole and change nothing."""

import csv
import io
import os
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from accounts.numbers import account_number_make
from audit.models import AuditEvent
from bankcore.testing.books import balances, world_snapshot
from transfers.approvals import approval_approve
from transfers.batch import BATCH_MAX_ITEMS
from transfers.errors import ApprovalDecidedElsewhere
from transfers.models import Approval, BulkUpload, Transfer, TransferBatch

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

HEADER = "source account,destination account,amount,currency,reference\n"


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def grouped(number: str) -> str:
    """An account number as a teller types it from paper."""
    return " ".join(number[i : i + 4] for i in range(0, 14, 4))


def upload(client: Client, text: str | bytes, name: str = "payroll.csv"):
    data = text.encode() if isinstance(text, str) else text
    return client.post(
        reverse("admin:transfers_transfer_bulk"),
        {"file": SimpleUploadedFile(name, data, content_type="text/csv"), "idempotency_key": "n" * 32},
    )


def uploaded(client: Client, text: str) -> BulkUpload:
    response = upload(client, text)
    assert response.status_code == 302, response.content.decode()[:2000]
    return BulkUpload.objects.get(pk=response["Location"].rstrip("/").rsplit("/", 1)[-1])


def page_of(upload_: BulkUpload) -> str:
    return reverse("admin:transfers_transfer_bulk_show", args=(upload_.pk,))


def confirm(client: Client, upload_: BulkUpload, **extra: str):
    return client.post(
        page_of(upload_), {"action": "confirm", "content_hash": upload_.content_hash, **extra}, follow=True
    )


def text_of(response) -> str:
    return re.sub(r"[ \t\r\n]+", " ", response.content.decode())  # a no-break space stays


@pytest.fixture
def payroll(make_account):
    employer = make_account("db1", "20000.00", holder="Acme Payroll")
    staff = [make_account("db2", holder="Wang Fang"), make_account("db1", holder="Li Lei")]
    return employer, staff


def test_preview_shows_each_line_checked_with_names_and_grouped_totals(make_staff, payroll):
    employer, (wang, li) = payroll
    client = logged_in(make_staff("teller"))
    home = client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:transfers_transfer_bulk") in home

    text = HEADER + f'{grouped(employer.number)},{wang.number},"1,250.50",CNY,December pay\n'
    text += f"{employer.number},{li.number},2000,cny,December pay\n"
    before = world_snapshot(employer, wang, li)
    upload_ = uploaded(client, text)
    page = client.get(page_of(upload_))

    html = text_of(page)
    assert page.status_code == 200
    assert "Acme Payroll" in html and "Wang Fang" in html and "Li Lei" in html
    assert "1,250.50\u00a0CNY" in html and "3,250.50\u00a0CNY" in html  # a line and the total
    assert "18,749.50\u00a0CNY left available after it" in html and "16,749.50\u00a0CNY left" in html
    assert 'id="bulk-good">2<' in html and 'id="bulk-bad">0<' in html and 'id="confirm"' in html
    after = world_snapshot(employer, wang, li)
    assert after["audit_events"] == before["audit_events"] + 1  # the upload, on record
    assert {k: v for k, v in after.items() if k != "audit_events"} == {
        k: v for k, v in before.items() if k != "audit_events"
    }
    assert AuditEvent.objects.filter(action="bulk.uploaded", object_id=str(upload_.pk)).exists()


def test_confirm_books_each_line_once_even_sent_twice(make_staff, payroll):
    employer, (wang, li) = payroll
    client = logged_in(make_staff("teller"))
    text = HEADER + f"{employer.number},{wang.number},1000.00,CNY,pay\n{employer.number},{li.number},500,CNY,pay\n"
    upload_ = uploaded(client, text)
    assert uploaded(client, text).pk == upload_.pk  # the upload form sent twice: one upload

    first, second = confirm(client, upload_), confirm(client, upload_)

    assert first.status_code == second.status_code == 200
    assert balances(employer, wang, li) == [Decimal("18500.00"), Decimal("1000.00"), Decimal("500.00")]
    assert Transfer.objects.filter(kind=Transfer.Kind.TRANSFER).count() == 2
    assert TransferBatch.objects.count() == 1
    upload_.refresh_from_db()
    assert upload_.status == BulkUpload.Status.DONE and [r["status"] for r in upload_.results] == ["moved"] * 2
    assert 'id="bulk-moved">2<' in text_of(second) and 'id="download"' in text_of(second)
    executed = AuditEvent.objects.get(action="bulk.executed", object_id=str(upload_.pk))
    assert executed.changes["moved"] == 2


def test_a_line_refused_by_the_engine_leaves_its_accounts_unchanged(make_staff, make_account, payroll):
    employer, (wang, li) = payroll
    poor = make_account("db2", "100.00", holder="Poor Payer")
    client = logged_in(make_staff("teller"))
    text = HEADER + f"{employer.number},{wang.number},300.00,CNY,pay\n{poor.number},{li.number},80.00,CNY,rent\n"
    upload_ = uploaded(client, text)
    # Between preview and confirm the poor payer's money goes elsewhere: the engine refuses the line.
    from bankcore.actors import Actor, Channel
    from transfers.services import transfer_create

    transfer_create(
        actor=Actor.system(Channel.COMMAND, "pytest"),
        source_account=poor.number,
        destination_account=employer.number,
        amount="50.00",
    )

    page = text_of(confirm(client, upload_))

    assert balances(employer, wang, poor, li) == [
        Decimal("19750.00"),
        Decimal("300.00"),
        Decimal("50.00"),
        Decimal("0.00"),
    ]
    assert "insufficient_funds" in page and 'id="bulk-refused" class="bo-neg">1<' in page
    download = client.get(reverse("admin:transfers_transfer_bulk_download", args=(upload_.pk,)))
    rows = list(csv.reader(io.StringIO(download.content.decode())))
    assert rows[0] == [
        "source account",
        "destination account",
        "amount",
        "currency",
        "reference",
        "status",
        "transfer id",
        "error code",
    ]
    moved, refused = rows[1], rows[2]
    assert moved[5] == "moved" and Transfer.objects.get(pk=moved[6]).status == Transfer.Status.COMPLETED
    assert refused[5:] == ["refused", refused[6], "insufficient_funds"]


def test_lines_with_problems_are_said_and_sent_only_when_left_out(make_staff, make_account, payroll):
    employer, (wang, li) = payroll
    usd = make_account("db1", holder="Dollar Holder", currency="USD")
    client = logged_in(make_staff("teller"))
    text = HEADER + "".join(
        [
            f"{employer.number},{wang.number},100.00,CNY,ok\n",
            f"{employer.number},{employer.number},1.00,CNY,same\n",
            f"{employer.number},{usd.number},1.00,CNY,usd\n",
            f"{employer.number},{account_number_make(ledger_code='01', serial=99999)},1.00,CNY,nobody\n",
            f"{employer.number},{li.number},=cmd|' /C calc'!A0,CNY,formula\n",
            f"{employer.number},{li.number},25000.00,CNY,too much\n",
            f"{employer.number},{wang.number},100.00,CNY,ok\n",
            f"{employer.number},{li.number},12.345,CNY,decimals\n",
            f"{employer.number},{li.number},5.00\n",
        ]
    )
    upload_ = uploaded(client, text)
    codes = {line["line"]: [code for _, code in line["problems"]] for line in upload_.lines}
    assert codes == {
        2: [],
        3: ["same_account"],
        4: ["currency_mismatch"],
        5: ["account_not_found"],
        6: ["formula_cell"],
        7: ["insufficient_funds"],
        8: ["duplicate_line"],
        9: ["invalid_amount"],
        10: ["wrong_columns"],
    }
    before = world_snapshot(employer, wang, li, usd)

    refused = text_of(confirm(client, upload_))

    assert "bulk_has_problems" in refused and world_snapshot(employer, wang, li, usd) == before
    confirm(client, upload_, drop_bad="on")
    assert balances(employer, wang, li) == [Decimal("19900.00"), Decimal("100.00"), Decimal("0.00")]
    download = client.get(reverse("admin:transfers_transfer_bulk_download", args=(upload_.pk,))).content.decode()
    rows = list(csv.reader(io.StringIO(download)))
    assert [row[5] for row in rows[1:]] == ["moved"] + ["left out"] * 8
    assert rows[5][2].startswith("'=")  # a formula cell goes back out escaped


@pytest.mark.parametrize(
    "data, code",
    [
        (b"", "empty_file"),
        (HEADER.encode(), "empty_file"),
        (b"from,to,amount\n1,2,3\n", "wrong_columns"),
        (HEADER.encode() + "01000000000011,01000000000029,10.00,CNY,caf\xe9\n".encode("latin-1"), "not_utf8"),
        (HEADER.encode() + b"\x00\x01\x02", "not_csv"),
        (HEADER.encode() + b"01000000000011,01000000000029,1.00,CNY,x\n" * (BATCH_MAX_ITEMS + 1), "batch_too_large"),
        (b"x" * (512 * 1024 + 1), "file_too_large"),
    ],
)
def test_a_hostile_file_is_refused_whole_and_changes_nothing(make_staff, payroll, data, code):
    employer, (wang, li) = payroll
    client = logged_in(make_staff("teller"))
    before = world_snapshot(employer, wang, li)

    response = upload(client, data)

    assert response.status_code == 400 and f"({code})" in text_of(response)
    assert world_snapshot(employer, wang, li) == before and not BulkUpload.objects.exists()
    assert AuditEvent.objects.filter(action="bulk.upload.refused", changes__code=code).exists()


def test_a_confirm_for_other_content_or_by_another_teller_sends_nothing(make_staff, payroll):
    employer, (wang, _) = payroll
    client = logged_in(make_staff("teller"))
    upload_ = uploaded(client, HEADER + f"{employer.number},{wang.number},10.00,CNY,pay\n")
    another = logged_in(make_staff("teller", "teller2"))
    before = world_snapshot(employer, wang)

    other_file = client.post(page_of(upload_), {"action": "confirm", "content_hash": "0" * 64}, follow=True)
    other_teller = another.post(
        page_of(upload_), {"action": "confirm", "content_hash": upload_.content_hash}, follow=True
    )

    assert "bulk_changed" in text_of(other_file) and "bulk_not_found" in text_of(other_teller)
    assert world_snapshot(employer, wang) == before


def above_threshold(employer, wang, li) -> str:
    half = settings.APPROVAL_THRESHOLD / 2 + Decimal("1.00")  # each line below, the total above
    return (
        HEADER + f"{employer.number},{wang.number},{half},CNY,bonus\n{employer.number},{li.number},{half},CNY,bonus\n"
    )


def test_a_batch_above_the_threshold_waits_for_another_supervisor_then_executes(make_staff, payroll):
    employer, (wang, li) = payroll
    teller, supervisor = make_staff("teller"), make_staff("supervisor")
    maker = logged_in(teller)
    upload_ = uploaded(maker, above_threshold(employer, wang, li))
    before = balances(employer, wang, li)

    waiting = text_of(confirm(maker, upload_))

    assert "waits for a supervisor" in waiting and balances(employer, wang, li) == before
    approval = Approval.objects.get()
    assert approval.kind == Approval.Kind.BATCH and approval.status == Approval.Status.PENDING
    assert approval.amount == 2 * (settings.APPROVAL_THRESHOLD / 2 + 1)
    # Counted in the maker's day: a single transfer of theirs waits too.
    assert "APPROVAL_MAKER_DAILY_THRESHOLD" not in waiting
    # The queue's page of the request leads to the batch's, where the lines are.
    checker = logged_in(supervisor)
    assert checker.get(reverse("admin:transfers_approval_change", args=(approval.pk,)))["Location"] == page_of(upload_)
    page = text_of(checker.get(page_of(upload_)))
    assert 'id="approve"' in page and "Wang Fang" in page and "Li Lei" in page
    # The maker cannot approve; the generic approval refuses a batch.
    assert maker.post(page_of(upload_), {"action": "approve"}).status_code == 403
    with pytest.raises(ApprovalDecidedElsewhere):
        from bankcore.actors import Actor, Channel

        approval_approve(actor=Actor.for_user(supervisor, channel=Channel.ADMIN), approval_id=approval.pk)
    assert balances(employer, wang, li) == before

    done = text_of(checker.post(page_of(upload_), {"action": "approve"}, follow=True))

    total = 2 * (settings.APPROVAL_THRESHOLD / 2 + 1)
    assert balances(employer, wang, li) == [before[0] - total, total / 2, total / 2]
    approval.refresh_from_db()
    assert approval.status == Approval.Status.EXECUTED and approval.checker_id == supervisor.pk
    assert 'id="bulk-moved">2<' in done
    created_by = set(Transfer.objects.filter(kind=Transfer.Kind.TRANSFER).values_list("created_by_id", flat=True))
    assert created_by == {teller.pk}  # made as the maker's transfers
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"bulk.uploaded", "approval.requested", "approval.approved", "bulk.executed", "approval.executed"} <= actions
    # Approved twice (a double click): nothing moves again.
    checker.post(page_of(upload_), {"action": "approve"}, follow=True)
    assert balances(employer, wang, li) == [before[0] - total, total / 2, total / 2]


def test_the_maker_cannot_approve_their_own_batch(make_staff, payroll):
    employer, (wang, li) = payroll
    supervisor = make_staff("supervisor")
    client = logged_in(supervisor)
    upload_ = uploaded(client, above_threshold(employer, wang, li))
    confirm(client, upload_)
    before = world_snapshot(employer, wang, li)

    refused = text_of(client.post(page_of(upload_), {"action": "approve"}, follow=True))

    assert "approval_self_approval" in refused
    assert world_snapshot(employer, wang, li)["accounts"] == before["accounts"]
    assert Approval.objects.get().status == Approval.Status.PENDING


@pytest.mark.parametrize("how", ["reject", "withdraw"])
def test_reject_or_withdraw_releases_and_sends_nothing(make_staff, payroll, how):
    employer, (wang, li) = payroll
    maker, checker = logged_in(make_staff("teller")), logged_in(make_staff("supervisor"))
    upload_ = uploaded(maker, above_threshold(employer, wang, li))
    confirm(maker, upload_)
    before = balances(employer, wang, li)

    if how == "reject":
        page = checker.post(page_of(upload_), {"action": "reject", "reason": "not this month"}, follow=True)
    else:
        page = maker.post(page_of(upload_), {"action": "withdraw"}, follow=True)

    assert balances(employer, wang, li) == before and not Transfer.objects.filter(kind=Transfer.Kind.TRANSFER).exists()
    assert "Not sent" in text_of(page) and 'id="approve"' not in text_of(page) and 'id="confirm"' not in text_of(page)
    approved_after = text_of(checker.post(page_of(upload_), {"action": "approve"}, follow=True))
    assert "approval_not_pending" in approved_after and balances(employer, wang, li) == before


def test_a_batch_not_decided_in_time_expires_with_recovery(make_staff, payroll):
    from datetime import timedelta

    from django.utils import timezone

    from transfers.recovery import transfers_recover

    employer, (wang, li) = payroll
    maker, checker = logged_in(make_staff("teller")), logged_in(make_staff("supervisor"))
    upload_ = uploaded(maker, above_threshold(employer, wang, li))
    confirm(maker, upload_)
    before = balances(employer, wang, li)

    report = transfers_recover(now=timezone.now() + timedelta(seconds=settings.APPROVAL_HOLD_SECONDS + 1))

    assert report.actions["approval_expired"] == 1
    assert Approval.objects.get().status == Approval.Status.EXPIRED
    page = text_of(checker.post(page_of(upload_), {"action": "approve"}, follow=True))
    assert "approval_not_pending" in page and "Not sent" in page and balances(employer, wang, li) == before


@pytest.mark.slow
def test_bulk_transfers_in_a_browser(browser, live_server, make_staff, make_account, tmp_path):
    """The teller's way through the page in a real browser; its preview is docs/backoffice.md's
    screenshot (``BANKCORE_SCREENSHOTS``, as ``test_browser.py``'s)."""
    from bankcore.testing.browser import Walk

    teller = make_staff("teller")
    teller.first_name, teller.last_name = "Tina", "Teller"
    teller.save()
    employer = make_account("db1", "30000.00", holder="Acme Payroll")
    staff = [make_account(ledger, holder=name) for ledger, name in (("db2", "Wang Fang"), ("db1", "Li Lei"))]
    closed = make_account("db2", holder="Zhao Left")
    from accounts.services import account_close
    from bankcore.actors import Actor, Channel

    account_close(actor=Actor.system(Channel.COMMAND, "pytest"), number=closed.number, reason="left the company")
    csv_file = tmp_path / "december-payroll.csv"
    csv_file.write_text(
        HEADER
        + f'{grouped(employer.number)},{grouped(staff[0].number)},"4,200.00",CNY,December pay\n'
        + f'{grouped(employer.number)},{grouped(staff[1].number)},"3,650.50",CNY,December pay\n'
        + f'{grouped(employer.number)},{grouped(closed.number)},"1,100.00",CNY,December pay\n'
    )
    directory = Path(os.environ.get("BANKCORE_SCREENSHOTS") or tmp_path / "screenshots")
    w = Walk(browser, live_server.url, directory)

    w.login("teller")
    w.click("#bulk-transfers")
    w.el("#id_file").send_keys(str(csv_file))
    w.click("#submit")
    assert w.text("#bulk-good") == "2" and w.text("#bulk-bad") == "1"
    assert w.text("#bulk-totals") == "7,850.50 CNY"
    assert "Zhao Left's destination account is closed." in w.text("#line-4")
    w.no_horizontal_scroll()
    assert browser.save_screenshot(str(directory / "bulk-teller-preview.png"))
    w.click("#drop-bad", stays=True)
    w.click("#confirm")

    assert w.text("#bulk-moved") == "2" and w.el("#download")
    assert balances(employer, *staff, closed) == [
        Decimal("22149.50"),
        Decimal("4200.00"),
        Decimal("3650.50"),
        Decimal("0.00"),
    ]
