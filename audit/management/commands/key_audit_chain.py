"""Once, after upgrading from a version that sealed the audit chain without a key: verify the
chain with plain SHA-256 and, only if it holds, vouch for it with AUDIT_CHAIN_KEY (no row is
rewritten). Refused, with the first broken link and exit status 1, when it does not hold."""

from django.core.management.base import BaseCommand, CommandError

from audit.chain import AuditChainError, audit_chain_key


class Command(BaseCommand):
    help = "Key an audit chain sealed without a key by an earlier version, after verifying it (once, at the upgrade)."

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("--chunk-size", type=int, default=2000)

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        def progress(done: int, total: int) -> None:
            self.stdout.write(f"  checked {done}/{total}…")

        try:
            report, keyed = audit_chain_key(chunk_size=max(1, options["chunk_size"]), progress=progress)
        except AuditChainError as exc:
            raise CommandError(str(exc)) from exc
        if not report.ok:
            raise CommandError(
                f"Refused: the unkeyed audit chain is BROKEN after {report.checked} good events: {report.problem}. "
                "Nothing was keyed."
            )
        if not keyed:
            self.stdout.write(self.style.SUCCESS("The audit chain is keyed already (or new): nothing to do."))
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Audit chain keyed: {report.checked} unkeyed events verified; sealing with the key from "
                f"#{report.checked + 1} on."
            )
        )
