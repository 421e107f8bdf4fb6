"""Celery beat tasks: thin doors onto the chain sealer and verifier."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="audit.tasks.seal_audit_chain", ignore_result=True)
def seal_audit_chain() -> int:
    from audit.chain import audit_chain_seal

    return audit_chain_seal().sealed


@shared_task(name="audit.tasks.verify_audit_chain", ignore_result=True)
def verify_audit_chain() -> bool:
    """Verify the whole chain (the seal task keeps it current); the outcome is what /metrics exports."""
    import logging

    from audit.chain import audit_chain_check

    report = audit_chain_check()
    if not report.ok:
        logging.getLogger(__name__).error("audit chain BROKEN: %s", report.problem)
    return report.ok
