"""Recovery's statements for many transfers at once (``transfers.recovery``).

One recovery step for one transfer costs a ledger or the control plane a transaction of its own:
thousands of stuck transfers (a ledger back after an outage) took thousands of commits. Here each
step is one transaction per server for a whole batch, in three round trips at most, and exactly
once as the single steps are (``transfers.engine.legs``, ``transfers.engine.outcome``): the rows a
step changes are first locked by a locking read that keeps only those still in the state the step
starts from (a leg PREPARED, a transfer PENDING or COMMITTED), and the step changes exactly those,
so that a second recovery worker, or a coordinator finishing its own transfer, that got there first
leaves this batch without them. A tombstone is guarded by the legs' unique key. Accounts are
locked after the legs, in primary-key order, as the engine's finish does, so two batches never wait
on each other in a cycle.

Portable as ``transfers.ledger_sql`` is (MariaDB/MySQL and the embedded SQLite).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import connections

from bankcore.db import atomic_with_retry, defer, execute, table
from transfers.ledger_sql import ACCOUNT, ENTRY, LEG, TRANSFER
from transfers.models import Transfer, TransferLeg
from transfers.sql_values import db_date, db_datetime, db_uuid, money_from_db

# Rows a statement names at most: a batch larger than this goes in several statements of one
# transaction.
KEYS_PER_STATEMENT = 1000
# Accounts one UPDATE changes at most: the server tries a CASE's branches one by one for every row,
# so that a statement's cost grows with the square of its accounts.
ACCOUNTS_PER_STATEMENT = 100

Leg = TransferLeg.Leg
LegState = TransferLeg.State
LegKey = tuple[uuid.UUID, str]  # (transfer id, leg): the legs' unique key


@dataclass(frozen=True, slots=True)
class LegRow:
    """A leg as its ledger holds it."""

    state: str
    account_pk: int | None  # None: a tombstone
    amount: Decimal
    kind: str
    business_date: date


def _chunks(items: Sequence[Any], size: int = KEYS_PER_STATEMENT) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _for_update(alias: str) -> str:
    return " FOR UPDATE" if connections[alias].features.has_select_for_update else ""


def _keys_in(alias: str, keys: Sequence[LegKey]) -> tuple[str, list[Any]]:
    """SQL for ``(transfer_id, leg) IN (…)``: a range of the legs' unique key."""
    params: list[Any] = []
    for transfer_id, leg in keys:
        params += [db_uuid(alias, transfer_id), leg]
    return f"(transfer_id, leg) IN ({', '.join(['(%s, %s)'] * len(keys))})", params


def _ids_in(alias: str, column: str, ids: Sequence[uuid.UUID]) -> tuple[str, list[Any]]:
    return f"{column} IN ({', '.join(['%s'] * len(ids))})", [db_uuid(alias, pk) for pk in ids]


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def recovery_legs_read(ledger: str, transfer_ids: Sequence[uuid.UUID]) -> dict[LegKey, LegRow]:
    """Every leg the ledger holds of these transfers, by its key: ``KEYS_PER_STATEMENT`` transfers
    a query."""
    found: dict[LegKey, LegRow] = {}
    for ids in _chunks(transfer_ids):
        where, params = _ids_in(ledger, "transfer_id", ids)
        rows = execute(
            ledger,
            f"SELECT transfer_id, leg, state, account_id, amount, kind, business_date FROM {LEG} WHERE {where}",
            params,
        ).rows
        for transfer_id, leg, state, account_pk, amount, kind, business_date in rows:
            found[(_as_uuid(transfer_id), leg)] = LegRow(state, account_pk, money_from_db(amount), kind, business_date)
    return found


def _prepared_locked(ledger: str, keys: Sequence[LegKey]) -> list[tuple[LegKey, int, Decimal]]:
    """Inside the ledger's transaction: lock those of ``keys`` that are PREPARED, in key order, and
    return them with their account and amount."""
    locked: list[tuple[LegKey, int, Decimal]] = []
    for chunk in _chunks(sorted(keys)):
        where, params = _keys_in(ledger, chunk)
        rows = execute(
            ledger,
            f"SELECT transfer_id, leg, account_id, amount FROM {table(ledger, LEG)} WHERE state = %s AND {where} "
            f"ORDER BY transfer_id, leg{_for_update(ledger)}",
            [LegState.PREPARED, *params],
        ).rows
        locked += [((_as_uuid(t), leg), account_pk, money_from_db(amount)) for t, leg, account_pk, amount in rows]
    return locked


