"""Named fault points between the steps of the transfer protocol.

Off in production. The test settings switch them on, and a test process that sets
``BANKCORE_FAULT_AT=<name>`` exits hard (no cleanup, no atexit, no rollback) the first time it
reaches that point — exactly what a kill -9 or a power cut would leave behind.
"""

from __future__ import annotations

import os

from django.conf import settings

FAULT_POINTS = (
    "after_accept",
    "after_local_commit",
    "after_prepare_debit",
    "after_prepare_credit",
    "after_decide_commit",
    "after_finish_debit",
    "after_finish_credit",
    "after_decide_abort",
    "after_void_debit",
)
FAULT_EXIT_CODE = 86


def fault_point(name: str) -> None:
    if not settings.BANKCORE_FAULT_POINTS_ENABLED:
        return
    assert name in FAULT_POINTS, name
    if os.environ.get("BANKCORE_FAULT_AT") == name:
        os._exit(FAULT_EXIT_CODE)
