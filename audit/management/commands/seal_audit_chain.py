"""Hash every new audit event into the chain (Celery beat and the recovery loop do this every few
seconds); a row whose own MAC is wrong is refused, named, and the exit status is 1."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.chain import AuditChainError, audit_chain_seal


class Command(BaseCommand):
    help = "Seal the audit events written since the last seal into the hash chain."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=1000)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            sealing = audit_chain_seal(batch_size=max(1, options["batch_size"]))
        except AuditChainError as exc:
            raise CommandError(f"Refused to seal: {exc}") from exc
        self.stdout.write(self.style.SUCCESS(f"Sealed {sealing.sealed} audit events."))
        if sealing.refused:
            raise CommandError(
                f"Refused {len(sealing.refused)} audit events whose row MAC is wrong (not written by the "
                f"application): id {', '.join(map(str, sealing.refused))}"
            )
