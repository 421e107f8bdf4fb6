"""The audit hash chain: each sealed row carries SHA-256(canonical JSON of its content + the
previous row's hash), so a row changed, removed or slipped in directly in the database breaks
the chain at that row.

Writers insert rows unsealed and never touch the chain's tail, so they never wait on each other
(the engine writes hundreds of events a second). The sealer — Celery beat every few seconds,
``manage.py seal_audit_chain``, and ``verify_audit_chain`` before it checks — takes the one
``AuditChainHead`` row ``FOR UPDATE`` and gives the unsealed rows, in id order, the next sequence
numbers and their hashes. A row whose transaction commits late (a smaller id than rows already
sealed) simply gets a later sequence number: the chain's order is ``seq``, never a gap.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from audit.models import AuditChainHead, AuditEvent

GENESIS = "0" * 64
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
Progress = Callable[[int, int], None]


def audit_event_hash(event: AuditEvent, *, seq: int, prev_hash: str) -> str:
    """SHA-256 over the canonical JSON (sorted keys, no spaces, ASCII) of the row's content fields,
    its place in the chain and the previous hash."""
    content: dict[str, Any] = {name: getattr(event, name) for name in CONTENT_FIELDS}
    created = content["created_at"]
    content["created_at"] = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if created else None
    content["seq"] = seq
    content["prev_hash"] = prev_hash
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _head_lock() -> AuditChainHead:
    head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        AuditChainHead.objects.get_or_create(pk=1)
        head = AuditChainHead.objects.select_for_update().get(pk=1)
    return head


def _links_write(links: list[tuple[int, int, str, str]]) -> None:
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


def audit_chain_seal(*, batch_size: int = 1000, max_batches: int | None = None) -> int:
    """Seal every unsealed audit row, in id order, ``batch_size`` per transaction. Returns how many
    rows it sealed. Safe to run from several processes at once (they queue on the head row)."""
    sealed = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        with transaction.atomic(using="default"):
            head = _head_lock()
            rows = list(AuditEvent.objects.filter(seq__isnull=True).order_by("id")[:batch_size])
            if not rows:
                return sealed
            seq, prev = head.last_seq, head.last_hash or GENESIS
            links: list[tuple[int, int, str, str]] = []  # (id, seq, prev_hash, hash)
            for row in rows:
                seq += 1
                digest = audit_event_hash(row, seq=seq, prev_hash=prev)
                links.append((row.pk, seq, prev, digest))
                prev = digest
            _links_write(links)
            AuditChainHead.objects.filter(pk=1).update(last_seq=seq, last_hash=prev, sealed_at=timezone.now())
        sealed += len(rows)
        batches += 1
    return sealed


@dataclass
class ChainReport:
    checked: int = 0
    unsealed: int = 0
    broken_at: int | None = None  # the first broken row's id (or None when only the tail is gone)
    broken_seq: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


def audit_chain_verify(*, chunk_size: int = 2000, progress: Progress | None = None) -> ChainReport:
    """Recompute every sealed row's hash in chain order and report the first broken link: a row
    whose content no longer matches its hash (changed in the database), a row whose ``prev_hash``
    is not its predecessor's hash, a gap in the sequence (a row removed), or a chain that ends
    before the head says it does (the newest rows removed). Read-only; seal first to cover new rows."""
    total = AuditEvent.objects.filter(seq__isnull=False).count()
    report = ChainReport(unsealed=AuditEvent.objects.filter(seq__isnull=True).count())
    expected_seq, prev = 1, GENESIS
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
                return report
            if row.prev_hash != prev:
                report.broken_seq, report.broken_at = row.seq, row.pk
                report.problem = f"audit event id {row.pk} (#{row.seq}) does not link to its predecessor's hash"
                return report
            if audit_event_hash(row, seq=row.seq, prev_hash=row.prev_hash) != row.hash:
                report.broken_seq, report.broken_at = row.seq, row.pk
                report.problem = (
                    f"audit event id {row.pk} (#{row.seq}) does not match its hash: it was changed after it was sealed"
                )
                return report
            prev = row.hash
            expected_seq += 1
            report.checked += 1
        if progress:
            progress(report.checked, total)
        if len(rows) < chunk_size:
            break
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is not None and (head.last_seq != report.checked or (head.last_seq and head.last_hash != prev)):
        report.broken_seq = report.checked + 1
        report.problem = (
            f"the chain ends at #{report.checked} but the head says #{head.last_seq}: "
            "the newest sealed rows were removed or replaced"
        )
    return report


def audit_chain_check(*, chunk_size: int = 2000, progress: Progress | None = None) -> ChainReport:
    """Seal what is new, verify the whole chain, and record the outcome on the head row (what
    ``audit_chain_status`` and /metrics report). Returns the report; raises nothing for a broken
    chain — the caller decides how loudly to say so."""
    audit_chain_seal()
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
