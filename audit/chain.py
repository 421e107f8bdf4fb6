"""The audit hash chain: each sealed row carries HMAC-SHA256, under ``AUDIT_CHAIN_KEY``, of the
canonical JSON of its content, its place in the chain and the previous row's hash. A row changed,
removed or slipped in directly in the database breaks the chain at that row, also for someone who
recomputes the chain afterwards, unless they hold the key, which comes from the environment and
is never stored in the database. The head row's own MAC (``head_mac``) covers where the chain ends,
so cutting off the newest rows and moving the head back needs the key too.

Every row also carries its own MAC (``row_mac``, ``audit_event_mac``) from the moment the
application writes it: the key's HMAC of its content. A row inserted behind the application's back
cannot have one, so the sealer refuses to chain it: it marks it ``REFUSED`` (the one other write
the append-only trigger lets through, migration 0007), logs it, and verification reports it for
good. Without the row MAC, the sealer would vouch for whatever sat in the table when it ran.

Writers insert rows unsealed and never touch the chain's tail, so they never wait on each other
(the engine writes hundreds of events a second). The sealer — Celery beat every few seconds in
production, the recovery loop of ``make run`` on each pass, and ``manage.py seal_audit_chain`` —
takes the one ``AuditChainHead`` row ``FOR UPDATE``, checks its MAC, and gives the unsealed rows
whose own MAC holds, in id order, the next sequence numbers and their chain MACs. A row whose
transaction commits late (a smaller id than rows already sealed) simply gets a later sequence
number: the chain's order is ``seq``, never a gap. Verification only reads (``verify_audit_chain
--seal`` seals first).

The key can be rotated without rewriting a row. The operator makes the new key ``AUDIT_CHAIN_KEY``
and moves the old one to ``AUDIT_CHAIN_RETIRED_KEYS``; the sealer then stops (the head is under a
retired key) until ``manage.py rotate_audit_chain_key`` has verified the whole chain with the keys
that sealed it and recorded, under the new key's head MAC, that the new key seals from the next row
on (``key_epochs``: [first seq, key fingerprint] per key). Verification takes each row's key from
there, so the retired keys stay needed to verify the rows they sealed, and a retired key that
leaked lets its holder forge only what it sealed: rows sealed after the rotation, and the head, need
the new key. (Its holder can still rewrite the whole chain as if it had never been rotated; the
chain then reads as sealed under a retired key, which verification reports, and which after a
completed rotation means tampering.) A key is named by its fingerprint, which reveals nothing a
sealed row's MAC does not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from audit.models import AuditChainHead, AuditEvent

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
# What the sealer writes in ``hash`` of a row whose own MAC is wrong: it is never chained.
REFUSED = "refused: its row MAC is wrong"
CONTENT_FIELDS = (
    "id",
    "created_at",
    "actor_id",
    "actor_name",
    "channel",
    "action",
    "object_type",
    "object_id",
    "ledger",
    "changes",
    "ip",
    "request_id",
)
# What a row's own MAC covers: its content but its id, which the database assigns at insert.
ROW_FIELDS = CONTENT_FIELDS[1:]
Progress = Callable[[int, int], None]


class AuditChainError(RuntimeError):
    """The sealer refuses to extend a chain it cannot vouch for (verification says why)."""


def _chain_key() -> bytes:
    return settings.AUDIT_CHAIN_KEY.encode("utf-8")


_FINGERPRINT_MESSAGE = b"bankcore audit chain key fingerprint"


def key_fingerprint(key: bytes) -> str:
    """A key's name that may be stored and shown: 16 hex digits of its HMAC of a fixed message."""
    return hmac.new(key, _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:16]


def _keyring() -> dict[str, bytes]:
    """Every key the chain may have been sealed with, by fingerprint: ``AUDIT_CHAIN_KEY`` and
    ``AUDIT_CHAIN_RETIRED_KEYS``."""
    keys = [settings.AUDIT_CHAIN_KEY, *getattr(settings, "AUDIT_CHAIN_RETIRED_KEYS", ())]
    return {key_fingerprint(key.encode("utf-8")): key.encode("utf-8") for key in keys if key}


