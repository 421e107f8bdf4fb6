"""Every environment's settings: ``base``, then the topic modules, settings of one capability
each, kept apart so they read (and change) alone. A topic module takes what it needs from ``base``
(never the other way) and may extend a value of it (``CELERY_BEAT_SCHEDULE``, ``ALLOWED_HOSTS``):
the order below is the order they apply in."""

# isort: off
from bankcore.settings.base import *  # noqa: F403
from bankcore.settings.api import *  # noqa: F403
from bankcore.settings.backoffice import *  # noqa: F403
from bankcore.settings.observability import *  # noqa: F403
