"""Group commit (``transfers.group_commit``) on real ledgers: single transfers made at the same time
share batches, and each answers exactly what ``transfer_create`` answers alone — booked once, the
same refusals and replays, its own actor in the audit trail — and a crash inside a batch leaves
only what recovery settles."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from functools import partial

import pytest
from django.conf import settings
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from accounts.models import Account
from accounts.services import account_freeze
from audit.models import AuditEvent
from bankcore.actors import Actor, Channel
from bankcore.errors import ApplicationError
from bankcore.faults import FAULT_EXIT_CODE, FAULT_POINTS
from bankcore.testing.books import NOTHING_HELD, balances, held
from bankcore.testing.concurrency import run_threads
from bankcore.testing.plugin import ledger_servers
from bankcore.testing.processes import subprocess_env
from transfers import group_commit
from transfers.models import Transfer
from transfers.reconciliation import reconcile
from transfers.recovery import transfers_recover

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.slow]

Status = Transfer.Status
GROUPED = override_settings(GROUP_COMMIT=True, GROUP_COMMIT_WAIT_MS=20, GROUP_COMMIT_MAX_ITEMS=32)


@pytest.fixture
def batch_sizes(monkeypatch) -> list[int]:
    """The size of every batch group commit makes (the batch engine itself runs as it is)."""
    sizes: list[int] = []
    made = group_commit.transfers_create_batch

    def batch(**arguments):
        sizes.append(len(arguments["items"]))
        return made(**arguments)

    monkeypatch.setattr(group_commit, "transfers_create_batch", batch)
    return sizes


def in_threads(count: int, work: Callable[[int], None]) -> None:
    """``work(i)`` in ``count`` threads started together; fails on the first thread's failure."""
    errors = run_threads(count, work)
    assert not errors, errors


def answer(call: Callable[[], Transfer]) -> tuple[str, str | None, bool]:
    """(outcome, transfer id, replayed): the outcome is the status, or the refusal's code."""
    try:
        transfer = call()
    except ApplicationError as error:
        transfer_id = str(error.transfer.id) if error.transfer is not None else None
        return error.code, transfer_id, error.replayed
    return transfer.status, str(transfer.id), transfer.replayed


def audit_request_ids(transfer_id: str | None, action: str) -> set[str]:
    return set(AuditEvent.objects.filter(object_id=transfer_id, action=action).values_list("request_id", flat=True))


@GROUPED
def test_thirty_two_threads_book_each_transfer_once_and_answer_as_alone(make_account, actor, batch_sizes):
    count = 32
    accounts = [make_account(("db1", "db2")[i % 2], "100.00") for i in range(count)]
    frozen = make_account("db2", "0.00")
    account_freeze(actor=actor, number=frozen.number, reason="test")
    # Thread i: its client (its own keys), five transfers from account i, each its own request.
    plan = [
        ("ok-1", lambda i: accounts[(i + 1) % count].number, lambda i: f"{10 + i}.00", Status.COMPLETED),
        ("funds", lambda i: accounts[(i + 1) % count].number, lambda i: "500.00", "insufficient_funds"),
        ("same", lambda i: accounts[i].number, lambda i: "1.00", "same_account"),
        ("frozen", lambda i: frozen.number, lambda i: "5.00", "account_frozen"),
        ("ok-2", lambda i: accounts[(i + 1) % count].number, lambda i: "20.00", Status.COMPLETED),
    ]
    answers: dict[tuple[int, str], tuple[str, str | None, bool]] = {}
    replays: dict[tuple[int, str], tuple[str, str | None, bool]] = {}

    def post(i: int, into: dict) -> None:
        for key, destination, amount, _ in plan:
            client = Actor(channel=Channel.API, username=f"client-{i}", request_id=f"request-{i}-{key}")
            into[(i, key)] = answer(
                partial(
                    group_commit.transfer_create,
                    actor=client,
                    source_account=accounts[i].number,
                    destination_account=destination(i),
                    amount=amount(i),
                    idempotency_key=key,
                )
            )

    in_threads(count, lambda i: post(i, answers))
    assert max(batch_sizes) > 1, batch_sizes
    for (i, key), (outcome, transfer_id, replayed) in answers.items():
        expected = next(e for k, *_, e in plan if k == key)
        assert (outcome, replayed) == (expected, False), (i, key)
        assert (transfer_id is None) == (key == "same")
    # Each moved once: account i sent 30 + i and received from i - 1.
    assert balances(*accounts) == [Decimal("100.00") - (30 + i) + (30 + (i - 1) % count) for i in range(count)]
    assert balances(frozen) == [Decimal("0.00")]
    assert held(*accounts, frozen) == [NOTHING_HELD] * (count + 1)
    assert Transfer.objects.filter(kind=Transfer.Kind.TRANSFER, status=Status.COMPLETED).count() == 2 * count
    assert Transfer.objects.filter(kind=Transfer.Kind.TRANSFER, status=Status.ABORTED).count() == 2 * count
    assert not Transfer.objects.exclude(status__in=[Status.COMPLETED, Status.ABORTED]).exists()
    # Each transfer's audit event names its own request, whichever thread made its batch.
    for (i, key), (outcome, transfer_id, _) in answers.items():
        if outcome == Status.COMPLETED:
            assert audit_request_ids(transfer_id, "transfer.completed") == {f"request-{i}-{key}"}

    in_threads(count, lambda i: post(i, replays))
    for position, (outcome, transfer_id, replayed) in replays.items():
        assert (outcome, transfer_id) == answers[position][:2]
        assert replayed == (position[1] != "same")  # refused before it was recorded: nothing to replay
    assert balances(*accounts) == [Decimal("100.00") - (30 + i) + (30 + (i - 1) % count) for i in range(count)]
    assert Transfer.objects.count() == 4 * count + count  # and the opening deposits