def _digest(message: bytes, key: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _content(event: AuditEvent, names: tuple[str, ...]) -> dict[str, Any]:
    content: dict[str, Any] = {name: getattr(event, name) for name in names}
    created = content["created_at"]
    content["created_at"] = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if created else None
    return content


def _canonical(content: dict[str, Any]) -> bytes:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode("ascii")


def audit_event_hash(event: AuditEvent, *, seq: int, prev_hash: str, key: bytes) -> str:
    """HMAC-SHA256 under ``key`` over the canonical JSON (sorted keys, no spaces, ASCII) of the
    row's content fields, its place in the chain and the previous hash."""
    content = _content(event, CONTENT_FIELDS)
    content["seq"] = seq
    content["prev_hash"] = prev_hash
    return _digest(_canonical(content), key)


def audit_event_mac(event: AuditEvent, *, key: bytes | None = None) -> str:
    """The row's own MAC, written with it (``audit.services.audit_event_record``): HMAC-SHA256
    under ``key`` (``AUDIT_CHAIN_KEY``) over the canonical JSON of its content but its id, under
    the one top-level key "row" (apart from every chain link's message). ``changes`` is taken as
    the database gives it back (JSON text parsed), so writer and checker agree byte for byte."""
    content = _content(event, ROW_FIELDS)
    content["changes"] = json.loads(json.dumps(content["changes"]))
    return _digest(_canonical({"row": content}), key or _chain_key())


def _row_mac_ok(event: AuditEvent, key: bytes) -> bool:
    """Made by ``key``: the key that seals the row is the one its writer held (rows a retired key
    wrote are sealed by the rotation, with that key: ``audit_chain_rotate_key``)."""
    return hmac.compare_digest(event.row_mac, audit_event_mac(event, key=key))


def _head_mac(*, last_seq: int, last_hash: str, key_epochs: list[list[Any]], key: bytes) -> str:
    # Its one top-level key "head" keeps this message apart from every row's (which name their
    # fields).
    fields: dict[str, Any] = {"last_seq": last_seq, "last_hash": last_hash}
    if key_epochs:
        fields["key_epochs"] = key_epochs
    return _digest(json.dumps({"head": fields}, sort_keys=True, separators=(",", ":")).encode("ascii"), key)


def _head_mac_ok(head: AuditChainHead, key: bytes) -> bool:
    expected = _head_mac(last_seq=head.last_seq, last_hash=head.last_hash, key_epochs=head.key_epochs, key=key)
    return hmac.compare_digest(head.head_mac, expected)


def _head_new(head: AuditChainHead) -> bool:
    """A head that has sealed nothing yet (and so has no MAC)."""
    return head.last_seq == 0 and not head.last_hash and not head.head_mac and not head.key_epochs


def _epochs(head: AuditChainHead) -> list[tuple[int, str]] | None:
    """The head's ``key_epochs`` as (first seq, fingerprint), or None when they are not what the
    rotation writes (ascending from 1): changed outside it, which the MAC finds too, but
    verification must report it rather than fail on it."""
    epochs = head.key_epochs
    if not isinstance(epochs, list) or not all(
        isinstance(e, list) and len(e) == 2 and type(e[0]) is int and isinstance(e[1], str) for e in epochs
    ):
        return None
    firsts = [first for first, _ in epochs]
    if epochs and (firsts[0] != 1 or firsts != sorted(set(firsts))):
        return None
    return [(first, fingerprint) for first, fingerprint in epochs]


def _head_key(head: AuditChainHead, keyring: dict[str, bytes]) -> str | None:
    """The fingerprint of the key the head's MAC was made with (the last epoch's, once rotated),
    or None when no key of the keyring makes it: the head was changed outside the sealer, or the
    key that sealed it is not configured."""
    epochs = _epochs(head)
    if epochs is None:
        return None
    candidates = [epochs[-1][1]] if epochs else list(keyring)
    for fingerprint in candidates:
        key = keyring.get(fingerprint)
        if key is not None and _head_mac_ok(head, key):
            return str(fingerprint)
    return None


_HEAD_MAC_MISMATCH = (
    "the audit chain head does not match its MAC (changed outside the sealer, or neither AUDIT_CHAIN_KEY nor "
    "AUDIT_CHAIN_RETIRED_KEYS holds the key the chain was sealed with)"
)


def _retired_head(fingerprint: str) -> str:
    return (
        f"the audit chain is sealed up to its head with a retired key ({fingerprint}), not with AUDIT_CHAIN_KEY "
        f"({key_fingerprint(_chain_key())}): run `manage.py rotate_audit_chain_key` once, after every worker and "
        "beat runs with the new key (after a completed rotation, this means the chain was rewritten)"
    )


def _head_vouched(head: AuditChainHead) -> None:
    """Raise unless the head is new or the one the sealer left under ``AUDIT_CHAIN_KEY``: an
    altered one, or one whose head a retired key sealed (a rotation not finished), is refused."""
    if _head_new(head):
        return
    fingerprint = _head_key(head, _keyring())
    if fingerprint is None:
        raise AuditChainError(f"{_HEAD_MAC_MISMATCH}: run `manage.py verify_audit_chain`")
    if fingerprint != key_fingerprint(_chain_key()):
        raise AuditChainError(_retired_head(fingerprint))


def _key_plan(head: AuditChainHead | None, keyring: dict[str, bytes]) -> list[tuple[int, str, bytes | None]]:
    """Which key sealed which rows: (first seq, fingerprint, the key or None when it is not
    configured), ascending. A chain never rotated has one, the head's key (``AUDIT_CHAIN_KEY`` when
    no key makes the head's MAC: its rows then say whether they hold under it)."""
    epochs = _epochs(head) if head is not None else None
    if epochs:
        return [(first, fingerprint, keyring.get(fingerprint)) for first, fingerprint in epochs]
    fingerprint = (_head_key(head, keyring) if head is not None else None) or key_fingerprint(_chain_key())
    return [(1, fingerprint, keyring[fingerprint])]


def _head_lock() -> AuditChainHead:
    head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        AuditChainHead.objects.get_or_create(pk=1)
        head = AuditChainHead.objects.select_for_update().get(pk=1)
    return head


def _links_write(links: list[tuple[int, int, str, str]]) -> None:  # (id, seq, prev_hash, hash)
    """Write a batch of links with one prepared UPDATE per row (executemany, no ORM per row: the
    ORM's per-row cost capped sealing near 1,000 rows/s). Only unsealed rows are written; a row
    sealed already means two sealers overlapped, which the head's lock rules out, so fail loudly."""
    table = connections["default"].ops.quote_name(AuditEvent._meta.db_table)
    with connections["default"].cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET seq = %s, prev_hash = %s, hash = %s WHERE id = %s AND seq IS NULL",
            [(seq, prev_hash, digest, pk) for pk, seq, prev_hash, digest in links],
        )
        changed = cursor.rowcount
    if changed != len(links):
        raise RuntimeError(f"audit sealer: {changed} of {len(links)} rows were still unsealed")


