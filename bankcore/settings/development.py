"""`make run`: the embedded default, debug on (unless DEBUG says otherwise), no server to install."""

from bankcore.env import env_bool
from bankcore.settings.common import *  # noqa: F403

DEBUG = env_bool("DEBUG", True)
