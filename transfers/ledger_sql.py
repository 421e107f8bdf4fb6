"""The statements of the transfer engine's hot path, written once as SQL.

Why not the ORM here: Django compiles every queryset anew, and a cross-ledger transfer makes about
25 statements: compiling them would cost more than the databases' own work (docs/performance.md).
These statements never change shape, so they are plain SQL on the ORM's own tables, run on
Django's connections through ``bankcore.db``: same transactions (``atomic_with_retry``), same error
translation (IntegrityError, OperationalError), same retry on 1213/1205. A write whose result
nothing needs before the commit is ``defer``-red: it travels with the next round trip, so each step
of the protocol is at most two round trips (what the step must read, then its writes and COMMIT),
and its error is raised there, inside the same transaction.

Portable between MariaDB/MySQL and SQLite (the embedded default): ``FOR UPDATE`` only where the
backend has it, and values passed and read back as ``transfers.sql_values`` says. The batched
engine's statements are in ``transfers.batch_sql``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import connections

from accounts.models import Account, Entry
from bankcore.db import Result, Statement, defer, execute, execute_all, table
from transfers.models import Transfer, TransferLeg
from transfers.sql_values import db_date, db_datetime, db_uuid, money_from_db

ACCOUNT = Account._meta.db_table
ENTRY = Entry._meta.db_table
LEG = TransferLeg._meta.db_table
TRANSFER = Transfer._meta.db_table
PENDING_FIELDS = frozenset({"pending_debits", "pending_credits"})


@dataclass(frozen=True, slots=True)
class LockedAccount:
    """What the engine needs of an account it holds the row lock of."""

    pk: int
    number: str
    status: str
    currency: str
    kind: str
    allow_overdraft: bool
    posted: Decimal
    pending_debits: Decimal

    @property
    def available(self) -> Decimal:
        return self.posted - self.pending_debits


def _execute(alias: str, sql: str, params: Sequence[Any]) -> int:
    return execute(alias, sql, params).rowcount


# --- ledger statements ----------------------------------------------------------------------------


def accounts_lock_statement(ledger: str, pks: list[int]) -> Statement:
    connection = connections[ledger]
    ordered = sorted(set(pks))
    placeholders = ", ".join(["%s"] * len(ordered))
    for_update = " FOR UPDATE" if connection.features.has_select_for_update else ""
    return (
        f"SELECT id, number, status, currency, kind, allow_overdraft, posted, pending_debits FROM {table(ledger, ACCOUNT)} "
        f"WHERE id IN ({placeholders}) ORDER BY id{for_update}",
        ordered,
    )


def locked_accounts(rows: list[tuple[Any, ...]]) -> dict[int, LockedAccount]:
    return {
        row[0]: LockedAccount(
            pk=row[0],
            number=row[1],
            status=row[2],
            currency=row[3],
            kind=row[4],
            allow_overdraft=bool(row[5]),
            posted=money_from_db(row[6]),
            pending_debits=money_from_db(row[7]),
        )
        for row in rows
    }


def accounts_lock(ledger: str, pks: list[int]) -> dict[int, LockedAccount]:
    """Lock accounts ``FOR UPDATE`` in primary-key order (the canonical order; see
    ``accounts.lock_objects``). Missing ones are absent from the result."""
    return locked_accounts(execute(ledger, *accounts_lock_statement(ledger, pks)).rows)


def accounts_lock_and_daily_debits(
    ledger: str, pks: list[int], *, account_pk: int, business_date: date
) -> tuple[dict[int, LockedAccount], Decimal]:
    """``accounts_lock``, then the transfer debits of ``account_pk`` on ``business_date`` that are
    prepared or committed, in one round trip. The sum is a statement of its own after the locking
    one: under READ COMMITTED it reads a snapshot taken once the lock is held, so it sees every
    debit leg of the account (each written under that lock) committed before."""
    locked, spent = execute_all(
        ledger,
        [
            accounts_lock_statement(ledger, pks),
            (_daily_debits_sql(ledger), _daily_debits_params(ledger, account_pk, business_date)),
        ],
    )
    return locked_accounts(locked.rows), money_from_db(spent.rows[0][0])


BALANCE_FIELDS = PENDING_FIELDS | {"posted"}


def account_change_checked(
    ledger: str,
    *,
    account_pk: int,
    number: str,
    currency: str,
    field: str,
    delta: Decimal,
    now: datetime,
    funds: Decimal | None = None,
    customer_only: bool = False,
    daily_debits_on: date | None = None,
) -> tuple[bool, str | None, Decimal]:
    """Add ``delta`` to one of an account's balance fields by a conditional ``UPDATE`` that is also
    the check: the account exists under that number, is neither frozen nor closed, holds
    ``currency``, with ``customer_only`` is a customer's, and, with ``funds``, has that much
    available (or may overdraw). The UPDATE takes
    the row lock, so no ``SELECT … FOR UPDATE`` is needed first. With ``daily_debits_on``, a second
    statement in the same round trip reads the account's kind and its transfer debits of that day
    that are prepared or committed: a statement of its own after the locking one, so under READ
    COMMITTED it sees every debit leg committed under the lock before (see
    ``accounts_lock_and_daily_debits``). Returns (changed, kind, debits); when nothing changed the
    caller finds out why under ``accounts_lock`` (the refusal path only)."""
    statements: list[Statement] = [
        _account_change_statement(
            ledger,
            account_pk=account_pk,
            number=number,
            currency=currency,
            field=field,
            delta=delta,
            now=now,
            funds=funds,
            customer_only=customer_only,
        )
    ]
    if daily_debits_on is not None:
        statements.append(
            (
                f"SELECT kind, ({_daily_debits_sql(ledger)}) FROM {table(ledger, ACCOUNT)} WHERE id = %s",
                [*_daily_debits_params(ledger, account_pk, daily_debits_on), account_pk],
            )
        )
    results = execute_all(ledger, statements)
    if results[0].rowcount != 1:
        return False, None, Decimal("0.00")
    if daily_debits_on is None:
        return True, None, Decimal("0.00")
    kind, spent = results[1].rows[0]
    return True, kind, money_from_db(spent)


def _account_checks(*, number: str, currency: str, funds: Decimal | None, customer_only: bool) -> tuple[str, list[Any]]:
    """The account checks as one SQL condition on its row: there under that number, neither
    frozen nor closed, in ``currency``, with ``customer_only`` a customer's (not a ledger's
    internal cash account), and with ``funds`` that much available (or overdraft)."""
    sql = "number = %s AND status NOT IN (%s, %s) AND currency = %s"
    params: list[Any] = [number, Account.Status.FROZEN, Account.Status.CLOSED, currency]
    if customer_only:
        sql += " AND kind = %s"
        params.append(Account.Kind.CUSTOMER)
    if funds is not None:
        # Cast: SQLite gets the amount as text, and compares an expression (no column affinity)
        # with text as text; DECIMAL(20, 2) is the balance columns' own type, exact on MySQL.
        sql += " AND (allow_overdraft OR posted - pending_debits >= CAST(%s AS DECIMAL(20, 2)))"
        params.append(funds)
    return sql, params


def _account_change_statement(
    ledger: str,
    *,
    account_pk: int,
    number: str,
    currency: str,
    field: str,
    delta: Decimal,
    now: datetime,
    funds: Decimal | None,
    customer_only: bool,
) -> Statement:
    assert field in BALANCE_FIELDS
    checks, params = _account_checks(number=number, currency=currency, funds=funds, customer_only=customer_only)
    return (
        f"UPDATE {table(ledger, ACCOUNT)} SET {field} = {field} + %s, updated_at = %s WHERE id = %s AND {checks}",
        [delta, db_datetime(ledger, now), account_pk, *params],
    )


def _daily_debits_sql(ledger: str) -> str:
    """The transfer debits of one account on one business day that are prepared or committed."""
    return (
        f"SELECT COALESCE(SUM(amount), 0) FROM {table(ledger, LEG)} WHERE account_id = %s AND business_date = %s "
        "AND leg = %s AND kind = %s AND state IN (%s, %s)"
    )


def _daily_debits_params(ledger: str, account_pk: int, business_date: date) -> list[Any]:
    return [
        account_pk,
        db_date(ledger, business_date),
        TransferLeg.Leg.DEBIT,
        Transfer.Kind.TRANSFER,
        TransferLeg.State.PREPARED,
        TransferLeg.State.COMMITTED,
    ]


# The session variable a batched step's conditional writes test: 1 when the statement that
# decides the step (a checked account change, a claim) changed what it had to. Set right after
# that statement, in the same round trip (``bankcore.db.batching``).
VERDICT_OK = "@bankcore_ok = 1"


class Verdict:
    """Whether a deferred deciding statement changed its rows, known once its round trip ran."""

    def __init__(self, rows: int) -> None:
        self.rows, self.changed = rows, False

    def take(self, result: Result) -> None:
        self.changed = result.rowcount == self.rows

    def __bool__(self) -> bool:
        return self.changed


def _deferred_verdict(ledger: str, statement: Statement, *, rows: int) -> Verdict:
    verdict = Verdict(rows)
    defer(ledger, *statement, on_result=verdict.take)
    defer(ledger, f"SET @bankcore_ok := (ROW_COUNT() = {rows})", [])
    return verdict


def account_change_checked_deferred(
    ledger: str,
    *,
    account_pk: int,
    number: str,
    currency: str,
    field: str,
    delta: Decimal,
    now: datetime,
    funds: Decimal | None = None,
    customer_only: bool = False,
    daily_debits_on: date | None = None,
    daily_limit: Decimal | None = None,
) -> Verdict:
    """``account_change_checked`` for a batched step (``bankcore.db.batching``): nothing is read
    back before the COMMIT. The checks (and, with ``daily_limit``, the day's debits of a customer
    account plus this one at most that) set the session's verdict, the change is made only if it
    holds, the step's writes after it carry ``only_if=VERDICT_OK``, and the COMMIT travels in the
    same round trip (an empty commit when the checks refused). The returned ``Verdict`` is true
    once that round trip ran if the account was changed."""
    if daily_limit is None:
        statement = _account_change_statement(
            ledger,
            account_pk=account_pk,
            number=number,
            currency=currency,
            field=field,
            delta=delta,
            now=now,
            funds=funds,
            customer_only=customer_only,
        )
        return _deferred_verdict(ledger, statement, rows=1)
    # With a daily limit the sum of the day's debits must be read once the row lock is held (every
    # debit leg of the account is written under it): lock first, then the whole verdict in a
    # statement of its own, a fresh READ COMMITTED read after the lock, then the change if it holds.
    assert daily_debits_on is not None and field in BALANCE_FIELDS
    accounts = table(ledger, ACCOUNT)
    checks, params = _account_checks(number=number, currency=currency, funds=funds, customer_only=customer_only)
    defer(ledger, f"SELECT id FROM {accounts} WHERE id = %s FOR UPDATE", [account_pk])
    defer(
        ledger,
        f"SET @bankcore_ok := COALESCE((SELECT {checks} AND (kind <> %s OR ({_daily_debits_sql(ledger)}) + "
        f"CAST(%s AS DECIMAL(20, 2)) <= CAST(%s AS DECIMAL(20, 2))) FROM {accounts} WHERE id = %s), 0)",
        [
            *params,
            Account.Kind.CUSTOMER,
            *_daily_debits_params(ledger, account_pk, daily_debits_on),
            abs(delta),
            daily_limit,
            account_pk,
        ],
    )
    verdict = Verdict(1)
    defer(
        ledger,
        f"UPDATE {accounts} SET {field} = {field} + %s, updated_at = %s WHERE id = %s AND {VERDICT_OK}",
        [delta, db_datetime(ledger, now), account_pk],
        on_result=verdict.take,
    )
    return verdict


def entry_insert(
    ledger: str,
    *,
    account_pk: int,
    amount: Decimal,
    transfer_id: uuid.UUID,
    entry_kind: str,
    description: str,
    now: datetime,
    only_if: str = "",
) -> None:
    """The entry of a change just made to the account's posted balance, with the balance after it
    (read in the same transaction, under the row lock the change took)."""
    condition = f" AND {only_if}" if only_if else ""
    defer(
        ledger,
        f"INSERT INTO {table(ledger, ENTRY)} (account_id, amount, balance_after, kind, transfer_id, description, "
        f"created_at) SELECT id, %s, posted, %s, %s, %s, %s FROM {table(ledger, ACCOUNT)} WHERE id = %s{condition}",
        [amount, entry_kind, db_uuid(ledger, transfer_id), description[:140], db_datetime(ledger, now), account_pk],
    )


def pending_add(ledger: str, *, account_pk: int, field: str, amount: Decimal, now: datetime) -> None:
    """Hold ``amount`` (positive) or release it (negative) in a pending counter."""
    assert field in PENDING_FIELDS
    defer(
        ledger,
        f"UPDATE {table(ledger, ACCOUNT)} SET {field} = {field} + %s, updated_at = %s WHERE id = %s",
        [amount, db_datetime(ledger, now), account_pk],
    )


def legs_insert(
    ledger: str,
    *,
    transfer_id: uuid.UUID,
    legs: list[tuple[str, int | None]],
    amount: Decimal,
    state: str,
    kind: str,
    business_date: date,
    now: datetime,
    only_if: str = "",
) -> None:
    """Write legs ``(leg, account pk)`` of one transfer. The unique key (transfer_id, leg) makes a
    second prepare — or a prepare after recovery's VOIDED tombstone — fail with IntegrityError.
    ``only_if``: a condition (``VERDICT_OK``) for a single leg, written only when it holds."""
    stamp, day = db_datetime(ledger, now), db_date(ledger, business_date)
    values: list[Any] = []
    for leg, account_pk in legs:
        values += [db_uuid(ledger, transfer_id), leg, account_pk, amount, state, kind, day, stamp, stamp]
    columns = "transfer_id, leg, account_id, amount, state, kind, business_date, created_at, updated_at"
    if only_if:
        assert len(legs) == 1
        source = f"SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s FROM DUAL WHERE {only_if}"
    else:
        source = "VALUES " + ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(legs))
    defer(ledger, f"INSERT INTO {table(ledger, LEG)} ({columns}) {source}", values)


def _leg_transition_statement(
    ledger: str, *, transfer_id: uuid.UUID, leg: str, to_state: str, now: datetime
) -> Statement:
    return (
        f"UPDATE {table(ledger, LEG)} SET state = %s, updated_at = %s WHERE transfer_id = %s AND leg = %s AND state = %s",
        [to_state, db_datetime(ledger, now), db_uuid(ledger, transfer_id), leg, TransferLeg.State.PREPARED],
    )


def leg_transition(ledger: str, *, transfer_id: uuid.UUID, leg: str, to_state: str, now: datetime) -> bool:
    """PREPARED → ``to_state`` by a conditional update: True for exactly one caller."""
    statement = _leg_transition_statement(ledger, transfer_id=transfer_id, leg=leg, to_state=to_state, now=now)
    return _execute(ledger, *statement) == 1


def leg_exists(ledger: str, *, transfer_id: uuid.UUID, leg: str) -> bool:
    """Whether the ledger holds the leg in any state (a tombstone included)."""
    sql = f"SELECT 1 FROM {table(ledger, LEG)} WHERE transfer_id = %s AND leg = %s"
    return bool(execute(ledger, sql, [db_uuid(ledger, transfer_id), leg]).rows)


def leg_and_transfer_claim_deferred(ledger: str, *, transfer_id: uuid.UUID, leg: str, now: datetime) -> Verdict:
    """The home leg PREPARED → COMMITTED and its transfer PENDING/COMMITTED → COMPLETED by one
    update of both rows (two databases of one server: the ledger joined the control plane's
    transaction), so both change or neither does; batched, it sets the verdict the finishing
    writes carry (``VERDICT_OK``), and the COMMIT travels in the same round trip."""
    stamp = db_datetime("default", now)
    statement: Statement = (
        f"UPDATE {table(ledger, LEG)} AS l, {TRANSFER} AS t "
        "SET l.state = %s, l.updated_at = %s, t.status = %s, t.finished_at = %s, "
        "t.committed_at = COALESCE(t.committed_at, %s) "
        "WHERE l.transfer_id = %s AND l.leg = %s AND l.state = %s AND t.id = %s AND t.status IN (%s, %s)",
        [
            TransferLeg.State.COMMITTED,
            db_datetime(ledger, now),
            Transfer.Status.COMPLETED,
            stamp,
            stamp,
            db_uuid(ledger, transfer_id),
            leg,
            TransferLeg.State.PREPARED,
            db_uuid("default", transfer_id),
            Transfer.Status.PENDING,
            Transfer.Status.COMMITTED,
        ],
    )
    return _deferred_verdict("default", statement, rows=2)


def leg_void_and_transfer_abort(
    ledger: str, *, transfer_id: uuid.UUID, leg: str, now: datetime, failure_code: str, failure_detail: str
) -> tuple[bool, bool]:
    """The leg PREPARED → VOIDED and the transfer PENDING → ABORTED with its reason, two
    conditional updates in one round trip, for a transaction of the control plane that the leg's
    ledger joined (``bankcore.db.server_transaction``). Returns which of the two changed a row:
    each may happen without the other (recovery may have done one)."""
    voided, aborted = execute_all(
        "default",
        [
            _leg_transition_statement(
                ledger, transfer_id=transfer_id, leg=leg, to_state=TransferLeg.State.VOIDED, now=now
            ),
            (
                f"UPDATE {TRANSFER} SET status = %s, finished_at = %s, failure_code = %s, failure_detail = %s "
                "WHERE id = %s AND status = %s",
                [
                    Transfer.Status.ABORTED,
                    db_datetime("default", now),
                    failure_code,
                    failure_detail,
                    db_uuid("default", transfer_id),
                    Transfer.Status.PENDING,
                ],
            ),
        ],
    )
    return voided.rowcount == 1, aborted.rowcount == 1


def post(
    ledger: str,
    *,
    account_pk: int,
    delta: Decimal,
    transfer_id: uuid.UUID,
    entry_kind: str,
    description: str,
    now: datetime,
    release_pending: str | None = None,
    only_if: str = "",
) -> None:
    """Change a locked account's posted balance by ``delta`` (and release the same amount from a
    pending counter), then write its entry with the balance after, read in the same transaction.
    ``only_if``: both only when that condition (``VERDICT_OK``) holds."""
    stamp = db_datetime(ledger, now)
    condition = f" AND {only_if}" if only_if else ""
    release = ""
    params: list[Any] = [delta]
    if release_pending:
        assert release_pending in PENDING_FIELDS
        release = f", {release_pending} = {release_pending} - %s"
        params.append(abs(delta))
    defer(
        ledger,
        f"UPDATE {table(ledger, ACCOUNT)} SET posted = posted + %s{release}, updated_at = %s WHERE id = %s{condition}",
        [*params, stamp, account_pk],
    )
    entry_insert(
        ledger,
        account_pk=account_pk,
        amount=delta,
        transfer_id=transfer_id,
        entry_kind=entry_kind,
        description=description,
        now=now,
        only_if=only_if,
    )


# --- control-plane statements ---------------------------------------------------------------------

TRANSFER_COLUMNS = [f for f in Transfer._meta.concrete_fields]
_TRANSFER_INSERT = (
    f"INSERT INTO {TRANSFER} ({', '.join(f.column for f in TRANSFER_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(TRANSFER_COLUMNS))})"
)


def transfer_insert(transfer: Transfer) -> None:
    """Store a new transfer (every column, as the model's fields prepare them). Deferred: when its
    (client, idempotency key) is taken, the IntegrityError comes with the transaction's next round
    trip, at the latest its COMMIT."""
    connection = connections["default"]
    defer(
        "default",
        _TRANSFER_INSERT,
        [f.get_db_prep_save(getattr(transfer, f.attname), connection) for f in TRANSFER_COLUMNS],
    )
    transfer._state.adding, transfer._state.db = False, "default"


def transfer_lock_for_reversal(transfer_id: uuid.UUID) -> tuple[str, str, bool] | None:
    """Lock a transfer's row (``FOR UPDATE``) and tell its kind, its status and whether a reversal
    of it is live (not aborted); None if there is no such transfer. One round trip: the second
    read is a statement of its own after the locking one, so it sees what the lock's last holder
    committed (as ``accounts_lock_and_daily_debits``)."""
    connection = connections["default"]
    for_update = " FOR UPDATE" if connection.features.has_select_for_update else ""
    key = db_uuid("default", transfer_id)
    locked, live = execute_all(
        "default",
        [
            (f"SELECT kind, status FROM {TRANSFER} WHERE id = %s{for_update}", [key]),
            (
                f"SELECT 1 FROM {TRANSFER} WHERE reversal_of_id = %s AND status <> %s LIMIT 1",
                [key, Transfer.Status.ABORTED],
            ),
        ],
    )
    if not locked.rows:
        return None
    return locked.rows[0][0], locked.rows[0][1], bool(live.rows)


def transfer_mark_committed(transfer_id: uuid.UUID, *, now: datetime) -> bool:
    """PENDING → COMMITTED: the control plane's note that the decision (the committed credit leg)
    was taken and finishing is left to recovery. True for exactly one caller."""
    stamp = db_datetime("default", now)
    changed = _execute(
        "default",
        f"UPDATE {TRANSFER} SET status = %s, committed_at = %s WHERE id = %s AND status = %s",
        [Transfer.Status.COMMITTED, stamp, db_uuid("default", transfer_id), Transfer.Status.PENDING],
    )
    return changed == 1


def transfer_mark_completed(transfer_id: uuid.UUID, *, now: datetime) -> bool:
    """PENDING (local) or COMMITTED (cross-ledger) → COMPLETED. True for exactly one caller."""
    stamp = db_datetime("default", now)
    changed = _execute(
        "default",
        f"UPDATE {TRANSFER} SET status = %s, finished_at = %s, committed_at = COALESCE(committed_at, %s) "
        "WHERE id = %s AND status IN (%s, %s)",
        [
            Transfer.Status.COMPLETED,
            stamp,
            stamp,
            db_uuid("default", transfer_id),
            Transfer.Status.PENDING,
            Transfer.Status.COMMITTED,
        ],
    )
    return changed == 1