def _refusals_write(ids: list[int]) -> None:
    """Mark rows whose own MAC is wrong as refused: never chained, never examined again."""
    table = connections["default"].ops.quote_name(AuditEvent._meta.db_table)
    with connections["default"].cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET hash = %s WHERE id = %s AND seq IS NULL AND hash = ''", [(REFUSED, pk) for pk in ids]
        )


Link = tuple[int, int, str, str]  # (id, seq, prev_hash, hash)


def _rows_link(
    rows: list[AuditEvent], *, seq: int, prev: str, key: bytes
) -> tuple[list[Link], list[AuditEvent], int, str]:
    """Chain, after ``seq`` and ``prev``, those of ``rows`` whose own MAC ``key`` made. Returns
    their links, the rows left out, and where the chain then ends."""
    links: list[Link] = []
    left: list[AuditEvent] = []
    for row in rows:
        if not _row_mac_ok(row, key):
            left.append(row)
            continue
        seq += 1
        digest = audit_event_hash(row, seq=seq, prev_hash=prev, key=key)
        links.append((row.pk, seq, prev, digest))
        prev = digest
    return links, left, seq, prev


@dataclass
class Sealing:
    """What ``audit_chain_seal`` did: how many rows it chained, and the ids of those it refused."""

    sealed: int = 0
    refused: list[int] = field(default_factory=list)


