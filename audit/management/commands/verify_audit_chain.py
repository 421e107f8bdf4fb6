"""Prove the audit trail is untouched: seal what is new, then recompute every hash in chain order
and record the outcome (read by /metrics). Exit status 0 when the chain holds, 1 with the first
broken link when it does not. ``--no-seal`` only checks what is sealed and records nothing."""

from django.core.management.base import BaseCommand, CommandError

from audit.chain import audit_chain_check, audit_chain_verify


class Command(BaseCommand):
    help = "Verify the audit hash chain and report the first broken link (non-zero exit when broken)."

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("--no-seal", action="store_true", help="check only what is already sealed")
        parser.add_argument("--chunk-size", type=int, default=2000)

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        def progress(done: int, total: int) -> None:
            self.stdout.write(f"  checked {done}/{total}…")

        chunk_size = max(1, options["chunk_size"])
        if options["no_seal"]:
            report = audit_chain_verify(chunk_size=chunk_size, progress=progress)
        else:
            report = audit_chain_check(chunk_size=chunk_size, progress=progress)
        if not report.ok:
            raise CommandError(f"Audit chain BROKEN after {report.checked} good events: {report.problem}")
        suffix = f" ({report.unsealed} not yet sealed)" if report.unsealed else ""
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {report.checked} events verified{suffix}."))
