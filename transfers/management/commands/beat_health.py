"""Exit 0 if Celery beat's heartbeat ran recently (bankcore.heartbeat), 1 otherwise.

celery-beat's container health check in docker-compose.yml. The heartbeat is sent by beat and run
by a worker through Redis, so "unhealthy" means one of the three is not doing its part; the
message says how old the last heartbeat is.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from bankcore.heartbeat import beat_heartbeat_last


class Command(BaseCommand):
    help = "Check that Celery beat's heartbeat ran within --max-age seconds (exit status 1 if not)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--max-age", type=int, default=180, help="seconds (default 180)")

    def handle(self, *args: Any, **options: Any) -> None:
        last = beat_heartbeat_last()
        if last is None:
            raise CommandError("no beat heartbeat recorded yet (beat never ran one, or Redis is unreachable)")
        age = time.time() - last
        if age > options["max_age"]:
            raise CommandError(f"the last beat heartbeat ran {age:.0f}s ago (more than {options['max_age']}s)")
        self.stdout.write(f"beat heartbeat {age:.0f}s ago")
