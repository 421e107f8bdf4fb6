"""The batched engine's statements (``transfers.engine.batch``): the steps of
``transfers.ledger_sql`` for many transfers at once, one statement each.

A batch's step locks what it reads (``accounts_lock_and_daily_debits_many``, ``legs_lock``,
``transfers_lock_open``), computes every item's change from it, and writes them in multi-row
INSERTs and one UPDATE per account, deferred to the round trip of its COMMIT. A multi-row INSERT
fails whole when one of its keys is taken (an idempotency key, recovery's tombstone on a leg): the
engine tells which and runs the step again without it.

Portable as ``transfers.ledger_sql`` is (MariaDB/MySQL and the embedded SQLite).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import connections

from bankcore.db import defer, execute, execute_all, table
from transfers.ledger_sql import (
    ACCOUNT,
    ENTRY,
    LEG,
    TRANSFER,
    TRANSFER_COLUMNS,
    LockedAccount,
    accounts_lock_statement,
    locked_accounts,
)
from transfers.models import Transfer, TransferLeg
from transfers.sql_values import UUID_FIELD, db_date, db_datetime, db_uuid, money_from_db


def transfers_insert_many(transfers: Sequence[Transfer]) -> None:
    """Store new transfers in one multi-row INSERT (``transfer_insert`` for many). Deferred: a
    (client, idempotency key) already taken fails it whole, with the next round trip."""
    connection = connections["default"]
    values: list[Any] = []
    for transfer in transfers:
        values += [f.get_db_prep_save(getattr(transfer, f.attname), connection) for f in TRANSFER_COLUMNS]
        transfer._state.adding, transfer._state.db = False, "default"
    row = f"({', '.join(['%s'] * len(TRANSFER_COLUMNS))})"
    defer(
        "default",
        f"INSERT INTO {TRANSFER} ({', '.join(f.column for f in TRANSFER_COLUMNS)}) VALUES "
        + ", ".join([row] * len(transfers)),
        values,
    )


def accounts_currency(ledger: str, pks: list[int]) -> dict[int, tuple[str, str]]:
    """(number, currency) of the accounts that exist among ``pks``, without a lock: what a transfer
    that names no currency takes its source account's from."""
    placeholders = ", ".join(["%s"] * len(pks))
    sql = f"SELECT id, number, currency FROM {table(ledger, ACCOUNT)} WHERE id IN ({placeholders})"
    return {row[0]: (row[1], row[2]) for row in execute(ledger, sql, pks).rows}


def accounts_lock_and_daily_debits_many(
    ledger: str, pks: list[int], *, sources: list[int], business_date: date
) -> tuple[dict[int, LockedAccount], dict[int, Decimal]]:
    """``accounts_lock_and_daily_debits`` for several source accounts: the accounts locked in
    canonical order, then each source's transfer debits of ``business_date``, in one round trip."""
    placeholders = ", ".join(["%s"] * len(sources))
    sql = (
        f"SELECT account_id, COALESCE(SUM(amount), 0) FROM {table(ledger, LEG)} WHERE account_id IN ({placeholders}) "
        "AND business_date = %s AND leg = %s AND kind = %s AND state IN (%s, %s) GROUP BY account_id"
    )
    params = [
        *sources,
        db_date(ledger, business_date),
        TransferLeg.Leg.DEBIT,
        Transfer.Kind.TRANSFER,
        TransferLeg.State.PREPARED,
        TransferLeg.State.COMMITTED,
    ]
    locked, spent = execute_all(ledger, [accounts_lock_statement(ledger, pks), (sql, params)])
    return locked_accounts(locked.rows), {row[0]: money_from_db(row[1]) for row in spent.rows}


@dataclass(frozen=True, slots=True)
class LegRow:
    transfer_id: uuid.UUID
    leg: str
    account_pk: int
    amount: Decimal
    kind: str
    business_date: date


def legs_insert_many(ledger: str, legs: Sequence[LegRow], *, state: str, now: datetime) -> None:
    """Write legs of many transfers in one multi-row INSERT; the unique key (transfer_id, leg)
    fails it whole when one is there already (recovery's tombstone)."""
    stamp = db_datetime(ledger, now)
    values: list[Any] = []
    for leg in legs:
        day = db_date(ledger, leg.business_date)
        values += [
            db_uuid(ledger, leg.transfer_id),
            leg.leg,
            leg.account_pk,
            leg.amount,
            state,
            leg.kind,
            day,
            stamp,
            stamp,
        ]
    columns = "transfer_id, leg, account_id, amount, state, kind, business_date, created_at, updated_at"
    rows = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(legs))
    defer(ledger, f"INSERT INTO {table(ledger, LEG)} ({columns}) VALUES {rows}", values)


def legs_lock(ledger: str, transfer_ids: Sequence[uuid.UUID], *, leg: str) -> dict[uuid.UUID, str]:
    """Lock one leg of each of ``transfer_ids`` (``FOR UPDATE``) and tell its state; a leg not
    there is left out."""
    connection = connections[ledger]
    for_update = " FOR UPDATE" if connection.features.has_select_for_update else ""
    keys = {db_uuid(ledger, transfer_id): transfer_id for transfer_id in transfer_ids}
    placeholders = ", ".join(["%s"] * len(keys))
    sql = (
        f"SELECT transfer_id, state FROM {table(ledger, LEG)} WHERE leg = %s AND transfer_id IN ({placeholders})"
        f"{for_update}"
    )
    rows = execute(ledger, sql, [leg, *keys]).rows
    return {UUID_FIELD.to_python(row[0]): row[1] for row in rows}


