"""The deployment files as their tools read them: Compose's interpolation of a compose file's
variables, and the gunicorn configuration as gunicorn loads it."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

from django.conf import settings

# ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``, ``${NAME:?error}``, ``${NAME?error}``,
# ``${NAME:+other}``, ``${NAME+other}``, ``$NAME`` and ``$$``: Compose's interpolation.
_INTERPOLATION = re.compile(
    r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


def interpolated(text: str, environment: dict[str, str]) -> str:
    """``text`` with its variables replaced as ``docker compose`` does; a required one unset raises."""

    def value(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group(1) or match.group(4), match.group(2), match.group(3) or ""
        given = environment.get(name)
        if operator in (":?", "?"):
            if given is None or (operator == ":?" and not given):
                raise ValueError(f"{name} is required: {argument}")
            return given
        if operator in (":-", "-"):
            unset = given is None or (operator == ":-" and not given)
            return interpolated(argument, environment) if unset else str(given)
        if operator in (":+", "+"):
            set_ = given is not None and (operator == "+" or bool(given))
            return interpolated(argument, environment) if set_ else ""
        return given or ""

    return _INTERPOLATION.sub(value, text)


def gunicorn_config() -> dict[str, Any]:
    """The names deploy/gunicorn.conf.py defines, read under the current environment."""
    return runpy.run_path(str(Path(settings.BASE_DIR) / "deploy" / "gunicorn.conf.py"))