@GROUPED
@override_settings(GROUP_COMMIT_WAIT_MS=300)
def test_one_key_posted_twice_at_once_books_once(make_account, batch_sizes):
    """The second of the client's two keeps out of the batch the first is in (one batch holds a
    key once) and races it as two requests do: one makes the transfer, the other replays it.
    Another client's key of the same name is its own, in the same batch."""
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    blocked = make_account("db1", "10.00")
    client = Actor(channel=Channel.API, username="partner")
    other_client = Actor(channel=Channel.API, username="another-partner")
    answers: dict[int, tuple[str, str | None, bool]] = {}

    def post(i: int) -> None:
        if i == 0:
            # In progress, waiting for the account's row lock: the others open a window and share it.
            answers[i] = answer(
                lambda: group_commit.transfer_create(
                    actor=client, source_account=blocked.number, destination_account=bob.number, amount="1.00"
                )
            )
            return
        time.sleep(0.3)
        answers[i] = answer(
            lambda: group_commit.transfer_create(
                actor=other_client if i == 3 else client,
                source_account=alice.number,
                destination_account=bob.number,
                amount="25.00",
                idempotency_key="the-key",
            )
        )

    posting = threading.Thread(target=lambda: in_threads(4, post))
    with transaction.atomic(using="db1"):
        Account.objects.using("db1").select_for_update().get(pk=blocked.pk)
        posting.start()
        # The window's leader waits 300 ms and makes the batch; the blocked transfer waits for this block.
        time.sleep(1.5)
    posting.join(timeout=60)
    assert set(answers) == {0, 1, 2, 3}, answers
    assert batch_sizes == [2]
    first, second, other = answers[1], answers[2], answers[3]
    assert first[:2] == (Status.COMPLETED, second[1]) == (second[0], first[1])
    assert sorted([first[2], second[2]]) == [False, True]  # one made it, the other is its replay
    assert other[0] == Status.COMPLETED and other[1] != first[1]  # another client's key of the same name
    assert not other[2]
    assert answers[0][0] == Status.COMPLETED
    assert balances(alice, bob, blocked) == [Decimal("50.00"), Decimal("51.00"), Decimal("9.00")]