def _legs_transition(ledger: str, keys: Sequence[LegKey], to_state: str, now: datetime) -> None:
    for chunk in _chunks(keys):
        where, params = _keys_in(ledger, chunk)
        defer(
            ledger,
            f"UPDATE {table(ledger, LEG)} SET state = %s, updated_at = %s WHERE state = %s AND {where}",
            [to_state, db_datetime(ledger, now), LegState.PREPARED, *params],
        )


def _accounts_change(ledger: str, changes: dict[int, dict[str, Decimal]], now: datetime) -> None:
    """Add to each account's fields its sum of the batch's changes, one UPDATE per chunk of
    accounts (``CASE`` on the primary key), in primary-key order."""
    pks = sorted(changes)
    for chunk in _chunks(pks, ACCOUNTS_PER_STATEMENT):
        fields = sorted({name for pk in chunk for name in changes[pk]})
        assignments, params = [], []
        for name in fields:
            assert name in ("posted", "pending_debits", "pending_credits")
            cases = []
            for pk in chunk:
                cases.append("WHEN %s THEN %s")
                params += [pk, changes[pk].get(name, Decimal("0"))]
            assignments.append(f"{name} = {name} + CASE id {' '.join(cases)} ELSE 0 END")
        where, ids = f"id IN ({', '.join(['%s'] * len(chunk))})", list(chunk)
        defer(
            ledger,
            f"UPDATE {table(ledger, ACCOUNT)} SET {', '.join(assignments)}, updated_at = %s WHERE {where}",
            [*params, db_datetime(ledger, now), *ids],
        )


def _pending_field(leg: str) -> str:
    return "pending_debits" if leg == Leg.DEBIT else "pending_credits"


def recovery_legs_commit(ledger: str, legs: dict[LegKey, tuple[str, str]], now: datetime) -> list[LegKey]:
    """PREPARED → COMMITTED for those of ``legs`` (key → the entry's kind and description) still
    prepared, in one transaction: the legs locked, then their accounts (primary-key order), each
    leg's amount posted and released from its pending counter (one UPDATE per hundred accounts),
    and its entry written with the balance after it (one multi-row INSERT). Returns the legs this
    call committed."""

    def commit() -> list[LegKey]:
        locked = _prepared_locked(ledger, list(legs))
        if not locked:
            return []
        pks = sorted({account_pk for _, account_pk, _ in locked})
        balance: dict[int, Decimal] = {}
        for chunk in _chunks(pks):
            rows = execute(
                ledger,
                f"SELECT id, posted FROM {table(ledger, ACCOUNT)} WHERE id IN ({', '.join(['%s'] * len(chunk))}) "
                f"ORDER BY id{_for_update(ledger)}",
                list(chunk),
            ).rows
            balance.update((pk, money_from_db(posted)) for pk, posted in rows)
        changes: dict[int, dict[str, Decimal]] = defaultdict(dict)
        entries: list[Any] = []
        stamp = db_datetime(ledger, now)
        for (transfer_id, leg), account_pk, amount in locked:
            delta = -amount if leg == Leg.DEBIT else amount
            change = changes[account_pk]
            change["posted"] = change.get("posted", Decimal("0")) + delta
            field = _pending_field(leg)
            change[field] = change.get(field, Decimal("0")) - amount
            balance[account_pk] += delta
            kind, description = legs[(transfer_id, leg)]
            entries.append(
                [account_pk, delta, balance[account_pk], kind, db_uuid(ledger, transfer_id), description[:140], stamp]
            )
        keys = [key for key, _, _ in locked]
        _legs_transition(ledger, keys, LegState.COMMITTED, now)
        _accounts_change(ledger, changes, now)
        for chunk in _chunks(entries):
            defer(
                ledger,
                f"INSERT INTO {table(ledger, ENTRY)} (account_id, amount, balance_after, kind, transfer_id, "
                f"description, created_at) VALUES {', '.join(['(%s, %s, %s, %s, %s, %s, %s)'] * len(chunk))}",
                [value for row in chunk for value in row],
            )
        return keys

    return atomic_with_retry(ledger, commit)


