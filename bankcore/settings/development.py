"""`make run`: the embedded default, debug on, no server to install."""

from bankcore.settings.base import *  # noqa: F403

DEBUG = True