@GROUPED
@override_settings(GROUP_COMMIT_WAIT_MS=300)
def test_a_batch_towards_a_stopped_ledger_answers_as_alone_and_its_retries_book_once(make_account, batch_sizes):
    alice, blocked, carol = make_account("db1", "100.00"), make_account("db1", "10.00"), make_account("db1", "0.00")
    bob = make_account("db2", "0.00")
    client = Actor(channel=Channel.API, username="partner")
    send = partial(
        group_commit.transfer_create,
        actor=client,
        source_account=alice.number,
        destination_account=bob.number,
        amount="10.00",
    )
    answers: dict[int, tuple[str, str | None, bool]] = {}

    def post(i: int) -> None:
        if i == 0:  # in progress, waiting for the account's row lock: the others share a batch
            answers[i] = answer(
                partial(
                    group_commit.transfer_create,
                    actor=client,
                    source_account=blocked.number,
                    destination_account=carol.number,
                    amount="1.00",
                )
            )
            return
        time.sleep(0.3)
        answers[i] = answer(partial(send, idempotency_key=f"key-{i}"))

    server = ledger_servers()[1]  # db2's, a server of its own
    server.kill()
    try:
        alone = answer(partial(send, idempotency_key="alone"))
        posting = threading.Thread(target=lambda: in_threads(4, post))
        with transaction.atomic(using="db1"):
            Account.objects.using("db1").select_for_update().get(pk=blocked.pk)
            posting.start()
            time.sleep(1.5)
        posting.join(timeout=60)
    finally:
        server.start()
    assert batch_sizes == [3]
    assert alone[0] == "ledger_unavailable"
    assert [answers[i][0] for i in (1, 2, 3)] == [alone[0]] * 3
    assert balances(alice, bob) == [Decimal("100.00"), Decimal("0.00")]

    later = timezone.now() + timedelta(seconds=settings.TRANSACTION_TIMEOUT + 5)
    transfers_recover(now=later, grace_seconds=0)
    keys = ["alone", "key-1", "key-2", "key-3"]
    retries: dict[int, tuple[str, str | None, bool]] = {}
    in_threads(4, lambda i: retries.__setitem__(i, answer(partial(send, idempotency_key=keys[i]))))
    assert [retries[i][0] for i in range(4)] == [Status.COMPLETED] * 4
    assert balances(alice, bob, blocked, carol) == [
        Decimal("60.00"),
        Decimal("40.00"),
        Decimal("9.00"),
        Decimal("1.00"),
    ]


# --- a crash inside a batch ------------------------------------------------------------------------

# (fault point, commits shared with the control plane's server): every point of the batched engine
# that unlinked items pass (``after_batch_link`` is a linked chain's), reached by a batch across
# ledgers both ways, inside a ledger and towards a frozen account.
CRASHES = [
    ("after_batch_accept", True),
    ("after_batch_prepare", True),
    ("after_batch_decide", True),
    ("after_batch_finish", True),
    ("after_batch_decide", False),
    ("after_batch_finish", False),
]


def test_every_fault_point_of_the_batched_engine_is_exercised():
    batched = {fault for fault in FAULT_POINTS if fault.startswith("after_batch_")}
    assert {fault for fault, _ in CRASHES} == batched - {"after_batch_link"}


@pytest.mark.parametrize(("fault", "shared"), CRASHES)
def test_a_crash_inside_a_batch_leaves_only_what_recovery_settles(make_account, actor, fault, shared):
    a1, b1 = make_account("db1", "100.00"), make_account("db1", "100.00")
    a2, b2 = make_account("db2", "100.00"), make_account("db2", "100.00")
    frozen = make_account("db1", "0.00")
    account_freeze(actor=actor, number=frozen.number, reason="test")
    everyone = [a1, b1, a2, b2, frozen]
    pairs = [(a1, a2), (b2, b1), (a2, b2), (b1, frozen), (b2, a1)]
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "transfers.tests.group_commit_worker",
            *(f"{source.number}:{destination.number}" for source, destination in pairs),
        ],
        env=subprocess_env(
            BANKCORE_FAULT_AT=fault,
            BANKCORE_SHARED_COMMITS=str(shared).lower(),
            GROUP_COMMIT="true",
            GROUP_COMMIT_WAIT_MS="100",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=settings.BASE_DIR,
    )
    assert child.returncode == FAULT_EXIT_CODE, child.stdout + child.stderr
    assert f"batch {len(pairs)}" in child.stdout.split("\n"), child.stdout
    later = timezone.now() + timedelta(seconds=settings.TRANSACTION_TIMEOUT + 5)
    transfers_recover(now=later, grace_seconds=0)
    assert transfers_recover(now=later, grace_seconds=0).total == 0
    assert not Transfer.objects.exclude(status__in=[Status.COMPLETED, Status.ABORTED]).exists()
    assert sum(balances(*everyone)) == Decimal("400.00")
    assert all(balance >= 0 for balance in balances(*everyone))
    assert balances(frozen) == [Decimal("0.00")]
    assert held(*everyone) == [NOTHING_HELD] * len(everyone)
    assert reconcile().ok
