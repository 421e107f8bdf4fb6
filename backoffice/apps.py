from django.apps import AppConfig


class BackofficeConfig(AppConfig):
    """The back office's shared pages, forms and template tags (no models)."""

    name = "backoffice"