def audit_chain_seal(*, batch_size: int = 1000, max_batches: int | None = None) -> Sealing:
    """Seal every unsealed audit row, in id order, ``batch_size`` per transaction, but those whose
    own MAC is wrong (written outside the application): those are marked refused, logged, and
    left out of the chain. Safe to run from several processes at once (they queue on the head
    row). Raises ``AuditChainError``, sealing nothing, when the head does not match its MAC."""
    key = _chain_key()
    outcome = Sealing()
    batches = 0
    while max_batches is None or batches < max_batches:
        with transaction.atomic(using="default"):
            head = _head_lock()
            _head_vouched(head)
            rows = list(AuditEvent.objects.filter(seq__isnull=True, hash="").order_by("id")[:batch_size])
            if not rows:
                return outcome
            links, left, seq, prev = _rows_link(rows, seq=head.last_seq, prev=head.last_hash or GENESIS, key=key)
            refused = [row.pk for row in left]
            if refused:
                _refusals_write(refused)
            if links:
                _links_write(links)
                AuditChainHead.objects.filter(pk=1).update(
                    last_seq=seq,
                    last_hash=prev,
                    head_mac=_head_mac(last_seq=seq, last_hash=prev, key_epochs=head.key_epochs, key=key),
                    sealed_at=timezone.now(),
                )
        for pk in refused:
            logger.error("audit sealer: refused audit event id %s: its row MAC is wrong (written outside the app)", pk)
        outcome.sealed += len(links)
        outcome.refused += refused
        batches += 1
    return outcome


@dataclass
class ChainReport:
    checked: int = 0
    unsealed: int = 0
    broken_at: int | None = None  # the first broken row's id (or None when only the tail is gone)
    broken_seq: int | None = None
    problem: str = ""
    forged: list[int] = field(default_factory=list)  # ids of rows whose own MAC is wrong

    @property
    def ok(self) -> bool:
        return not self.problem


def _rows_verify(
    *,
    plan: list[tuple[int, str, bytes | None]],
    chunk_size: int,
    progress: Progress | None,
) -> tuple[ChainReport, str]:
    """Recompute every sealed row's hash in chain order, each with the key ``plan`` (``_key_plan``)
    gives its seq, and check its own MAC; stop at the first broken link, or at the first row whose
    key is not configured. Returns the report and the hash the chain ends with."""
    total = AuditEvent.objects.filter(seq__isnull=False).count()
    report = ChainReport(unsealed=AuditEvent.objects.filter(seq__isnull=True, hash="").count())
    expected_seq, prev = 1, GENESIS
    epoch = -1  # the index in ``plan`` of the epoch the current row falls in
    key = b""
    while True:
        rows = list(AuditEvent.objects.filter(seq__gte=expected_seq).order_by("seq")[:chunk_size])
        for row in rows:
            if row.seq != expected_seq:
                report.broken_seq = expected_seq
                report.broken_at = row.pk
                report.problem = (
                    f"audit event #{expected_seq} in the chain is missing (next found is #{row.seq}, id {row.pk}): "
                    "a sealed row was removed"
                )
                return report, prev
            if epoch + 1 < len(plan) and expected_seq >= plan[epoch + 1][0]:
                epoch += 1  # (epochs ascend and none is empty: one row starts at most one)
                first, fingerprint, planned = plan[epoch]
                if planned is None:
                    report.broken_seq, report.broken_at = row.seq, row.pk
                    report.problem = (
                        f"audit events from #{first} on were sealed with the key {fingerprint}, which neither "
                        "AUDIT_CHAIN_KEY nor AUDIT_CHAIN_RETIRED_KEYS holds: they cannot be verified without it"
                    )
                    return report, prev
                key = planned
            if row.prev_hash != prev:
                report.broken_seq, report.broken_at = row.seq, row.pk
                report.problem = f"audit event id {row.pk} (#{row.seq}) does not link to its predecessor's hash"
                return report, prev
            if audit_event_hash(row, seq=row.seq, prev_hash=row.prev_hash, key=key) != row.hash:
                report.broken_seq, report.broken_at = row.seq, row.pk
                report.problem = (
                    f"audit event id {row.pk} (#{row.seq}) does not match its hash: it was changed after it was sealed"
                )
                if len(plan) == 1:  # (a key named in key_epochs is the one it names)
                    report.problem += " (or AUDIT_CHAIN_KEY is not the key it was sealed with)"
                return report, prev
            if not _row_mac_ok(row, key):
                report.broken_seq, report.broken_at = row.seq, row.pk
                report.problem = f"audit event id {row.pk} (#{row.seq}) does not match its row MAC"
                return report, prev
            prev = row.hash
            expected_seq += 1
            report.checked += 1
        if progress:
            progress(report.checked, total)
        if len(rows) < chunk_size:
            break
    return report, prev


