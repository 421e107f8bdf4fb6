"""Strict readers for settings that come from the environment.

Every reader accepts ``NAME`` or, for secrets mounted as files (Docker/Kubernetes secrets),
``NAME_FILE`` pointing at a file whose content is the value. A malformed value stops start-up with
``ImproperlyConfigured`` naming the variable: a bank would rather not start than run with a limit
it misread.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


def _raw(name: str) -> str | None:
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_name!r} cannot be read: {exc}") from exc
    return os.environ.get(name)


def env_str(name: str, default: str | None = None) -> str:
    """``name``'s value, or ``default`` when it is unset or empty; without a default it must be set."""
    value = _raw(name)
    if value is None or value == "":
        if default is None:
            raise ImproperlyConfigured(f"{name} must be set")
        return default
    return value


def env_optional(name: str) -> str | None:
    value = _raw(name)
    return value if value else None


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum {minimum}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number} is above the maximum {maximum}")
    return number


def env_decimal(name: str, default: str, *, places: int = 2) -> Decimal:
    """A positive money amount with at most ``places`` decimal places."""
    value = _raw(name)
    text = default if value is None or value == "" else value.strip()
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name}={text!r} is not a decimal amount") from None
    if not amount.is_finite() or amount <= 0:
        raise ImproperlyConfigured(f"{name}={text!r} must be a positive amount")
    exponent = amount.as_tuple().exponent  # an int: the amount is finite
    if isinstance(exponent, int) and exponent < -places:
        raise ImproperlyConfigured(f"{name}={text!r} has more than {places} decimal places")
    return amount.quantize(Decimal(1).scaleb(-places))


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true/false)")


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None or value == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_networks(name: str, default: list[str]) -> list[str]:
    """Comma-separated IP addresses or networks ("10.0.0.1", "172.20.0.0/16", "::1"), as networks."""
    try:
        return [str(ipaddress.ip_network(item, strict=False)) for item in env_list(name, default)]
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc} (IP addresses or networks, comma-separated)") from None


def env_names_set(pattern: str) -> list[str]:
    """The variables set to a non-empty value, as ``NAME`` or ``NAME_FILE``, whose ``NAME``
    matches the regular expression ``pattern`` in full; sorted, as they are spelled in the
    environment. For families of names read in a loop (``DB1_…``, ``DB2_…``): one the loop never
    reaches is refused instead of silently ignored."""
    regex = re.compile(pattern)
    return sorted(
        key
        for key, value in os.environ.items()
        if value and (regex.fullmatch(key) or (key.endswith("_FILE") and regex.fullmatch(key.removesuffix("_FILE"))))
    )


@dataclass(frozen=True)
class MySQLServer:
    host: str
    port: int
    name: str
    user: str
    password: str


def mysql_server(prefix: str, *, default_name: str, fallback: MySQLServer | None = None) -> MySQLServer:
    """Read ``{prefix}_HOST/PORT/NAME/USER/PASSWORD``; unset parts come from ``fallback``."""
    host = env_optional(f"{prefix}_HOST") or (fallback.host if fallback else None)
    if not host:
        raise ImproperlyConfigured(f"{prefix}_HOST must be set")
    return MySQLServer(
        host=host,
        port=env_int(f"{prefix}_PORT", fallback.port if fallback else 3306, minimum=1, maximum=65535),
        name=env_str(f"{prefix}_NAME", default_name),
        user=env_str(f"{prefix}_USER", fallback.user if fallback else "bank_user"),
        password=env_str(f"{prefix}_PASSWORD", fallback.password if fallback else ""),
    )


# --- TLS to the databases and Redis --------------------------------------------------------------

MYSQL_SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")


def _readable_file(name: str, path: str) -> str:
    if not Path(path).is_file():
        raise ImproperlyConfigured(f"{name}={path!r} is not a readable file")
    return path


def mysql_tls_options(prefix: str) -> dict[str, object]:
    """mysqlclient connection options for TLS to the server ``{prefix}_…`` (``DB1``, ``DB_DEFAULT``):
    ``{prefix}_SSL_MODE``, ``_SSL_CA``, ``_SSL_CERT``, ``_SSL_KEY``, each defaulting to the same
    name with the ``DB_`` prefix (``DB_SSL_MODE`` …), which applies to every server. Unset: no TLS
    options (the client library's default). A CA without a mode means VERIFY_IDENTITY; a mode
    that verifies needs a CA."""

    def value(suffix: str) -> str | None:
        return env_optional(f"{prefix}_{suffix}") or env_optional(f"DB_{suffix}")

    mode, ca, cert, key = value("SSL_MODE"), value("SSL_CA"), value("SSL_CERT"), value("SSL_KEY")
    if mode is None and ca is None and cert is None and key is None:
        return {}
    mode = (mode or ("VERIFY_IDENTITY" if ca else "REQUIRED")).upper().replace("-", "_")
    if mode not in MYSQL_SSL_MODES:
        raise ImproperlyConfigured(
            f"{prefix}_SSL_MODE / DB_SSL_MODE={mode!r} is not one of {', '.join(MYSQL_SSL_MODES)}"
        )
    if mode in ("VERIFY_CA", "VERIFY_IDENTITY") and not ca:
        raise ImproperlyConfigured(f"SSL mode {mode} for {prefix} needs DB_SSL_CA (or {prefix}_SSL_CA)")
    if bool(cert) != bool(key):
        raise ImproperlyConfigured(f"DB_SSL_CERT and DB_SSL_KEY (client certificate) for {prefix} go together")
    options: dict[str, object] = {"ssl_mode": mode}
    if mode != "DISABLED":
        ssl: dict[str, str] = {}
        if ca:
            ssl["ca"] = _readable_file("DB_SSL_CA", ca)
        if cert and key:
            ssl["cert"], ssl["key"] = _readable_file("DB_SSL_CERT", cert), _readable_file("DB_SSL_KEY", key)
        if ssl:
            options["ssl"] = ssl
    return options


def redis_tls_options() -> dict[str, object] | None:
    """redis-py (and Celery's broker) keyword arguments for TLS to Redis, from ``REDIS_TLS``
    (true/false), ``REDIS_TLS_CA`` (the CA that signed Redis' certificate; the certificate is always
    verified) and an optional client certificate ``REDIS_TLS_CERT`` / ``REDIS_TLS_KEY`` (for
    ``tls-auth-clients yes``). None when REDIS_TLS is off."""
    import ssl

    if not env_bool("REDIS_TLS", False):
        for name in ("REDIS_TLS_CA", "REDIS_TLS_CERT", "REDIS_TLS_KEY"):
            if env_optional(name):
                raise ImproperlyConfigured(f"{name} is set but REDIS_TLS is not true")
        return None
    ca = env_optional("REDIS_TLS_CA")
    if not ca:
        raise ImproperlyConfigured("REDIS_TLS=true needs REDIS_TLS_CA, the CA that signed Redis' certificate")
    cert, key = env_optional("REDIS_TLS_CERT"), env_optional("REDIS_TLS_KEY")
    if bool(cert) != bool(key):
        raise ImproperlyConfigured("REDIS_TLS_CERT and REDIS_TLS_KEY (client certificate) go together")
    options: dict[str, object] = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": _readable_file("REDIS_TLS_CA", ca),
    }
    if cert and key:
        options["ssl_certfile"] = _readable_file("REDIS_TLS_CERT", cert)
        options["ssl_keyfile"] = _readable_file("REDIS_TLS_KEY", key)
    return options
