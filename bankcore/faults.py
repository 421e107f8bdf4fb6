"""Named fault points between the steps of the transfer protocol (and of opening an account).

Off in production. The test settings switch them on, and a test process that sets
``BANKCORE_FAULT_AT=<name>`` exits hard (no cleanup, no atexit, no rollback) the first time it
reaches that point — exactly what a kill -9 or a power cut would leave behind.
"""

from __future__ import annotations

import os

from django.conf import settings

FAULT_POINTS = (
    # the coordinator (transfers.engine)
    "after_accept",
    "after_local_commit",
    "after_prepare_debit",
    "after_decide_credit",
    "after_finish_debit",
    "after_decide_abort",
    # the coordinator with the control plane's server (three commits): accept and the home leg
    # prepared; the other leg decided (the credit, above, or the debit)
    "after_accept_prepare",
    "after_decide_debit",
    # the batched engine (transfers.engine.batch): between its steps, each taken for every item at once
    "after_batch_accept",
    "after_batch_prepare",
    "after_batch_decide",
    "after_batch_link",
    "after_batch_finish",
    # recovery (transfers.recovery): its own decision to abort, before the control plane knows
    "after_tombstone",
    # accounts.services.account_open: the account committed in its ledger, its audit event not yet
    "after_account_insert",
)
FAULT_EXIT_CODE = 86


def fault_point(name: str) -> None:
    if not settings.BANKCORE_FAULT_POINTS_ENABLED:
        return
    assert name in FAULT_POINTS, name
    if os.environ.get("BANKCORE_FAULT_AT") == name:
        os._exit(FAULT_EXIT_CODE)