def _forged(chunk_size: int) -> list[int]:
    """The ids of the rows outside the chain that the application did not write: those the sealer
    refused, and unsealed ones whose own MAC is wrong (not examined by the sealer yet)."""
    key = _chain_key()
    forged = list(AuditEvent.objects.filter(seq__isnull=True, hash=REFUSED).order_by("id").values_list("id", flat=True))
    after = 0
    while True:
        rows = list(AuditEvent.objects.filter(seq__isnull=True, hash="", id__gt=after).order_by("id")[:chunk_size])
        forged += [row.pk for row in rows if not _row_mac_ok(row, key)]
        if len(rows) < chunk_size:
            return sorted(forged)
        after = rows[-1].pk


def _head_problem(head: AuditChainHead | None, *, checked: int, last_hash: str) -> str:
    """What is wrong with the head of a chain whose rows verified, up to ``checked`` rows ending
    in ``last_hash`` ("" when nothing is)."""
    if head is None:
        return f"{checked} sealed rows but no chain head: the head row was removed" if checked else ""
    if head.last_seq != checked or (head.last_seq and head.last_hash != last_hash):
        return (
            f"the chain ends at #{checked} but the head says #{head.last_seq}: "
            "the newest sealed rows were removed or replaced"
        )
    return ""


def audit_chain_verify(*, chunk_size: int = 2000, progress: Progress | None = None) -> ChainReport:
    """Recompute every sealed row's hash in chain order and report the first broken link: a row
    whose content no longer matches its hash (changed in the database, also when its hash was
    recomputed without the key) or its own MAC, a row whose ``prev_hash`` is not its
    predecessor's hash, a gap in the sequence (a row removed), a chain that ends before the head
    says it does (the newest rows removed), or a head that does not match its MAC. A chain whose
    head a retired key sealed (a rotation not finished) is reported too. Then every row outside
    the chain whose own MAC is wrong: written behind the application's back (``forged``).
    Read-only: it seals nothing."""
    keyring = _keyring()
    head = AuditChainHead.objects.filter(pk=1).first()
    plan = _key_plan(head, keyring)
    report, last_hash = _rows_verify(plan=plan, chunk_size=chunk_size, progress=progress)
    report.forged = _forged(chunk_size)
    if not report.ok:
        return report
    problem = _head_problem(head, checked=report.checked, last_hash=last_hash)
    if problem:
        report.problem, report.broken_seq = problem, report.checked + 1
    elif head is not None and not _head_new(head):
        fingerprint = _head_key(head, keyring)
        if fingerprint is None:
            report.problem = (
                "the chain head does not match its MAC: its end or where a key took over was changed outside "
                "the sealer (or neither AUDIT_CHAIN_KEY nor AUDIT_CHAIN_RETIRED_KEYS holds the key the chain was "
                "sealed with)"
            )
        elif fingerprint != key_fingerprint(_chain_key()):
            report.problem = _retired_head(fingerprint)
    if not report.problem and report.forged:
        shown = ", ".join(str(pk) for pk in report.forged[:20])
        more = f" and {len(report.forged) - 20} more" if len(report.forged) > 20 else ""
        report.problem = (
            f"{len(report.forged)} audit events do not match their row MAC, so the application did not write "
            f"them (inserted in the database directly); never sealed: id {shown}{more}"
        )
    return report


@dataclass
class Rotation:
    """What ``audit_chain_rotate_key`` did: ``rotated`` False with an ok report means there was
    nothing to do (the head is under ``AUDIT_CHAIN_KEY`` already, or nothing is sealed yet)."""

    report: ChainReport
    rotated: bool = False
    retired: str = ""  # the fingerprint of the key that sealed the head before
    current: str = ""  # AUDIT_CHAIN_KEY's
    from_seq: int = 0  # the first row the new key seals


def _retired_rows_seal(head: AuditChainHead, retired: bytes, chunk_size: int) -> tuple[int, str]:
    """Seal, with the retired key, the unsealed rows it wrote (their writers held it until the
    switch): the last of its epoch. After the rotation the sealer chains only rows whose MAC
    ``AUDIT_CHAIN_KEY`` made, so a retired key that leaked forges no new row. Returns where the
    chain then ends. Runs under the head's lock."""
    seq, prev = head.last_seq, head.last_hash or GENESIS
    after = 0
    while True:
        rows = list(AuditEvent.objects.filter(seq__isnull=True, hash="", id__gt=after).order_by("id")[:chunk_size])
        links, _, seq, prev = _rows_link(rows, seq=seq, prev=prev, key=retired)
        if links:
            _links_write(links)
        if len(rows) < chunk_size:
            return seq, (prev if seq else "")
        after = rows[-1].pk


