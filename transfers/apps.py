from django.apps import AppConfig


class TransfersConfig(AppConfig):
    name = "transfers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from bankcore.health import health_fact_add
        from bankcore.metrics import state_part_add
        from transfers.metrics import reconciliation_last_run, transfers_in_flight, transfers_stuck_count

        state_part_add(transfers_in_flight)
        state_part_add(reconciliation_last_run)
        health_fact_add("transfers_stuck", transfers_stuck_count)
