"""Idempotency keys, as every door's requests carry them: the same key with the same request
answers what the first one did; with a different request, ``IdempotencyKeyReused``. Shared by
opening accounts (``accounts.services``) and moving money (``transfers.services``)."""

from __future__ import annotations

from bankcore.errors import Conflict, ValidationFailed

IDEMPOTENCY_KEY_MAX_LENGTH = 255


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"
    title = "Idempotency key reused with a different request"


class InvalidIdempotencyKey(ValidationFailed):
    code = "invalid_idempotency_key"
    title = "Invalid idempotency key"


def idempotency_key_clean(key: object) -> str | None:
    """An idempotency key as every door's requests carry it: None, or 1 to 255 printable ASCII."""
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise InvalidIdempotencyKey(f"An idempotency key is 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters.")
    if not key.isascii() or not key.isprintable():
        raise InvalidIdempotencyKey("An idempotency key is printable ASCII.")
    return key
