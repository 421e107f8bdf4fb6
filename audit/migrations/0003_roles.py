"""The back office's roles (teller, supervisor, auditor) as groups; see ``audit.roles``."""

from django.db import migrations


def create_roles(apps, schema_editor):
    from audit.roles import roles_sync

    roles_sync(apps=apps, using=schema_editor.connection.alias)


def remove_roles(apps, schema_editor):
    from audit.roles import ROLES

    Group = apps.get_model("auth", "Group")
    Group.objects.using(schema_editor.connection.alias).filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0002_audit_chain"),
        ("accounts", "0003_account_permissions"),
        ("transfers", "0002_approval"),
        ("auditlog", "0017_add_actor_email"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(create_roles, remove_roles),
    ]
