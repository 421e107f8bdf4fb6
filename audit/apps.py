from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # django-auditlog records field-level changes of the registered models (who, from where);
        # our own AuditEvent records every money movement and state change by name. Each app
        # registers its own models (AccountsConfig, TransfersConfig); here, the users and groups.
        from auditlog.registry import auditlog
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group

        from audit import signals  # noqa: F401  (connects the sign-in receivers)

        # Roles are groups (audit.roles): who put a user in "supervisor", or gave a group or a user
        # a permission, is a change of who may move money, logged like any field change.
        auditlog.register(
            get_user_model(),
            exclude_fields=["password", "last_login"],
            m2m_fields={"groups", "user_permissions"},
        )
        auditlog.register(Group, m2m_fields={"permissions"})
