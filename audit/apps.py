from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # django-auditlog records field-level changes of the registered models (who, from where);
        # our own AuditEvent records every money movement and state change by name.
        from auditlog.registry import auditlog
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group

        from accounts.models import Account
        from audit import signals  # noqa: F401  (connects the sign-in receivers)
        from transfers.models import Approval, Transfer

        auditlog.register(Account)
        auditlog.register(Transfer, exclude_fields=["request_hash"])
        auditlog.register(Approval)
        # Roles are groups (audit.roles): who put a user in "supervisor", or gave a group or a user
        # a permission, is a change of who may move money, logged like any field change.
        auditlog.register(
            get_user_model(),
            exclude_fields=["password", "last_login"],
            m2m_fields={"groups", "user_permissions"},
        )
        auditlog.register(Group, m2m_fields={"permissions"})
