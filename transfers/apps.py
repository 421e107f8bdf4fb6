from django.apps import AppConfig


class TransfersConfig(AppConfig):
    name = "transfers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Field-level changes in django-auditlog's log (audit.apps says why).
        from auditlog.registry import auditlog

        from bankcore.health import health_fact_add
        from bankcore.metrics import state_part_add
        from transfers.metrics import reconciliation_last_run, transfers_in_flight, transfers_stuck_count
        from transfers.models import Approval, Transfer

        auditlog.register(Transfer, exclude_fields=["request_hash"])
        auditlog.register(Approval)
        state_part_add(transfers_in_flight)
        state_part_add(reconciliation_last_run)
        health_fact_add("transfers_stuck", transfers_stuck_count)
