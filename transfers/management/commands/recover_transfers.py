"""Operators' door onto recovery: one pass, or --loop for a long-running worker. The loop also seals
the audit chain on each pass: where no Celery beat runs (``make run``), it is the sealer."""

from __future__ import annotations

import argparse
import math
import signal
import time
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError

from audit.chain import AuditChainError, audit_chain_seal
from bankcore.actors import Actor, Channel
from transfers.recovery import DEFAULT_GRACE_SECONDS, transfers_recover_pass


def _seconds(*, least: float) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds from ``least`` to a day. ``nan``, ``inf`` and
    negatives were a traceback (a sleep or a timedelta refusing them) instead of a usage error."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not math.isfinite(value) or not least <= value <= DAY:
            raise argparse.ArgumentTypeError(f"{text!r}: between {least:g} and {DAY:g} seconds")
        return value

    return parse


DAY = 86400.0


class Command(BaseCommand):
    help = "Finish committed transfers, void timed-out ones and orphan legs. Safe to run beside other workers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--loop",
            action="store_true",
            help="keep running, one pass every --interval seconds, each also sealing the audit chain",
        )
        parser.add_argument("--interval", type=_seconds(least=0.01), default=2.0, help="0.01 to 86400")
        parser.add_argument(
            "--grace",
            type=_seconds(least=0),
            default=DEFAULT_GRACE_SECONDS,
            help="seconds a committed transfer is left to its own coordinator (0 to 86400)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.system(Channel.COMMAND, "recover_transfers")
        stopping = False

        def stop(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        while True:
            report = transfers_recover_pass(actor=actor, grace_seconds=options["grace"])
            if report.total or report.errors or not options["loop"]:
                summary = ", ".join(f"{k}={v}" for k, v in sorted(report.actions.items())) or "nothing to do"
                self.stdout.write(f"recovery: {summary}")
                for error in report.errors:
                    self.stderr.write(f"  error: {error}")
            if options["loop"]:
                self._seal()
            if not options["loop"] or stopping:
                break
            time.sleep(options["interval"])

    def _seal(self) -> None:
        """One sealing pass; a chain the sealer refuses to extend is reported, not fatal: recovery
        must go on (verification and /metrics say what is wrong)."""
        try:
            sealing = audit_chain_seal()
        except AuditChainError as exc:
            self.stderr.write(f"audit chain: refused to seal: {exc}")
            return
        except DatabaseError as exc:
            self.stderr.write(f"audit chain: sealing failed, retried next pass: {exc}")
            return
        for pk in sealing.refused:
            self.stderr.write(f"audit chain: refused audit event id {pk}: its row MAC is wrong")