def legs_transition_many(
    ledger: str, transfer_ids: Sequence[uuid.UUID], *, leg: str, to_state: str, now: datetime
) -> None:
    """PREPARED → ``to_state`` for one leg of each of ``transfer_ids``, locked by the caller
    (``legs_lock``), in one statement."""
    placeholders = ", ".join(["%s"] * len(transfer_ids))
    defer(
        ledger,
        f"UPDATE {table(ledger, LEG)} SET state = %s, updated_at = %s WHERE leg = %s AND state = %s "
        f"AND transfer_id IN ({placeholders})",
        [
            to_state,
            db_datetime(ledger, now),
            leg,
            TransferLeg.State.PREPARED,
            *(db_uuid(ledger, t) for t in transfer_ids),
        ],
    )


def account_balances_add(
    ledger: str,
    *,
    account_pk: int,
    posted: Decimal,
    pending_debits: Decimal,
    pending_credits: Decimal = Decimal("0.00"),
    now: datetime,
) -> None:
    """Add to a locked account's posted balance and pending counters at once (what a batch's
    step changes on it, summed)."""
    defer(
        ledger,
        f"UPDATE {table(ledger, ACCOUNT)} SET posted = posted + %s, pending_debits = pending_debits + %s, "
        "pending_credits = pending_credits + %s, updated_at = %s WHERE id = %s",
        [posted, pending_debits, pending_credits, db_datetime(ledger, now), account_pk],
    )


@dataclass(frozen=True, slots=True)
class EntryRow:
    account_pk: int
    amount: Decimal
    balance_after: Decimal
    entry_kind: str
    transfer_id: uuid.UUID
    description: str


def entries_insert_many(ledger: str, entries: Sequence[EntryRow], *, now: datetime) -> None:
    """Write the entries of changes made to locked accounts, each with the balance after it, as the
    caller computed it from the balance it read under the lock, in one multi-row INSERT."""
    stamp = db_datetime(ledger, now)
    values: list[Any] = []
    for e in entries:
        values += [
            e.account_pk,
            e.amount,
            e.balance_after,
            e.entry_kind,
            db_uuid(ledger, e.transfer_id),
            e.description[:140],
            stamp,
        ]
    rows = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(entries))
    defer(
        ledger,
        f"INSERT INTO {table(ledger, ENTRY)} (account_id, amount, balance_after, kind, transfer_id, description, "
        f"created_at) VALUES {rows}",
        values,
    )


def transfers_lock_open(transfer_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Lock the transfers among ``transfer_ids`` that are still PENDING or COMMITTED (not yet
    finished by anyone) and return their ids."""
    connection = connections["default"]
    for_update = " FOR UPDATE" if connection.features.has_select_for_update else ""
    keys = {db_uuid("default", transfer_id): transfer_id for transfer_id in transfer_ids}
    placeholders = ", ".join(["%s"] * len(keys))
    rows = execute(
        "default",
        f"SELECT id FROM {TRANSFER} WHERE status IN (%s, %s) AND id IN ({placeholders}){for_update}",
        [Transfer.Status.PENDING, Transfer.Status.COMMITTED, *keys],
    ).rows
    return {UUID_FIELD.to_python(row[0]) for row in rows}


def transfers_mark_completed_many(transfer_ids: Sequence[uuid.UUID], *, now: datetime) -> None:
    """``transfer_mark_completed`` for transfers the caller locked (``transfers_lock_open``)."""
    stamp = db_datetime("default", now)
    placeholders = ", ".join(["%s"] * len(transfer_ids))
    defer(
        "default",
        f"UPDATE {TRANSFER} SET status = %s, finished_at = %s, committed_at = COALESCE(committed_at, %s) "
        f"WHERE id IN ({placeholders})",
        [Transfer.Status.COMPLETED, stamp, stamp, *(db_uuid("default", t) for t in transfer_ids)],
    )


def transfer_mark_aborted(transfer_id: uuid.UUID, *, failure_code: str, failure_detail: str, now: datetime) -> None:
    """PENDING → ABORTED with its reason, for a transfer the caller locked (``transfers_lock_open``)."""
    defer(
        "default",
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
    )


def transfers_mark_committed_many(transfer_ids: Sequence[uuid.UUID], *, now: datetime) -> None:
    """``transfer_mark_committed`` for many: PENDING → COMMITTED. For transfers decided by a
    committed leg, the hint that finishing is left to recovery; for a batch's linked chain (both
    legs prepared), the decision itself, taken for the chain's transfers in one transaction."""
    placeholders = ", ".join(["%s"] * len(transfer_ids))
    execute(
        "default",
        f"UPDATE {TRANSFER} SET status = %s, committed_at = %s WHERE status = %s AND id IN ({placeholders})",
        [
            Transfer.Status.COMMITTED,
            db_datetime("default", now),
            Transfer.Status.PENDING,
            *(db_uuid("default", t) for t in transfer_ids),
        ],
    )
