"""Send each table where it belongs.

Ledger tables (accounts, entries, the recovery table of transfer legs) exist in every ledger alias
and nowhere else; control-plane tables (auth, sessions, admin log, transfers, audit, the beat
schedule) live in ``default``. Ledger models have no single home, so code must always say which
ledger with ``.using(alias)``; the router refuses to guess.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings


def is_ledger_alias(alias: str) -> bool:
    return alias in settings.LEDGERS


def is_ledger_model(app_label: str, model_name: str | None) -> bool:
    return f"{app_label}.{(model_name or '').lower()}" in settings.LEDGER_MODELS


class LedgerRouter:
    def _route(self, model: Any, hints: dict[str, Any]) -> str | None:
        if is_ledger_model(model._meta.app_label, model._meta.model_name):
            instance = hints.get("instance")
            if instance is not None and instance._state.db:
                return instance._state.db
            return None  # no default ledger: the caller must use .using(alias)
        return "default"

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return self._route(model, hints)

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return self._route(model, hints)

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        return obj1._state.db == obj2._state.db

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool:
        if model_name is None:
            # RunPython/RunSQL operations say where they belong with hints={"target": "ledger"}.
            target = hints.get("target")
            if target == "ledger":
                return is_ledger_alias(db)
            return db == "default"
        if is_ledger_model(app_label, model_name):
            return is_ledger_alias(db)
        return db == "default"
