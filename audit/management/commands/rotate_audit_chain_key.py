"""Once per key rotation, after every worker and beat runs with the new AUDIT_CHAIN_KEY and the old
key in AUDIT_CHAIN_RETIRED_KEYS: verify the whole chain with the keys that sealed it and, only if it
holds, hand it over to the new key from the next row on (no row is rewritten). Refused, with the
first broken link and exit status 1, when it does not hold; sealing stays stopped until it does."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.chain import AuditChainError, audit_chain_rotate_key


class Command(BaseCommand):
    help = (
        "Hand the audit chain over to a new AUDIT_CHAIN_KEY, the old one in AUDIT_CHAIN_RETIRED_KEYS, "
        "after verifying it (once per rotation)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--chunk-size", type=int, default=2000)

    def handle(self, *args: Any, **options: Any) -> None:
        def progress(done: int, total: int) -> None:
            self.stdout.write(f"  checked {done}/{total}…")

        try:
            rotation = audit_chain_rotate_key(chunk_size=max(1, options["chunk_size"]), progress=progress)
        except AuditChainError as exc:
            raise CommandError(str(exc)) from exc
        report = rotation.report
        if not report.ok:
            raise CommandError(
                f"Refused: the audit chain is BROKEN after {report.checked} good events: {report.problem}. "
                "Nothing was rotated."
            )
        if not rotation.rotated:
            self.stdout.write(
                self.style.SUCCESS(
                    f"The audit chain is sealed with AUDIT_CHAIN_KEY ({rotation.current}) already, or nothing is "
                    "sealed yet: nothing to do."
                )
            )
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Audit chain key rotated: {report.checked} events verified; sealed with {rotation.retired} up "
                f"to #{rotation.from_seq - 1}, with AUDIT_CHAIN_KEY ({rotation.current}) from #{rotation.from_seq} "
                f"on. Keep {rotation.retired} in AUDIT_CHAIN_RETIRED_KEYS: the rows it sealed verify only with it."
            )
        )
