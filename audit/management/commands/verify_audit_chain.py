"""Prove the audit trail is untouched: recompute every hash in chain order, check every row's own
MAC, and record the outcome (read by /metrics). Exit status 0 when the chain holds, 1 with the
first broken link, or the rows the application did not write, when it does not. Seals nothing
unless asked (``--seal``): sealing runs on its own schedule (Celery beat, the recovery loop)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.chain import audit_chain_check


class Command(BaseCommand):
    help = "Verify the audit hash chain and every row's MAC; report the first broken link (non-zero exit when broken)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seal", action="store_true", help="seal the rows written since the last seal first")
        parser.add_argument("--chunk-size", type=int, default=2000)

    def handle(self, *args: Any, **options: Any) -> None:
        def progress(done: int, total: int) -> None:
            self.stdout.write(f"  checked {done}/{total}…")

        chunk_size = max(1, options["chunk_size"])
        report = audit_chain_check(seal=options["seal"], chunk_size=chunk_size, progress=progress)
        if not report.ok:
            raise CommandError(f"Audit chain BROKEN after {report.checked} good events: {report.problem}")
        suffix = f" ({report.unsealed} not yet sealed)" if report.unsealed else ""
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {report.checked} events verified{suffix}."))
