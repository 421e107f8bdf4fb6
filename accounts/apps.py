from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Field-level changes in django-auditlog's log (audit.apps says why).
        from auditlog.registry import auditlog

        from accounts.models import Account

        auditlog.register(Account)
