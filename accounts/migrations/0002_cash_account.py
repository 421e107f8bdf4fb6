"""Every ledger starts with its internal cash/settlement account in the default currency."""

from django.conf import settings
from django.db import migrations


def create_cash_account(apps, schema_editor):
    from accounts.numbers import account_number_make

    alias = schema_editor.connection.alias
    Account = apps.get_model("accounts", "Account")
    key = f"cash:{settings.DEFAULT_CURRENCY}"
    if Account.objects.using(alias).filter(system_key=key).exists():
        return
    account = Account.objects.using(alias).create(
        holder=f"Cash and settlement {settings.DEFAULT_CURRENCY} (ledger {settings.LEDGERS[alias]})",
        kind="internal",
        system_key=key,
        currency=settings.DEFAULT_CURRENCY,
        allow_overdraft=True,
    )
    account.number = account_number_make(ledger_code=settings.LEDGERS[alias], serial=account.pk)
    account.save(using=alias, update_fields=["number"])


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [
        migrations.RunPython(create_cash_account, migrations.RunPython.noop, hints={"target": "ledger"}),
    ]