def recovery_legs_void(ledger: str, keys: Sequence[LegKey], now: datetime) -> list[LegKey]:
    """PREPARED → VOIDED for those of ``keys`` still prepared, in one transaction, their amounts
    released from the pending counters (one UPDATE per hundred accounts). Returns the legs this
    call voided."""

    def void() -> list[LegKey]:
        locked = _prepared_locked(ledger, keys)
        changes: dict[int, dict[str, Decimal]] = defaultdict(dict)
        for (_, leg), account_pk, amount in locked:
            field = _pending_field(leg)
            changes[account_pk][field] = changes[account_pk].get(field, Decimal("0")) - amount
        done = [key for key, _, _ in locked]
        if done:
            _legs_transition(ledger, done, LegState.VOIDED, now)
            _accounts_change(ledger, changes, now)
        return done

    return atomic_with_retry(ledger, void)


def recovery_tombstones_insert(ledger: str, legs: dict[LegKey, tuple[str, date]], now: datetime) -> int:
    """A VOIDED tombstone (no account, nothing held) under each key of ``legs`` (key → the
    transfer's kind and business date) that the ledger does not hold yet; a key taken meanwhile (a
    late prepare, a decision, another worker's tombstone) is left as it is: the caller reads the
    legs again to learn which way each transfer went. Returns how many were written."""
    ignore = "INSERT IGNORE" if connections[ledger].vendor == "mysql" else "INSERT OR IGNORE"
    stamp = db_datetime(ledger, now)
    rows, written = sorted(legs.items()), 0
    for chunk in _chunks(rows):
        params: list[Any] = []
        for (transfer_id, leg), (kind, business_date) in chunk:
            params += [db_uuid(ledger, transfer_id), leg, None, Decimal("0"), LegState.VOIDED, kind]
            params += [db_date(ledger, business_date), stamp, stamp]
        written += execute(
            ledger,
            f"{ignore} INTO {LEG} (transfer_id, leg, account_id, amount, state, kind, business_date, created_at, "
            f"updated_at) VALUES {', '.join(['(%s, %s, %s, %s, %s, %s, %s, %s, %s)'] * len(chunk))}",
            params,
        ).rowcount
    return written


def recovery_transfers_finish(
    ids: Sequence[uuid.UUID],
    *,
    from_states: Sequence[str],
    now: datetime,
    assignments: str,
    params: Sequence[Any],
    record: Callable[[list[uuid.UUID]], None],
) -> list[uuid.UUID]:
    """In one transaction of the control plane: lock those of the transfers ``ids`` in one of
    ``from_states`` (primary-key order), apply ``assignments`` (SQL, with ``params``) to exactly
    those, and ``record`` them (their audit events, deferred into the same commit). Returns them."""

    def finish() -> list[uuid.UUID]:
        locked: list[uuid.UUID] = []
        states = ", ".join(["%s"] * len(from_states))
        for chunk in _chunks(sorted(ids)):
            where, keys = _ids_in("default", "id", chunk)
            rows = execute(
                "default",
                f"SELECT id FROM {TRANSFER} WHERE {where} AND status IN ({states}) ORDER BY id{_for_update('default')}",
                [*keys, *from_states],
            ).rows
            locked += [_as_uuid(pk) for (pk,) in rows]
        for chunk in _chunks(locked):
            where, keys = _ids_in("default", "id", chunk)
            defer("default", f"UPDATE {TRANSFER} SET {assignments} WHERE {where}", [*params, *keys])
        if locked:
            record(locked)
        return locked

    return atomic_with_retry("default", finish)


def recovery_transfers_complete(
    ids: Sequence[uuid.UUID], now: datetime, record: Callable[[list[uuid.UUID]], None]
) -> list[uuid.UUID]:
    """PENDING/COMMITTED → COMPLETED (``recovery_transfers_finish``)."""
    stamp = db_datetime("default", now)
    return recovery_transfers_finish(
        ids,
        from_states=[Transfer.Status.PENDING, Transfer.Status.COMMITTED],
        now=now,
        assignments="status = %s, finished_at = %s, committed_at = COALESCE(committed_at, %s)",
        params=[Transfer.Status.COMPLETED, stamp, stamp],
        record=record,
    )


def recovery_transfers_abort(
    ids: Sequence[uuid.UUID],
    now: datetime,
    failure_code: str,
    failure_detail: str,
    record: Callable[[list[uuid.UUID]], None],
) -> list[uuid.UUID]:
    """PENDING → ABORTED with the reason (``recovery_transfers_finish``)."""
    return recovery_transfers_finish(
        ids,
        from_states=[Transfer.Status.PENDING],
        now=now,
        assignments="status = %s, finished_at = %s, failure_code = %s, failure_detail = %s",
        params=[Transfer.Status.ABORTED, db_datetime("default", now), failure_code, failure_detail[:500]],
        record=record,
    )
