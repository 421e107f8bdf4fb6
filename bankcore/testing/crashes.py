"""Fault points the crash suites kill a batch at, shared by the batch tests (which kill there) and
the fault-point census in the recovery crash tests (which checks every point is exercised)."""

from __future__ import annotations

BATCH_FAULTS = ["after_batch_accept", "after_batch_prepare", "after_batch_decide", "after_batch_finish"]
# A linked chain's batch has one step more: the link decided in the control plane.
CHAIN_FAULTS = [*BATCH_FAULTS[:3], "after_batch_link", BATCH_FAULTS[3]]
