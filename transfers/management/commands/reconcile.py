"""Check that the books balance; exit 1 and list every discrepancy when they don't, 2 when a
server did not answer (what could be read is still checked and listed)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from bankcore.actors import Actor, Channel
from transfers.reconciliation import AUDIT_PHASE, ENTRIES_PHASE, reconciliation_run


class Command(BaseCommand):
    help = (
        "Reconcile every ledger: balances vs entries, pending vs prepared legs, books sum to zero, every entry "
        "explained by a transfer of the control plane and every completed transfer by its entries, no stuck "
        "transfer, every customer account's state explained by the audit trail."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        show = not options["no_progress"]

        def progress(ledger: str, done: int, total: int) -> None:
            if not show:
                return
            width = 30
            filled = int(width * done / total) if total else width
            if ledger == AUDIT_PHASE:
                unit = "account events"
            elif ledger.endswith(f" {ENTRIES_PHASE}"):
                ledger, unit = ledger.removesuffix(f" {ENTRIES_PHASE}"), "entries"
            else:
                unit = "accounts"
            self.stderr.write(
                f"\r{ledger:>6} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {unit}", ending=""
            )
            if done == total:
                self.stderr.write("")

        report = reconciliation_run(actor=Actor.system(Channel.COMMAND, "reconcile"), progress=progress)
        rows = [("ledger", "accounts", "posted total", "pending out", "pending in", "prepared legs")]
        rows += [
            (
                s.ledger,
                str(s.accounts),
                str(s.posted_total),
                str(s.pending_debits),
                str(s.pending_credits),
                str(s.prepared_legs),
            )
            for s in report.ledgers
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=False)))
        if report.unreachable:
            self.stdout.write("in flight: not summed (a server is unreachable)")
        else:
            self.stdout.write(f"in flight: {report.in_flight}   Σ posted + in flight: {report.grand_total}")
        if not report.recorded:
            self.stderr.write("This run could not be recorded: the control plane is unreachable.")
        if report.ok:
            self.stdout.write(self.style.SUCCESS("OK: the books balance."))
            return
        for alias, error in report.unreachable.items():
            what = "the control plane" if alias == "default" else f"ledger {alias}"
            self.stderr.write(self.style.ERROR(f"UNREACHABLE: {what} did not answer ({error})."))
        self.stdout.write(self.style.ERROR(f"{len(report.discrepancies)} discrepancies:"))
        for line in report.discrepancies:
            self.stdout.write(f"  - {line}")
        sys.exit(2 if report.unreachable else 1)
