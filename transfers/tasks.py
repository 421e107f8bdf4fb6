"""Celery beat tasks: thin doors onto recovery and reconciliation."""

from __future__ import annotations

from celery import shared_task

from bankcore.actors import Actor, Channel


@shared_task(name="transfers.tasks.recover_transfers", ignore_result=True)
def recover_transfers() -> dict[str, int]:
    from transfers.recovery import transfers_recover

    report = transfers_recover(actor=Actor.system(Channel.TASK, "celery-recovery"))
    return dict(report.actions)


@shared_task(name="transfers.tasks.reconcile_ledgers", ignore_result=True)
def reconcile_ledgers() -> bool:
    from transfers.reconciliation import reconciliation_run

    return reconciliation_run(actor=Actor.system(Channel.TASK, "celery-reconcile")).ok