def audit_chain_rotate_key(*, chunk_size: int = 2000, progress: Progress | None = None) -> Rotation:
    """Hand the chain over to ``AUDIT_CHAIN_KEY`` from the next row on, once the key that sealed it
    is in ``AUDIT_CHAIN_RETIRED_KEYS``: verify every row with the keys that sealed it and, only if
    the chain holds, seal with the retired key the rows it wrote that wait unsealed, and record the
    new key's epoch, from the next row, under a head MAC made with it. No row is rewritten.
    A broken report means nothing was written. Raises ``AuditChainError`` when no configured key
    makes the head's MAC."""
    keyring = _keyring()
    current = key_fingerprint(_chain_key())
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is None or _head_new(head):
        return Rotation(ChainReport(), current=current)  # a new chain: sealed with the key from its first row
    retired = _head_key(head, keyring)
    if retired is None:
        raise AuditChainError(f"{_HEAD_MAC_MISMATCH}: nothing was rotated; run `manage.py verify_audit_chain`")
    if retired == current:
        return Rotation(ChainReport(), retired=retired, current=current)
    # Verified outside the head's lock (a long read must not hold up the sealer); no sealer extends a
    # chain whose head a retired key sealed, and one still running with the old key is found by the
    # check below.
    report, last_hash = _rows_verify(plan=_key_plan(head, keyring), chunk_size=chunk_size, progress=progress)
    if report.ok:
        report.problem = _head_problem(head, checked=report.checked, last_hash=last_hash)
    if not report.ok:
        return Rotation(report, retired=retired, current=current)
    with transaction.atomic(using="default"):
        locked = _head_lock()
        if (locked.last_seq, locked.last_hash, locked.key_epochs, locked.head_mac) != (
            head.last_seq,
            head.last_hash,
            head.key_epochs,
            head.head_mac,
        ):
            raise AuditChainError("the audit chain head changed while it was being verified: run the command again")
        last_seq, last_hash = _retired_rows_seal(locked, keyring[retired], chunk_size)
        epochs = [list(epoch) for epoch in locked.key_epochs] or [[1, retired]]
        from_seq = last_seq + 1
        if epochs[-1][0] == from_seq:
            epochs.pop()  # the retired key sealed no row: its epoch is empty
        epochs.append([from_seq, current])
        AuditChainHead.objects.filter(pk=1).update(
            key_epochs=epochs,
            last_seq=last_seq,
            last_hash=last_hash,
            head_mac=_head_mac(last_seq=last_seq, last_hash=last_hash, key_epochs=epochs, key=_chain_key()),
            sealed_at=timezone.now(),
        )
    return Rotation(report, rotated=True, retired=retired, current=current, from_seq=from_seq)


def audit_chain_check(*, seal: bool = False, chunk_size: int = 2000, progress: Progress | None = None) -> ChainReport:
    """Verify the whole chain (with ``seal``, seal what is new first) and record the outcome on
    the head row (what ``audit_chain_status`` and /metrics report). Returns the report; raises
    nothing for a broken chain — the caller decides how loudly to say so."""
    if seal:
        try:
            audit_chain_seal()
        except AuditChainError:
            pass  # the verification below finds and records why the sealer refused
    report = audit_chain_verify(chunk_size=chunk_size, progress=progress)
    with transaction.atomic(using="default"):
        _head_lock()
        AuditChainHead.objects.filter(pk=1).update(
            verified_at=timezone.now(), verified_ok=report.ok, verified_problem=report.problem[:500]
        )
    return report


def audit_chain_status() -> bool | None:
    """The last verification's outcome: True (intact), False (broken), None (never verified).
    Named by ``settings.BANKCORE_AUDIT_CHAIN_STATUS`` for the metrics endpoint; one cheap query."""
    head = AuditChainHead.objects.filter(pk=1).only("verified_ok").first()
    return None if head is None else head.verified_ok
